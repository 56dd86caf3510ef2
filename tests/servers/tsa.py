#!/usr/bin/python3
"""Local time-stamping authority: RFC 3161 and legacy Authenticode
(authenticode.md section 3), with fault modes chosen by the URL path.

Contract: tests/servers/README.md ("tsa.py"). Python standard library +
Debian's python3-cryptography only; binds 127.0.0.1 only. The TSTInfo, the
CMS SignedData around it and the legacy PKCS#7 reply are encoded here with a
small DER encoder, so that a test can ask for any genTime (`?time=`): a real
TSA cannot be backdated, and "signed while the certificate was valid" can
only be simulated this way.

Run with /usr/bin/python3.
"""
import argparse
import base64
import datetime
import hashlib
import http.server
import json
import os
import socketserver
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import emu_base

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
OID_RSA = "1.2.840.113549.1.1.1"
OID_SPC_TIME_STAMP_REQUEST = "1.3.6.1.4.1.311.3.2.1"
OID_POLICY = "1.3.6.1.4.1.55555.1.1"  # private arc, test policy
DIGESTS = {  # OID -> (hashlib name, cryptography hash)
    "1.3.14.3.2.26": ("sha1", hashes.SHA1),
    "2.16.840.1.101.3.4.2.1": ("sha256", hashes.SHA256),
    "2.16.840.1.101.3.4.2.2": ("sha384", hashes.SHA384),
    "2.16.840.1.101.3.4.2.3": ("sha512", hashes.SHA512),
}
OID_SHA256 = "2.16.840.1.101.3.4.2.1"

MODES = ("ok", "404", "429", "500", "502", "503", "bad-imprint", "bad-nonce",
         "bad-signature", "bad-status", "garbage", "slow", "legacy-only",
         "rfc3161-only", "flaky", "no-certs")
MODE_HELP = {
    "ok": "answers RFC 3161 and legacy requests",
    "404/429/500/502/503": "that HTTP status (429 and 503 with Retry-After: 0)",
    "bad-imprint": "token over a different imprint",
    "bad-nonce": "token with the request's nonce + 1",
    "bad-signature": "token whose signature value has one bit flipped",
    "bad-status": "PKIStatus rejection (2) with no token",
    "garbage": "200 with a body that is not DER",
    "slow": "waits ?delay= seconds (default 5) before answering",
    "legacy-only": "refuses RFC 3161 requests with 400",
    "rfc3161-only": "refuses legacy requests with 400",
    "flaky": "the first ?fail= requests (default 2) to this path get 503",
    "no-certs": "token without certificates even when certReq is set",
}


# ------------------------------------------------------------------ DER
def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, content):
    return bytes([tag]) + der_len(len(content)) + content


def seq(*items):
    return tlv(0x30, b"".join(items))


def set_of(*items):
    return tlv(0x31, b"".join(sorted(items)))  # DER: SET OF sorted


def integer(v):
    return tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True))


def octets(b):
    return tlv(0x04, b)


def oid(dotted):
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray()
    for v in [parts[0] * 40 + parts[1]] + parts[2:]:
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def explicit(n, content):
    return tlv(0xA0 + n, content)


def gen_time(dt):
    return tlv(0x18, dt.strftime("%Y%m%d%H%M%SZ").encode())


def utc_time(dt):
    return tlv(0x17, dt.strftime("%y%m%d%H%M%SZ").encode())


def parse(buf, off=0):
    """(tag, contents, next offset) of the TLV at buf[off]; ValueError if
    it does not fit."""
    if off + 2 > len(buf):
        raise ValueError("truncated TLV")
    tag, first = buf[off], buf[off + 1]
    off += 2
    if first < 0x80:
        n = first
    else:
        k = first & 0x7F
        if k == 0 or k > 4 or off + k > len(buf):
            raise ValueError("bad length")
        n = int.from_bytes(buf[off:off + k], "big")
        off += k
    if off + n > len(buf):
        raise ValueError("truncated contents")
    return tag, buf[off:off + n], off + n


