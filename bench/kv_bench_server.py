#!/usr/bin/python3
"""A lean Key Vault server for bench/many-files --python: only what a batch
signing run needs. bench/kv_bench_server.c serves the same routes and is
many-files' default: this one answers a "30 ms" call after 31-31.7 ms on
the two-core build machine (asyncio waits in whole milliseconds and shares
the cores with the client), the C one after 30.2-30.4 ms. Its
tls_context() also makes the C server's TLS certificate.

tests/servers/azure_emu.py is the faithful emulator (RBAC, JWT checks,
throttling, every error); it runs on threads and serves about 120 sign
requests per second, so it cannot show whether hsmsign reaches ~1,000
requests per second. This server runs on one asyncio loop with TLS and
HTTP/1.1 keep-alive, signs with an EC P-256 key (tests/fixtures/pki
leaf-ec256, so its CPU cost is small) and injects latency with
asyncio.sleep, so that requests in flight cost nothing while they wait.

It serves, on 127.0.0.1 only:
  POST /{tenant}/oauth2/v2.0/token          a bearer token (any client secret)
  GET  /certificates/{name}[/{version}]     401 challenge without the token,
                                            else {"kid", "cer"}
  POST /keys/{name}/{version}/sign          ES256 over the posted digest,
                                            after the configured latency
  GET  /_bench/stats, POST /_bench/reset, POST /_bench/config?latency_ms=N
                                            counters (sign calls, certificate
                                            GETs, connections, peak in flight,
                                            seconds from each sign request read
                                            to its answer written)

With --behind URL it speaks plain HTTP for a TLS front end whose public
URL is URL (many-files --h2 --python runs nginx). Prints one JSON line
{"https", "http", "tls_ca", "tenant", "client_secret_file"} when ready;
exits when stdin closes. Python standard library + Debian python3-cryptography; run
with /usr/bin/python3. Benchmark only: no authorisation checks.
"""
import argparse
import asyncio
import base64
import datetime
import ipaddress
import json
import os
import secrets
import ssl
import sys
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKI = os.path.join(TOP, "tests", "fixtures", "pki")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RESOURCE = "https://vault.azure.net"
MAX_HEAD = 16384
MAX_BODY = 65536


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tls_context(state_dir):
    """A throwaway CA-less server certificate for 127.0.0.1 (also the
    client's trust anchor, SSL_CERT_FILE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(state_dir, "tls.pem")
    key_path = os.path.join(state_dir, "tls.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_path


class Server:
    def __init__(self, base_url):
        self.base = base_url
        with open(os.path.join(PKI, "leaf-ec256.key"), "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)
        with open(os.path.join(PKI, "leaf-ec256.pem"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.cer = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.token = secrets.token_urlsafe(32)
        self.latency = 0.0
        self.reset()

    def reset(self):
        self.stats = {"sign": 0, "cert_get": 0, "cert_get_unauth": 0, "token": 0,
                      "connections": 0, "requests": 0, "in_flight": 0,
                      "peak_in_flight": 0, "other": 0, "sign_seconds": 0.0}

    def route(self, method, path, query, headers, body):
        """(status, extra headers, JSON body or None) for one request;
        awaiting latency happens in the caller."""
        seg = [s for s in path.split("/") if s]
        bearer = headers.get("authorization") == "Bearer " + self.token
        if method == "POST" and len(seg) == 4 and seg[1:] == ["oauth2", "v2.0", "token"]:
            self.stats["token"] += 1
            return 200, {}, {"token_type": "Bearer", "expires_in": 3600,
                             "ext_expires_in": 3600, "access_token": self.token}
        if seg[:1] == ["_bench"]:
            return self.control(method, seg[1:], query)
        if not bearer and seg[:1] in (["certificates"], ["keys"]):
            if seg[:1] == ["certificates"]:
                self.stats["cert_get_unauth"] += 1
            challenge = 'Bearer authorization="%s/%s", resource="%s"' % (
                self.base, TENANT, RESOURCE)
            return 401, {"WWW-Authenticate": challenge}, {
                "error": {"code": "Unauthorized", "message": "AKV10000: token required"}}
        if method == "GET" and len(seg) in (2, 3) and seg[0] == "certificates":
            self.stats["cert_get"] += 1
            name = seg[1]
            return 200, {}, {"id": "%s/certificates/%s/v1" % (self.base, name),
                             "kid": "%s/keys/%s/v1" % (self.base, name), "cer": self.cer}
        if method == "POST" and len(seg) == 4 and seg[0] == "keys" and seg[3] == "sign":
            return self.sign(seg, body)
        self.stats["other"] += 1
        return 404, {}, {"error": {"code": "NotFound", "message": "no such route"}}

    def control(self, method, seg, query):
        if seg == ["stats"]:
            return 200, {}, dict(self.stats)
        if method == "POST" and seg == ["reset"]:
            self.reset()
            return 200, {}, {}
        if method == "POST" and seg == ["config"]:
            self.latency = float(query.get("latency_ms", ["0"])[0]) / 1000.0
            return 200, {}, {}
        return 404, {}, {}

    def sign(self, seg, body):
        try:
            req = json.loads(body)
            digest = b64url_decode(req["value"])
        except (ValueError, KeyError, TypeError):
            return 400, {}, {"error": {"code": "BadParameter", "message": "bad body"}}
        if req.get("alg") != "ES256" or len(digest) != 32:
            return 400, {}, {"error": {"code": "BadParameter",
                                       "message": "this server signs ES256 only"}}
        self.stats["sign"] += 1
        der = self.key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r, s = utils.decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return 200, {}, {"kid": "%s/keys/%s/v1" % (self.base, seg[1]), "value": b64url(sig)}

    async def handle(self, reader, writer):
        self.stats["connections"] += 1
        try:
            while await self.one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()

    async def one_request(self, reader, writer):
        """Serves one request; False when the connection should close."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        if length < 0 or length > MAX_BODY:
            return False
        body = await reader.readexactly(length) if length else b""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        url = urllib.parse.urlsplit(target)
        self.stats["requests"] += 1
        self.stats["in_flight"] += 1
        self.stats["peak_in_flight"] = max(self.stats["peak_in_flight"],
                                           self.stats["in_flight"])
        try:
            status, extra, obj = self.route(method, url.path,
                                            urllib.parse.parse_qs(url.query), headers, body)
            if self.latency and not url.path.startswith("/_bench"):
                await asyncio.sleep(self.latency)
        finally:
            self.stats["in_flight"] -= 1
        data = json.dumps(obj).encode() if obj is not None else b""
        close = headers.get("connection", "").lower() == "close"
        out = ["HTTP/1.1 %d %s" % (status, "OK" if status == 200 else "Error"),
               "Content-Type: application/json; charset=utf-8",
               "Content-Length: %d" % len(data),
               "Connection: %s" % ("close" if close else "keep-alive")]
        out += ["%s: %s" % kv for kv in extra.items()]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + data)
        await writer.drain()
        if url.path.endswith("/sign"):
            self.stats["sign_seconds"] += loop.time() - arrived
        return not close


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--behind", metavar="URL",
                    help="serve plain HTTP for a TLS front end (bench/many-files "
                    "--h2 runs nginx) whose public URL is URL")
    args = ap.parse_args()
    os.makedirs(args.state_dir, exist_ok=True)
    ctx, ca = tls_context(args.state_dir)
    loop = asyncio.get_running_loop()
    holder = {}
    srv = await asyncio.start_server(lambda r, w: holder["s"].handle(r, w),
                                     "127.0.0.1", 0, ssl=None if args.behind else ctx,
                                     backlog=512)
    port = srv.sockets[0].getsockname()[1]
    base = args.behind or "https://127.0.0.1:%d" % port
    holder["s"] = Server(base)
    holder["s"].latency = args.latency_ms / 1000.0
    with open(os.path.join(args.state_dir, "client-secret.txt"), "w") as f:
        f.write("bench-secret\n")
    print(json.dumps({"https": base, "tls_ca": ca, "tenant": TENANT,
                      "http": "http://127.0.0.1:%d" % port,
                      "tls_key": os.path.join(args.state_dir, "tls.key"),
                      "client_secret_file": os.path.join(args.state_dir,
                                                         "client-secret.txt")}),
          flush=True)
    stdin_closed = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or (
        not os.read(sys.stdin.fileno(), 4096) and stdin_closed.set_result(None)))
    async with srv:
        await stdin_closed


if __name__ == "__main__":
    asyncio.run(main())
