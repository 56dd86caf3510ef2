"""`hsmsign serve` end to end: the real server on 127.0.0.1 (a free port),
real clients (`hsmsign sign -kvu`, raw HTTP from Python), independent
verifiers (osslsigncode, python3-cryptography).

Keys: a file key, an EC file key and a SoftHSM2 token key (built by
test_pkcs11.Token). Callers authenticate with static API tokens (OIDC is
tests/e2e/test_serve_auth.py). Checked: signing PE and MSI through the
server, the audit log (fields, one line per signature, never the token),
/healthz and /metrics, SIGHUP reload (a new key; a broken file keeps the
old configuration), bad configurations (one line, exit 87), wrong tokens
(401 with Key Vault's challenge, a clear client message), the Key Vault
error codes (404, 405, 413, 400, 429, 403), queueing (50 parallel requests
on a key with concurrency 1 all succeed), plain HTTP refused off loopback,
TLS with the client trusting a test CA, client certificates (mTLS), the
GitHub OIDC bearer credential of the client, privilege drop, and a clean
exit 0 on SIGTERM.
"""
import base64
import concurrent.futures
import datetime
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import hslib
from hslib import HSMSIGN, HsTestCase, free_port, hsmsign, pki, read

TOKEN = "hs-serve-test-token-6f1c2a"
OTHER_TOKEN = "hs-serve-other-token-91bd"


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def file_key(leaf="leaf-rsa2048", allow=None, **extra):
    spec = {"provider": "file", "key": pki(leaf + ".key"),
            "certificates": [pki(leaf + "-chain.pem")],
            "allow": allow if allow is not None else [{"api_token": "ci"}]}
    spec.update(extra)
    return spec


def base_config(port, keys, **extra):
    cfg = {"listen": "127.0.0.1:%d" % port,
           "api_tokens": [{"name": "ci", "sha256": sha256_hex(TOKEN)},
                          {"name": "other", "sha256": sha256_hex(OTHER_TOKEN)}],
           "keys": keys}
    cfg.update(extra)
    return cfg