def children(buf):
    out, off = [], 0
    while off < len(buf):
        start = off
        tag, content, off = parse(buf, off)
        out.append((tag, content, buf[start:off]))
    return out


def oid_text(content):
    vals, v = [], 0
    for b in content:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            vals.append(v)
            v = 0
    first = vals[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(x) for x in head + vals[1:])


# ---------------------------------------------------------------- PKI
def write_file(path, data, mode=0o644):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.chmod(path, mode)


def make_pki(state_dir):
    """A TSA root and a TSA certificate with a critical timeStamping EKU
    (RFC 3161 2.3), valid 2019..2099 so that backdated tokens chain too."""
    start = datetime.datetime(2019, 1, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                             "hsmsign test TSA"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    root_name = name("hsmsign Test TSA Root")
    root = (x509.CertificateBuilder().subject_name(root_name)
            .issuer_name(root_name).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False,
                                         True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    tsa = (x509.CertificateBuilder().subject_name(name("hsmsign Test TSA"))
           .issuer_name(root_name).public_key(tsa_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(start).not_valid_after(end)
           .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                          critical=True)
           .add_extension(x509.KeyUsage(True, False, False, False, False,
                                        False, False, False, False),
                          critical=True)
           .add_extension(x509.ExtendedKeyUsage(
               [ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
               root_key.public_key()), critical=False)
           .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    os.makedirs(state_dir, exist_ok=True)
    write_file(os.path.join(state_dir, "tsa-root.pem"), root.public_bytes(pem))
    write_file(os.path.join(state_dir, "tsa.pem"), tsa.public_bytes(pem))
    return tsa_key, tsa, root


# ------------------------------------------------------------- tokens
class Tsa:
    def __init__(self, state_dir):
        self.dir = state_dir
        self.key, self.cert, self.root = make_pki(state_dir)
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.root_der = self.root.public_bytes(serialization.Encoding.DER)
        self.serial = int(time.time()) << 16
        self.lock = threading.Lock()
        self.log_path = os.path.join(state_dir, "requests.jsonl")
        self.log = []
        self.hits = {}
        self.knobs = {}  # {"fault": plan}: see emu_base.py, set by POST /_fault

    def next_serial(self):
        with self.lock:
            self.serial += 1
            return self.serial

    def record(self, entry):
        with self.lock:
            self.log.append(entry)
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def hit(self, path):
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            return self.hits[path]

    def issuer_and_serial(self):
        issuer = self.cert.issuer.public_bytes()
        return seq(issuer, integer(self.cert.serial_number))

    def sign_attrs(self, attrs, flip=False):
        """(DER [0] IMPLICIT signed attributes, RSA signature over the SET)."""
        der_set = set_of(*attrs)
        sig = self.key.sign(der_set, padding.PKCS1v15(), hashes.SHA256())
        if flip:
            sig = sig[:-1] + bytes([sig[-1] ^ 1])
        return b"\xa0" + der_set[1:], sig

    def signer_info(self, version, attrs, flip=False):
        signed, sig = self.sign_attrs(attrs, flip)
        return seq(integer(version), self.issuer_and_serial(),
                   seq(oid(OID_SHA256), tlv(0x05, b"")), signed,
                   seq(oid(OID_RSA), tlv(0x05, b"")), octets(sig))

    def certs(self):
        return tlv(0xA0, b"".join(sorted([self.cert_der, self.root_der])))

    def rfc3161_token(self, req, mode, gen):
        """ContentInfo(SignedData(TSTInfo)) answering the parsed request."""
        imprint = req["imprint_der"]
        if mode == "bad-imprint":
            imprint = imprint[:-1] + bytes([imprint[-1] ^ 0xFF])
        fields = [integer(1), oid(OID_POLICY), imprint,
                  integer(self.next_serial()), gen_time(gen),
                  seq(integer(1))]  # accuracy: 1 second
        if req["nonce"] is not None:
            fields.append(integer(req["nonce"] + (mode == "bad-nonce")))
        tst = seq(*fields)
        ess = seq(seq(seq(octets(hashlib.sha256(self.cert_der).digest()))))
        attrs = [seq(oid(OID_CONTENT_TYPE), set_of(oid(OID_TST_INFO))),
                 seq(oid(OID_SIGNING_TIME), set_of(utc_time(gen))),
                 seq(oid(OID_MESSAGE_DIGEST),
                     set_of(octets(hashlib.sha256(tst).digest()))),
                 seq(oid(OID_SIGNING_CERT_V2), set_of(ess))]
        certs = self.certs() if req["cert_req"] and mode != "no-certs" \
            else b""
        sd = seq(integer(3), set_of(seq(oid(OID_SHA256), tlv(0x05, b""))),
                 seq(oid(OID_TST_INFO), explicit(0, octets(tst))), certs,
                 set_of(self.signer_info(1, attrs, mode == "bad-signature")))
        return seq(oid(OID_SIGNED_DATA), explicit(0, sd))

    def legacy_reply(self, content, mode, gen):
        """PKCS#7 SignedData over the outer signature value (section 3.2)."""
        attrs = [seq(oid(OID_CONTENT_TYPE), set_of(oid(OID_DATA))),
                 seq(oid(OID_SIGNING_TIME), set_of(utc_time(gen))),
                 seq(oid(OID_MESSAGE_DIGEST),
                     set_of(octets(hashlib.sha256(content).digest())))]
        sd = seq(integer(1), set_of(seq(oid(OID_SHA256), tlv(0x05, b""))),
                 seq(oid(OID_DATA), explicit(0, octets(content))),
                 self.certs(),
                 set_of(self.signer_info(1, attrs, mode == "bad-signature")))
        return seq(oid(OID_SIGNED_DATA), explicit(0, sd))


def parse_rfc3161_request(body):
    """The fields of a DER TimeStampReq we answer; ValueError if bad."""
    tag, content, end = parse(body)
    if tag != 0x30 or end != len(body):
        raise ValueError("not one DER SEQUENCE")
    items = children(content)
    if len(items) < 2 or items[0][0] != 0x02 or items[1][0] != 0x30:
        raise ValueError("bad TimeStampReq")
    alg, hashed = children(items[1][1])
    alg_oid = oid_text(children(alg[1])[0][1])
    if alg_oid not in DIGESTS or hashed[0] != 0x04:
        raise ValueError("unsupported imprint algorithm %s" % alg_oid)
    if len(hashed[1]) != hashlib.new(DIGESTS[alg_oid][0]).digest_size:
        raise ValueError("imprint has the wrong length")
    req = {"imprint_der": items[1][2], "alg": DIGESTS[alg_oid][0],
           "imprint": hashed[1].hex(), "nonce": None, "cert_req": False}
    for tag, value, _ in items[2:]:
        if tag == 0x02:
            req["nonce"] = int.from_bytes(value, "big", signed=True)
        elif tag == 0x01:
            req["cert_req"] = value != b"\x00"
    return req


def parse_legacy_request(body):
    """The signature value in a base64 legacy TimeStampRequest."""
    der = base64.b64decode(b"".join(body.split()), validate=True)
    tag, content, _ = parse(der)
    items = children(content)
    if tag != 0x30 or oid_text(items[0][1]) != OID_SPC_TIME_STAMP_REQUEST:
        raise ValueError("not an Authenticode TimeStampRequest")
    ci = children(items[-1][1])
    if oid_text(ci[0][1]) != OID_DATA:
        raise ValueError("TimeStampRequest content is not data")
    (tag, value, _), = children(ci[1][1])
    if tag != 0x04:
        raise ValueError("TimeStampRequest content is not an OCTET STRING")
    return value


def parse_time(text):
    dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


# --------------------------------------------------------------- HTTP
class Handler(emu_base.FaultMixin, http.server.BaseHTTPRequestHandler):
    tsa = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def fault_knobs(self):
        return self.tsa.lock, self.tsa.knobs

    def send(self, status, body=b"", ctype="text/plain", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_log":
            with self.tsa.lock:
                body = json.dumps(self.tsa.log).encode()
            return self.send(200, body, "application/json")
        self.send(404, b"not found\n")

    def do_POST(self):
        if self.path == "/_fault":
            n = int(self.headers.get("Content-Length") or 0)
            plan = json.loads(self.rfile.read(n) or b"null")
            with self.tsa.lock:
                self.tsa.knobs["fault"] = plan
            return self.send(200, b"{}", "application/json")
        url = urllib.parse.urlsplit(self.path)
        mode = url.path.strip("/") or "ok"
        query = dict(urllib.parse.parse_qsl(url.query))
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if 0 < n <= 1 << 20 else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        entry = {"path": url.path, "mode": mode, "content_type": ctype,
                 "length": len(body), "hit": self.tsa.hit(url.path)}
        status, reply, rtype, extra = self.answer(mode, query, body, ctype,
                                                  entry)
        entry["status"] = status
        self.tsa.record(entry)
        self.send(status, reply, rtype, extra)

    def answer(self, mode, query, body, ctype, entry):
        if mode not in MODES:
            return 404, b"unknown mode\n", "text/plain", None
        if mode in ("404", "429", "500", "502", "503"):
            extra = {"Retry-After": "0"} if mode in ("429", "503") else None
            return int(mode), b"fault mode\n", "text/plain", extra
        if mode == "flaky" and entry["hit"] <= int(query.get("fail", "2")):
            return 503, b"flaky\n", "text/plain", {"Retry-After": "0"}
        if mode == "slow":
            time.sleep(float(query.get("delay", "5")))
        gen = parse_time(query["time"]) if "time" in query else \
            datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        if ctype == "application/timestamp-query":
            entry["kind"] = "rfc3161"
            if mode == "legacy-only":
                return 400, b"legacy only\n", "text/plain", None
            return self.answer_rfc3161(mode, body, gen, entry)
        entry["kind"] = "legacy"
        if mode == "rfc3161-only":
            return 400, b"RFC 3161 only\n", "text/plain", None
        try:
            content = parse_legacy_request(body)
        except (ValueError, IndexError) as e:
            return 400, ("bad request: %s\n" % e).encode(), "text/plain", None
        entry["imprint"] = hashlib.sha256(content).hexdigest()
        if mode == "garbage":
            return 200, b"garbage", "application/octet-stream", None
        reply = self.tsa.legacy_reply(content, mode, gen)
        return 200, base64.b64encode(reply), "application/octet-stream", None

    def answer_rfc3161(self, mode, body, gen, entry):
        try:
            req = parse_rfc3161_request(body)
        except (ValueError, IndexError) as e:
            return 400, ("bad request: %s\n" % e).encode(), "text/plain", None
        entry.update(alg=req["alg"], imprint=req["imprint"],
                     nonce=req["nonce"], cert_req=req["cert_req"])
        if mode == "garbage":
            return 200, b"\x30\x03garbage", "application/timestamp-reply", None
        if mode == "bad-status":
            resp = seq(seq(integer(2), seq(tlv(0x0C, b"rejected by test"))))
        else:
            resp = seq(seq(integer(0)),
                       self.tsa.rfc3161_token(req, mode, gen))
        return 200, resp, "application/timestamp-reply", None


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--no-stdin-watch", action="store_true")
    args = ap.parse_args(argv)
    stop = emu_base.stop_event(watch=not args.no_stdin_watch)
    Handler.tsa = Tsa(args.state_dir)
    srv = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    port = srv.server_address[1]
    info = {"url": "http://127.0.0.1:%d" % port, "port": port,
            "root": os.path.join(args.state_dir, "tsa-root.pem"),
            "tsa_cert": os.path.join(args.state_dir, "tsa.pem"),
            "log": Handler.tsa.log_path, "state_dir": args.state_dir,
            "pid": os.getpid(), "modes": list(MODES)}
    write_file(os.path.join(args.state_dir, "ready.json"), json.dumps(info))
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