class Server:
    """One `hsmsign serve` process; stop() checks it exits 0 on SIGTERM."""

    def __init__(self, test, cfg, args=("--allow-root",), env=None, name="serve.json"):
        self.test = test
        self.cfg_path = test.path(name)
        self.write_config(cfg)
        self.port = int(cfg["listen"].rsplit(":", 1)[1])
        self.scheme = "https" if "tls" in cfg else "http"
        self.url = "%s://127.0.0.1:%d" % (self.scheme, self.port)
        self.log_path = test.path(name + ".log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([HSMSIGN, "serve", "--config", self.cfg_path, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.time() + 20
        while time.time() < deadline:
            if "listening on" in self.log_text():
                return
            if self.proc.poll() is not None:
                raise AssertionError("hsmsign serve exited %d:\n%s" % (
                    self.proc.returncode, self.log_text()))
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError("hsmsign serve did not start:\n" + self.log_text())

    def write_config(self, cfg):
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("hsmsign serve did not stop on SIGTERM")
        self.log.close()
        return self.proc.returncode


class ServeTestCase(HsTestCase):
    def start(self, cfg, **kw):
        srv = Server(self, cfg, **kw)

        def stop():
            rc = srv.stop()
            self.assertEqual(rc, 0, "serve exit status on SIGTERM\n" + srv.log_text())
        self.addCleanup(stop)
        return srv

    def request(self, srv, method, path, body=None, token=TOKEN, headers=None, context=None):
        """(status, headers dict lower-cased, parsed JSON or text)."""
        if srv.scheme == "https":
            conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=60,
                                               context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        h = {"Content-Type": "application/json"}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, hdrs, parsed

    def client_sign(self, srv, name, path, token=TOKEN, extra=(), env=None):
        full_env = {"HS_SERVE_TOKEN": token}
        full_env.update(env or {})
        return hsmsign("sign", "-kvu", srv.url, "-kvc", name, "-kva", "env:HS_SERVE_TOKEN",
                       "-fd", "sha256", *extra, path, env=full_env)

    def assertVerifies(self, path):
        ok, out = hslib.osslsigncode_verify(path)
        self.assertTrue(ok, out)

    def audit(self, path):
        with open(path) as f:
            return [json.loads(line) for line in f]


class ServeFileKeyTest(ServeTestCase):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.audit_path = self.path("audit.jsonl")
        self.srv = self.start(base_config(self.port, {
            "codesign": file_key(),
            "ec": file_key("leaf-ec256"),
            "nobody": file_key(allow=[{"api_token": "other"}]),
            "norules": file_key(allow=[]),
        }, audit_log=self.audit_path))

    def test_sign_pe_and_msi_and_audit(self):
        pe = self.copy("hello64.exe")
        msi = self.copy("msi/small.msi")
        for f in (pe, msi):
            r = self.client_sign(self.srv, "codesign", f)
            self.assertRc(r, 0, "sign through hsmsign serve")
            self.assertVerifies(f)
        ec_pe = self.copy("hello64.exe", "ec.exe")
        self.assertRc(self.client_sign(self.srv, "ec", ec_pe), 0)
        self.assertVerifies(ec_pe)

        entries = self.audit(self.audit_path)
        signs = [e for e in entries if e["op"] == "sign"]
        self.assertEqual(len(signs), 3, entries)
        cert = x509.load_pem_x509_certificate(read(pki("leaf-rsa2048.pem")))
        version = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:32]
        for e in signs[:2]:
            self.assertEqual(e["key"], "codesign")
            self.assertEqual(e["version"], version)
            self.assertEqual(e["alg"], "RS256")
            self.assertRegex(e["digest"], "^[0-9a-f]{64}$")
            self.assertEqual(e["client"], {"kind": "api-token", "name": "ci",
                                           "claims": {"api_token": "ci"}})
            self.assertEqual(e["address"], "127.0.0.1")
            self.assertEqual(e["result"], "ok")
            self.assertIsInstance(e["duration_ms"], (int, float))
            when = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            self.assertLess(abs((datetime.datetime.utcnow() - when).total_seconds()), 120)
        self.assertEqual(signs[2]["alg"], "ES256")
        self.assertNotEqual(signs[0]["digest"], signs[1]["digest"])
        # The token is in neither the audit log nor the server's log.
        self.assertNotIn(TOKEN, read(self.audit_path).decode())
        self.assertNotIn(TOKEN, self.srv.log_text())

    def test_client_digests(self):
        # SHA-1 goes as RSNULL over a DigestInfo, the others as RS384/RS512.
        for digest in ("sha1", "sha384", "sha512"):
            f = self.copy("hello64.exe", digest + ".exe")
            r = hsmsign("sign", "-kvu", self.srv.url, "-kvc", "codesign", "-kva", "env:T",
                        "-fd", digest, f, env={"T": TOKEN})
            self.assertRc(r, 0, digest)
            self.assertVerifies(f)
        algs = [e["alg"] for e in self.audit(self.audit_path) if e["op"] == "sign"]
        self.assertEqual(algs, ["RSNULL", "RS384", "RS512"])

    def test_certificate_and_key_wire_format(self):
        st, _, cert = self.request(self.srv, "GET", "/certificates/codesign?api-version=7.4")
        self.assertEqual(st, 200, cert)
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in cert["x5c"]]
        leaf = x509.load_pem_x509_certificate(read(pki("leaf-rsa2048.pem")))
        inter = x509.load_pem_x509_certificate(read(pki("intermediate.pem")))
        self.assertEqual(chain, [leaf, inter])
        self.assertEqual(base64.b64decode(cert["cer"]),
                         leaf.public_bytes(serialization.Encoding.DER))
        der = leaf.public_bytes(serialization.Encoding.DER)
        version = hashlib.sha256(der).hexdigest()[:32]
        self.assertEqual(cert["kid"], "%s/keys/codesign/%s" % (self.srv.url, version))
        self.assertEqual(cert["id"], "%s/certificates/codesign/%s" % (self.srv.url, version))
        self.assertEqual(cert["x5t"], b64url(hashlib.sha1(der).digest()))
        self.assertEqual(cert["policy"]["key_props"]["kty"], "RSA")
        self.assertEqual(cert["policy"]["key_props"]["key_size"], 2048)
        # The Host header names the server in ids (works behind a proxy).
        st, _, c2 = self.request(self.srv, "GET", "/certificates/codesign/" + version,
                                 headers={"Host": "signer.example:8443"})
        self.assertEqual(st, 200, c2)
        self.assertEqual(c2["kid"], "http://signer.example:8443/keys/codesign/" + version)

        st, _, key = self.request(self.srv, "GET", "/keys/codesign/" + version)
        self.assertEqual(st, 200, key)
        pn = leaf.public_key().public_numbers()
        self.assertEqual(int.from_bytes(b64url_decode(key["key"]["n"]), "big"), pn.n)
        self.assertEqual(int.from_bytes(b64url_decode(key["key"]["e"]), "big"), pn.e)
        self.assertEqual(key["key"]["kty"], "RSA")
        self.assertEqual(key["key"]["key_ops"], ["sign", "verify"])
        st, _, key = self.request(self.srv, "GET", "/keys/ec/")
        self.assertEqual(st, 200, key)
        ec_pub = x509.load_pem_x509_certificate(read(pki("leaf-ec256.pem"))).public_key()
        self.assertEqual(key["key"]["crv"], "P-256")
        self.assertEqual(int.from_bytes(b64url_decode(key["key"]["x"]), "big"),
                         ec_pub.public_numbers().x)
        self.assertEqual(len(b64url_decode(key["key"]["y"])), 32)

    def test_raw_sign_verifies(self):
        st, _, cert = self.request(self.srv, "GET", "/certificates/ec")
        pub = x509.load_der_x509_certificate(base64.b64decode(cert["cer"])).public_key()
        digest = hashlib.sha256(b"hello").digest()
        st, _, ans = self.request(self.srv, "POST", urllib.parse.urlparse(cert["kid"]).path +
                                  "/sign?api-version=7.4", {"alg": "ES256", "value": b64url(digest)})
        self.assertEqual(st, 200, ans)
        raw = b64url_decode(ans["value"])
        self.assertEqual(len(raw), 64)
        sig = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                         int.from_bytes(raw[32:], "big"))
        pub.verify(sig, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        # RSNULL: a DigestInfo (how clients sign SHA-1), versionless path.
        st, _, cert = self.request(self.srv, "GET", "/certificates/codesign")
        rpub = x509.load_der_x509_certificate(base64.b64decode(cert["cer"])).public_key()
        sha1 = hashlib.sha1(b"hello").digest()
        dinfo = bytes.fromhex("3021300906052b0e03021a05000414") + sha1
        st, _, ans = self.request(self.srv, "POST", "/keys/codesign/sign",
                                  {"alg": "RSNULL", "value": b64url(dinfo)})
        self.assertEqual(st, 200, ans)
        rpub.verify(b64url_decode(ans["value"]), sha1, padding.PKCS1v15(),
                    utils.Prehashed(hashes.SHA1()))

    def test_errors_like_key_vault(self):
        _, _, cert = self.request(self.srv, "GET", "/certificates/codesign")
        sign_path = urllib.parse.urlparse(cert["kid"]).path + "/sign"
        d32 = b64url(b"\x01" * 32)
        cases = [
            ("GET", "/certificates/missing", None, 404, "CertificateNotFound"),
            ("GET", "/keys/missing", None, 404, "KeyNotFound"),
            ("GET", "/keys/codesign/0123456789abcdef0123456789abcdef", None, 404,
             "KeyNotFound"),
            ("POST", "/keys/missing/abc/sign", {"alg": "RS256", "value": d32}, 404,
             "KeyNotFound"),
            ("GET", sign_path, None, 405, "MethodNotAllowed"),
            ("DELETE", "/keys/codesign", None, 405, "MethodNotAllowed"),
            ("POST", sign_path, {"alg": "RS256", "value": b64url(b"\x01" * 20)}, 400,
             "BadParameter"),
            ("POST", sign_path, {"alg": "ES256", "value": d32}, 400, "BadParameter"),
            ("POST", sign_path, {"alg": "PS256", "value": d32}, 400, "BadParameter"),
            ("POST", sign_path, {"value": d32}, 400, "BadParameter"),
            ("POST", sign_path, b"{not json", 400, "BadParameter"),
            ("POST", sign_path, {"alg": "RS256", "value": "%%%"}, 400, "BadParameter"),
            ("POST", sign_path, {"alg": "RSNULL", "value": d32}, 400, "BadParameter"),
            ("POST", sign_path, b"x" * 70000, 413, "RequestTooLarge"),
            ("GET", "/nothing/here", None, 404, "NotFound"),
        ]
        for method, path, body, status, code in cases:
            st, _, ans = self.request(self.srv, method, path, body)
            self.assertEqual((st, ans["error"]["code"]), (status, code),
                             "%s %s: %s" % (method, path, ans))
        _, hdrs, ans = self.request(self.srv, "POST", sign_path, {"alg": "PS256", "value": d32})
        self.assertIn("PKCS#1 v1.5", ans["error"]["message"])
        _, hdrs, _ = self.request(self.srv, "GET", sign_path)
        self.assertEqual(hdrs["allow"], "POST")
        _, _, ans = self.request(self.srv, "POST", sign_path, {"alg": "RS256", "value":
                                                               b64url(b"\x01" * 20)})
        self.assertIn("expected 32", ans["error"]["message"])

    def test_declared_oversized_body_answered_before_reading(self):
        # Only the headers are sent: a server that waited for the body
        # would time out here.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"POST /keys/codesign/sign HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: 100000000\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer)

    def test_unauthenticated_401_challenge(self):
        st, hdrs, ans = self.request(self.srv, "GET", "/certificates/codesign", token=None)
        self.assertEqual(st, 401)
        self.assertEqual(ans["error"]["code"], "Unauthorized")
        self.assertEqual(hdrs["www-authenticate"],
                         'Bearer authorization="%s/hsmsign", resource="%s"' % (
                             self.srv.url, self.srv.url))
        st, hdrs, ans = self.request(self.srv, "GET", "/certificates/codesign",
                                     token="not-a-token")
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", hdrs)
        self.assertNotIn("not-a-token", json.dumps(ans))

        f = self.copy("hello64.exe")
        before = hslib.sha256_file(f)
        r = self.client_sign(self.srv, "codesign", f, token="wrong-token-value")
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode()
        self.assertIn("rejected the token", err)
        self.assertIn("not a known API token", err)
        self.assertNotIn("wrong-token-value", err)
        self.assertEqual(hslib.sha256_file(f), before)
        entries = self.audit(self.audit_path)
        self.assertEqual([e["result"] for e in entries], ["unauthenticated", "unauthenticated"])
        self.assertNotIn("wrong-token-value", read(self.audit_path).decode())
        _, _, metrics = self.request(self.srv, "GET", "/metrics", token=None)
        self.assertIn('hsmsign_auth_failures_total{reason="missing"} 1', metrics)
        self.assertIn('hsmsign_auth_failures_total{reason="unknown_token"} 2', metrics)

    def test_policy_denies_403(self):
        st, _, ans = self.request(self.srv, "GET", "/certificates/nobody")
        self.assertEqual(st, 403, ans)
        self.assertEqual(ans["error"]["code"], "Forbidden")
        self.assertIn("api_token", ans["error"]["message"])
        self.assertNotIn(TOKEN, ans["error"]["message"])
        st, _, ans = self.request(self.srv, "POST", "/keys/norules/sign",
                                  {"alg": "RS256", "value": b64url(b"\x02" * 32)})
        self.assertEqual(st, 403, ans)
        self.assertIn("deny by default", ans["error"]["message"])
        st, _, ans = self.request(self.srv, "GET", "/certificates/nobody", token=OTHER_TOKEN)
        self.assertEqual(st, 200, ans)
        results = [(e["key"], e["result"]) for e in self.audit(self.audit_path)]
        self.assertEqual(results, [("nobody", "denied"), ("norules", "denied"),
                                   ("nobody", "ok")])

    def test_healthz_and_metrics(self):
        st, _, body = self.request(self.srv, "GET", "/healthz", token=None)
        self.assertEqual((st, body), (200, "ok\n"))
        f = self.copy("hello64.exe")
        self.assertRc(self.client_sign(self.srv, "codesign", f), 0)
        st, hdrs, body = self.request(self.srv, "GET", "/metrics", token=None)
        self.assertEqual(st, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/plain; version=0.0.4"))
        self.assertIn('hsmsign_requests_total{route="sign",status="200"} 1', body)
        self.assertIn('hsmsign_requests_total{route="certificate",status="200"} 1', body)
        self.assertIn('hsmsign_sign_duration_seconds_count{key="codesign"} 1', body)
        self.assertIn('hsmsign_sign_duration_seconds_bucket{key="codesign",le="+Inf"} 1', body)
        self.assertIn('hsmsign_queue_depth{key="codesign"} 0', body)
        st, _, _ = self.request(self.srv, "POST", "/healthz", token=None)
        self.assertEqual(st, 405)


class ServeConfigTest(ServeTestCase):
    def check(self, cfg, name="bad.json"):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
        return hsmsign("serve", "--config", p, "--check")

    def test_bad_configs_one_line_exit_87(self):
        port = free_port()
        cases = [
            ("{", "line 1"),
            ({"keys": {"a": file_key()}}, "listen: missing"),
            (base_config(port, {"a": dict(file_key(), provider="hsm")}), "keys.a.provider"),
            (base_config(port, {"a": dict(file_key(), concurrency=0)}), "keys.a.concurrency"),
            (base_config(port, {"a": dict(file_key(), pin="1234")}), "keys.a.pin"),
            (base_config(port, {"a b": file_key()}), "keys.a b"),
            (base_config(port, {}), "keys:"),
            (base_config(port, {"a": file_key()}, limits={"max_request_bytes": "x"}),
             "limits.max_request_bytes"),
            (base_config(port, {"a": file_key()}, lsiten="x"), "lsiten: unknown setting"),
            (base_config(port, {"a": {"provider": "pkcs11", "uri": "pkcs11:token=x",
                                      "pin": "1234"}}), "never literally"),
            (dict(base_config(port, {"a": file_key()}), listen="0.0.0.0:%d" % port),
             "plain HTTP"),
            (dict(base_config(port, {"a": file_key()}), tls={"certificate": "x.pem"}),
             "tls.key"),
        ]
        for cfg, needle in cases:
            r = self.check(cfg)
            self.assertRc(r, 87, needle)
            self.assertOneErrorLine(r)
            self.assertIn(needle, r.stderr.decode())
            self.assertTrue(r.stderr.decode().startswith("hsmsign: serve: "))

    def test_key_that_cannot_be_opened_exit_2(self):
        r = self.check(base_config(free_port(), {"a": dict(file_key(), key="/nonexistent.key")}))
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn("keys.a:", r.stderr.decode())

    def test_check_lists_keys(self):
        r = self.check(base_config(free_port(), {"a": file_key()}), "good.json")
        self.assertRc(r, 0)
        self.assertIn("key a: version ", r.stdout.decode())
        self.assertIn("configuration OK", r.stdout.decode())

    def test_plain_http_off_loopback_refused_at_start(self):
        port = free_port()
        p = self.path("s.json")
        with open(p, "w") as f:
            json.dump(dict(base_config(port, {"a": file_key()}), listen="0.0.0.0:%d" % port), f)
        r = hsmsign("serve", "--config", p, "--allow-root", timeout=30)
        self.assertRc(r, 87)
        self.assertIn("plain HTTP", r.stderr.decode())

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_root_needs_user_or_allow_root(self):
        p = self.path("s.json")
        with open(p, "w") as f:
            json.dump(base_config(free_port(), {"a": file_key()}), f)
        r = hsmsign("serve", "--config", p, timeout=30)
        self.assertRc(r, 87)
        self.assertIn("--user", r.stderr.decode())

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_user_drops_privileges(self):
        srv = self.start(base_config(free_port(), {"a": file_key()}), args=("--user", "nobody"))
        deadline = time.time() + 20
        while "running as user nobody" not in srv.log_text() and time.time() < deadline:
            time.sleep(0.05)
        with open("/proc/%d/status" % srv.proc.pid) as f:
            status = f.read()
        uid = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")][0]
        self.assertEqual(set(uid), {"65534"}, status)
        st, _, _ = self.request(srv, "GET", "/certificates/a")
        self.assertEqual(st, 200)

    def test_sighup_reload(self):
        port = free_port()
        cfg = base_config(port, {"a": file_key()})
        srv = self.start(cfg)
        st, _, _ = self.request(srv, "GET", "/certificates/b")
        self.assertEqual(st, 404)
        cfg["keys"]["b"] = file_key("leaf-ec384")
        srv.write_config(cfg)
        srv.signal(signal.SIGHUP)
        deadline = time.time() + 20
        while "configuration reloaded" not in srv.log_text() and time.time() < deadline:
            time.sleep(0.05)
        st, _, ans = self.request(srv, "GET", "/certificates/b")
        self.assertEqual(st, 200, ans)
        f = self.copy("hello64.exe")
        r = hsmsign("sign", "-kvu", srv.url, "-kvc", "b", "-kva", "env:T", "-fd", "sha384", f,
                    env={"T": TOKEN})
        self.assertRc(r, 0)
        self.assertVerifies(f)
        # A broken file: one error line, the old configuration stays.
        srv.write_config(dict(cfg, keys={"a": dict(file_key(), provider="nope")}))
        srv.signal(signal.SIGHUP)
        deadline = time.time() + 20
        while "keys.a.provider" not in srv.log_text() and time.time() < deadline:
            time.sleep(0.05)
        errors = [ln for ln in srv.log_text().splitlines() if ": error: " in ln]
        self.assertEqual(len(errors), 1, srv.log_text())
        self.assertIn("keys.a.provider", errors[0])
        st, _, _ = self.request(srv, "GET", "/certificates/b")
        self.assertEqual(st, 200)

    def test_trust_proxy(self):
        audit = self.path("audit.jsonl")
        srv = self.start(base_config(free_port(), {"a": file_key()}, trust_proxy=True,
                                     audit_log=audit))
        st, _, cert = self.request(srv, "GET", "/certificates/a", headers={
            "X-Forwarded-For": "198.51.100.1, 203.0.113.9",
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "signer.example"})
        self.assertEqual(st, 200, cert)
        self.assertTrue(cert["kid"].startswith("https://signer.example/keys/a/"), cert)
        self.assertEqual(self.audit(audit)[0]["address"], "203.0.113.9")
        # Without trust_proxy the same headers change nothing.
        srv2 = self.start(base_config(free_port(), {"a": file_key()}, audit_log=audit))
        st, _, cert = self.request(srv2, "GET", "/certificates/a", headers={
            "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example"})
        self.assertTrue(cert["kid"].startswith(srv2.url + "/keys/a/"), cert)
        self.assertEqual(self.audit(audit)[1]["address"], "127.0.0.1")

    def test_rate_limit_429(self):
        srv = self.start(base_config(free_port(), {"a": file_key()}, limits={
            "requests_per_second_per_client": 0.5, "burst": 2}))
        statuses = []
        for _ in range(4):
            st, hdrs, ans = self.request(srv, "GET", "/certificates/a")
            statuses.append(st)
        self.assertEqual(statuses[:2], [200, 200])
        self.assertEqual(statuses[2:], [429, 429])
        self.assertEqual(ans["error"]["code"], "Throttled")
        self.assertGreaterEqual(int(hdrs["retry-after"]), 1)


class ServeQueueTest(ServeTestCase):
    """503 + Retry-After when a key's queue is full or a request waited
    too long (HSMSIGN_FAULT=serve-slow-sign makes each signature take
    1.5 s)."""

    def sign_in_parallel(self, srv, n):
        body = {"alg": "RS256", "value": b64url(b"\x05" * 32)}
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            futures = [ex.submit(self.request, srv, "POST", "/keys/a/sign", body)
                       for _ in range(n)]
            return [f.result() for f in futures]

    def test_queue_timeout(self):
        srv = self.start(base_config(free_port(), {"a": file_key()}, limits={
            "queue_timeout_seconds": 1}), env={"HSMSIGN_FAULT": "serve-slow-sign"})
        results = self.sign_in_parallel(srv, 3)
        statuses = sorted(st for st, _, _ in results)
        self.assertEqual(statuses, [200, 503, 503], results)
        for st, hdrs, ans in results:
            if st == 503:
                self.assertEqual(ans["error"]["code"], "ServiceUnavailable")
                self.assertIn("waited more than 1 s", ans["error"]["message"])
                self.assertEqual(hdrs["retry-after"], "2")

    def test_queue_full(self):
        srv = self.start(base_config(free_port(), {"a": file_key()}, limits={
            "max_queue": 1}), env={"HSMSIGN_FAULT": "serve-slow-sign"})
        body = {"alg": "RS256", "value": b64url(b"\x05" * 32)}
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            first = ex.submit(self.request, srv, "POST", "/keys/a/sign", body)
            time.sleep(0.5)  # the first is signing (1.5 s): the queue is empty
            results = self.sign_in_parallel(srv, 3)
            self.assertEqual(first.result()[0], 200)
        statuses = sorted(st for st, _, _ in results)
        # One waits its turn, the others find the queue full.
        self.assertEqual(statuses, [200, 503, 503], results)
        full = [ans for st, _, ans in results if st == 503]
        self.assertTrue(all("too many requests waiting" in a["error"]["message"]
                            for a in full), full)


class ServePkcs11Test(ServeTestCase):
    """A SoftHSM2 token key served with concurrency 1."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import test_pkcs11
        cls.p11 = test_pkcs11
        cls.token = test_pkcs11.Token()

    @classmethod
    def tearDownClass(cls):
        cls.token.cleanup()

    def test_token_key_queue_of_50(self):
        t = self.token
        port = free_port()
        audit = self.path("audit.jsonl")
        srv = self.start(base_config(port, {"dongle": {
            "provider": "pkcs11", "module": self.p11.SOFTHSM,
            "uri": "pkcs11:token=%s;object=rsa2048" % self.p11.TOKEN,
            "pin": "file:" + t.pin_file,
            "certificates": [t.path("rsa2048-chain.pem")],
            "concurrency": 1, "allow": [{"api_token": "ci"}]}}, audit_log=audit),
            env=t.env)
        for name in ("hello64.exe", "msi/small.msi"):
            f = self.copy(name)
            self.assertRc(self.client_sign(srv, "dongle", f), 0)
            self.assertVerifies(f)

        _, _, cert = self.request(srv, "GET", "/certificates/dongle")
        self.assertEqual(cert["policy"]["key_props"]["kty"], "RSA-HSM")
        pub = x509.load_der_x509_certificate(base64.b64decode(cert["cer"])).public_key()
        sign_path = urllib.parse.urlparse(cert["kid"]).path + "/sign"

        def one(i):
            digest = hashlib.sha256(b"file %d" % i).digest()
            st, _, ans = self.request(srv, "POST", sign_path,
                                      {"alg": "RS256", "value": b64url(digest)})
            if st != 200:
                return "%d: HTTP %d %s" % (i, st, ans)
            try:
                pub.verify(b64url_decode(ans["value"]), digest, padding.PKCS1v15(),
                           utils.Prehashed(hashes.SHA256()))
            except Exception as e:  # noqa: BLE001
                return "%d: %r" % (i, e)
            return None
        with concurrent.futures.ThreadPoolExecutor(50) as ex:
            problems = [p for p in ex.map(one, range(50)) if p]
        self.assertEqual(problems, [])
        signs = [e for e in self.audit(audit) if e["op"] == "sign"]
        self.assertEqual(len(signs), 52)
        self.assertTrue(all(e["result"] == "ok" for e in signs))
        _, _, metrics = self.request(srv, "GET", "/metrics", token=None)
        self.assertIn('hsmsign_sign_duration_seconds_count{key="dongle"} 52', metrics)
        # Reload reopens the token key while the old one is still open;
        # closing the old one must not finalise the module under the new.
        srv.signal(signal.SIGHUP)
        deadline = time.time() + 20
        while "configuration reloaded" not in srv.log_text() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("configuration reloaded", srv.log_text())
        time.sleep(0.2)
        f = self.copy("hello64.exe", "after-reload.exe")
        self.assertRc(self.client_sign(srv, "dongle", f), 0, "sign after reload")
        self.assertVerifies(f)


    def shim_server(self, fault=""):
        t = self.token
        log = self.path("shim.log")
        env = dict(t.env, P11SHIM_MODULE=self.p11.SOFTHSM, P11SHIM_LOG=log,
                   P11SHIM_FAULT=fault)
        audit = self.path("audit.jsonl")
        srv = self.start(base_config(free_port(), {"dongle": {
            "provider": "pkcs11", "module": t.shim,
            "uri": "pkcs11:token=%s;object=ec256" % self.p11.TOKEN,
            "pin": "file:" + t.pin_file, "certificates": [t.path("ec256-chain.pem")],
            "allow": [{"api_token": "ci"}]}}, audit_log=audit), env=env)
        return srv, log, audit

    def test_one_login_for_many_signatures(self):
        srv, log, _ = self.shim_server()
        for i in range(3):
            f = self.copy("hello64.exe", "f%d.exe" % i)
            self.assertRc(self.client_sign(srv, "dongle", f), 0)
            self.assertVerifies(f)
        calls = read(log).decode().split()
        self.assertEqual(calls.count("C_Login"), 1, calls)
        self.assertEqual(calls.count("C_Sign"), 3, calls)

    def test_removed_token_500(self):
        srv, _, audit = self.shim_server("removed")
        f = self.copy("hello64.exe")
        before = hslib.sha256_file(f)
        r = self.client_sign(srv, "dongle", f, env={"HSMSIGN_HTTP_BACKOFF_MS": "1"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("CKR_DEVICE_REMOVED", r.stderr.decode())
        self.assertEqual(hslib.sha256_file(f), before)
        errors = [e for e in self.audit(audit) if e["op"] == "sign"]
        self.assertTrue(errors)
        self.assertTrue(all(e["result"] == "error" and "CKR_DEVICE_REMOVED" in e["error"]
                            for e in errors), errors)
        self.assertIn("signing failed", srv.log_text())


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key, ca_cert, name_attrs, server):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name(name_attrs))
         .issuer_name(ca_cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30)))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def write_pem(path, *objs):
    with open(path, "wb") as f:
        for o in objs:
            if isinstance(o, x509.Certificate):
                f.write(o.public_bytes(serialization.Encoding.PEM))
            else:
                f.write(o.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return path


class ServeTlsTest(ServeTestCase):
    def setUp(self):
        super().setUp()
        ca_key, ca = make_ca("hsmsign serve test server CA")
        key, cert = issue(ca_key, ca, [x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")],
                          True)
        cca_key, cca = make_ca("hsmsign serve test client CA")
        ckey, ccert = issue(cca_key, cca, [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, "build01")], False)
        self.server_ca = write_pem(self.path("server-ca.pem"), ca)
        write_pem(self.path("server.pem"), cert)
        write_pem(self.path("server.key"), key)
        write_pem(self.path("clients.pem"), cca)
        self.client_cert = write_pem(self.path("client.pem"), ccert)
        self.client_key = write_pem(self.path("client.key"), ckey)
        self.srv = self.start(base_config(free_port(), {
            "codesign": file_key(),
            "mtls": file_key(allow=[{"mtls_subject": "CN=build01,O=Acme"}]),
        }, tls={"certificate": "server.pem", "key": "server.key", "client_ca": "clients.pem"}))

    def context(self, client_cert=False):
        ctx = ssl.create_default_context(cafile=self.server_ca)
        if client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx

    def test_sign_over_tls(self):
        f = self.copy("hello64.exe")
        r = self.client_sign(self.srv, "codesign", f, extra=("--ca-file", self.server_ca))
        self.assertRc(r, 0)
        self.assertVerifies(f)
        # Without trusting the server's CA the client refuses to talk.
        g = self.copy("hello64.exe", "g.exe")
        r = self.client_sign(self.srv, "codesign", g, env={"SSL_CERT_FILE": pki("root.pem")})
        self.assertNotEqual(r.returncode, 0)
        _, _, cert = self.request(self.srv, "GET", "/certificates/codesign",
                                  context=self.context())
        self.assertTrue(cert["kid"].startswith(self.srv.url + "/keys/codesign/"), cert)

    def test_mtls_identity(self):
        st, _, ans = self.request(self.srv, "GET", "/certificates/mtls", token=None,
                                  context=self.context(client_cert=True))
        self.assertEqual(st, 200, ans)
        st, _, ans = self.request(self.srv, "GET", "/certificates/mtls", token=None,
                                  context=self.context())
        self.assertEqual(st, 401, ans)
        # A client certificate does not open keys whose rules name others.
        st, _, ans = self.request(self.srv, "GET", "/certificates/codesign", token=None,
                                  context=self.context(client_cert=True))
        self.assertEqual(st, 403, ans)

    def test_tls_versions(self):
        ctx = self.context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        st, _, _ = self.request(self.srv, "GET", "/healthz", token=None, context=ctx)
        self.assertEqual(st, 200)


class GithubOidcBearerTest(ServeTestCase):
    """The client's --azure-credential github-oidc-bearer: the job's OIDC
    token (from a local stand-in for GitHub's token endpoint) goes to the
    server as the bearer token, with the audience asked for."""

    def test_bearer_from_actions_token_endpoint(self):
        seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                body = json.dumps({"value": TOKEN}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        gh = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=gh.serve_forever, daemon=True).start()
        self.addCleanup(gh.server_close)
        self.addCleanup(gh.shutdown)
        srv = self.start(base_config(free_port(), {"codesign": file_key()}))
        f = self.copy("hello64.exe")
        env = {"ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:%d/token?api-version=2.0" %
               gh.server_address[1], "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-secret"}
        r = hsmsign("sign", "-kvu", srv.url, "-kvc", "codesign", "--azure-credential",
                    "github-oidc-bearer", "--oidc-audience", "signer.example", "-fd", "sha256",
                    f, env=env)
        self.assertRc(r, 0)
        self.assertVerifies(f)
        self.assertTrue(seen)
        self.assertIn("audience=signer.example", seen[0][0])
        self.assertEqual(seen[0][1], "Bearer runner-secret")
        self.assertNotIn(TOKEN, r.stderr.decode())


if __name__ == "__main__":
    unittest.main()
