"""`hsmsign serve` with OIDC callers, end to end: a SoftHSM2 token key
served by the real server, a local OIDC issuer (tests/servers/oidc_issuer.py:
discovery, JWKS, GitHub Actions' token endpoint), and the real client
(`hsmsign sign --azure-credential github-oidc-bearer`) in the environment a
GitHub Actions job has. Independent checks: osslsigncode verifies the
signed PE and MSI files, python3-cryptography the raw signatures.

Checked: signing through the server with the job's token (audit entries
with the matched claims, the token nowhere); the wrong repository or branch
is refused with a clear 403 and a "denied" audit entry; expired,
wrong-audience, not-yet-valid, forged, alg=none and unknown-issuer tokens
are refused with 401 and a one-line client error (input files untouched);
an issuer found by OpenID discovery; an issuer over HTTPS, whose keys are
fetched with TLS verified; and a burst of 1,000 concurrent sign
requests against the token with concurrency 1 (none lost, one audit line
each, bounded queueing).
"""
import asyncio
import base64
import hashlib
import json
import os
import sys
import time
import unittest
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils
from cryptography.x509.oid import NameOID

import hslib
from hslib import hsmsign, read
from test_serve import (ServeTestCase, b64url, b64url_decode, free_port, issue, make_ca,
                        write_pem)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "servers"))
import oidc_issuer  # noqa: E402

GH = oidc_issuer.GITHUB_ISSUER
AUD = "hsmsign"


SHARED = {}


def setUpModule():
    """One SoftHSM2 token and one OIDC issuer (named like GitHub's, its keys
    served locally) for the whole module; one server per test."""
    import test_pkcs11
    SHARED["p11"] = test_pkcs11
    SHARED["token"] = test_pkcs11.Token()
    SHARED["issuer"] = oidc_issuer.OidcIssuer({"issuer": GH}).__enter__()


def tearDownModule():
    SHARED["issuer"].__exit__(None, None, None)
    SHARED["token"].cleanup()


class OidcServeTestCase(ServeTestCase):
    def setUp(self):
        super().setUp()
        self.p11, self.token, self.issuer = SHARED["p11"], SHARED["token"], SHARED["issuer"]
        self.issuer.github_mint()      # GitHub's defaults: acme/app, main
        self.audit_path = self.path("audit.jsonl")

    def token_key(self, label="rsa2048", allow=None, concurrency=1):
        t = self.token
        return {"provider": "pkcs11", "module": self.p11.SOFTHSM,
                "uri": "pkcs11:token=%s;object=%s" % (self.p11.TOKEN, label),
                "pin": "file:" + t.pin_file,
                "certificates": [t.path(label + "-chain.pem")],
                "concurrency": concurrency, "allow": allow}

    def config(self, keys, **extra):
        cfg = {"listen": "127.0.0.1:%d" % free_port(), "audit_log": self.audit_path,
               "issuers": [{"issuer": GH, "audiences": [AUD],
                            "jwks_uri": self.issuer.jwks_uri}],
               "api_tokens": [], "keys": keys}
        cfg.update(extra)
        return cfg

    def serve(self, keys, **extra):
        return self.start(self.config(keys, **extra), env=self.token.env)

    def actions_sign(self, srv, key, *files, audience=AUD):
        """hsmsign sign as a GitHub Actions job with id-token: write runs it."""
        return hsmsign("sign", "-kvu", srv.url, "-kvc", key, "--azure-credential",
                       "github-oidc-bearer", "--oidc-audience", audience, "-fd", "sha256",
                       *files, env=self.issuer.github_env())

    def token_sign(self, srv, key, token, *files):
        return hsmsign("sign", "-kvu", srv.url, "-kvc", key, "-kva", "env:HS_JWT",
                       "-fd", "sha256", *files, env={"HS_JWT": token})

    def audit(self, path=None):
        return super().audit(path or self.audit_path)


MAIN_ONLY = [{"iss": GH, "repository": "acme/app", "ref": "refs/heads/main"}]
RELEASE_ENV = [{"iss": GH, "sub": "repo:acme/app:environment:release"}]


class ActionsSignTest(OidcServeTestCase):
    def test_sign_pe_and_msi_with_the_jobs_token(self):
        srv = self.serve({"dongle": self.token_key(allow=MAIN_ONLY)})
        pe, msi = self.copy("hello64.exe"), self.copy("msi/small.msi")
        r = self.actions_sign(srv, "dongle", pe, msi)
        self.assertRc(r, 0, "sign through hsmsign serve with the job's OIDC token")
        for f in (pe, msi):
            self.assertVerifies(f)
            self.assertRc(hslib.verify(f), 0)

        # The client asked GitHub's endpoint for a token for our audience.
        asked = [e["path"] for e in self.issuer.calls("github", 200)]
        self.assertTrue(asked and all("audience=" + AUD in p for p in asked), asked)
        signs = [e for e in self.audit() if e["op"] == "sign"]
        self.assertEqual(len(signs), 2, self.audit())
        for e in signs:
            self.assertEqual(e["result"], "ok")
            self.assertEqual(e["key"], "dongle")
            self.assertEqual(e["client"]["kind"], "oidc")
            self.assertEqual(e["client"]["name"], GH + "|repo:acme/app:ref:refs/heads/main")
            self.assertEqual(e["client"]["claims"], {"iss": GH, "repository": "acme/app",
                                                     "ref": "refs/heads/main"})
        # No token bytes in the audit log, the server's log or the client's output.
        jwt_sig = self.issuer.mint(aud=AUD).rsplit(".", 1)[1]
        for text in (read(self.audit_path).decode(), srv.log_text(), r.stderr.decode()):
            self.assertNotIn("eyJ", text)
            self.assertNotIn(jwt_sig[:24], text)
        # One JWKS fetch served every request.
        self.assertGreaterEqual(self.issuer.fetches("jwks"), 1)

    def test_environment_rule(self):
        srv = self.serve({"release": self.token_key("ec256", allow=RELEASE_ENV)})
        f = self.copy("hello64.exe")
        self.issuer.github_mint(claims={"sub": "repo:acme/app:environment:release"})
        self.assertRc(self.actions_sign(srv, "release", f), 0)
        self.assertVerifies(f)
        # The same repository and branch without the environment: refused.
        self.issuer.github_mint()
        g = self.copy("hello64.exe", "g.exe")
        r = self.actions_sign(srv, "release", g)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("claim 'sub' is 'repo:acme/app:ref:refs/heads/main'", r.stderr.decode())


class RefusedTest(OidcServeTestCase):
    """Tokens the server must refuse, and what each side says about it."""

    def setUp(self):
        super().setUp()
        self.srv = self.serve({"dongle": self.token_key(allow=MAIN_ONLY)})

    def assertRefused(self, r, status_text, reason, before, f):
        # The key cannot be opened: exit 87 (docs/cli.md), one line naming
        # the server's reason.
        self.assertEqual(r.returncode, 87, r.stderr.decode())
        err = r.stderr.decode()
        self.assertOneErrorLine(r)
        self.assertIn(status_text, err)
        self.assertIn(reason, err)
        self.assertNotIn("eyJ", err)
        self.assertEqual(hslib.sha256_file(f), before, "input untouched")

    def test_wrong_repository_or_branch_403(self):
        f = self.copy("hello64.exe")
        before = hslib.sha256_file(f)
        cases = [({"repository": "evil/app", "sub": "repo:evil/app:ref:refs/heads/main"},
                  "claim 'repository' is 'evil/app', not allowed"),
                 ({"ref": "refs/heads/dev", "sub": "repo:acme/app:ref:refs/heads/dev"},
                  "claim 'ref' is 'refs/heads/dev', not allowed")]
        for claims, reason in cases:
            self.issuer.github_mint(claims=claims)
            r = self.actions_sign(self.srv, "dongle", f)
            self.assertRefused(r, "access denied on 127.0.0.1: Caller '%s|" % GH, reason,
                               before, f)
        denied = [e for e in self.audit() if e["result"] == "denied"]
        self.assertEqual(len(denied), 2, self.audit())
        self.assertEqual(denied[0]["client"]["name"], GH + "|repo:evil/app:ref:refs/heads/main")
        self.assertIn("claim 'repository'", denied[0]["error"])
        self.assertIn("claim 'ref'", denied[1]["error"])
        self.assertEqual([e for e in self.audit() if e["result"] == "ok"], [])
        # The raw answer is Key Vault's 403 body.
        token = self.issuer.mint(aud=AUD, claims={"ref": "refs/heads/dev"})
        st, _, ans = self.request(self.srv, "GET", "/certificates/dongle", token=token)
        self.assertEqual(st, 403, ans)
        self.assertEqual(ans["error"]["code"], "Forbidden")
        self.assertNotIn(token, json.dumps(ans))

    def test_bad_tokens_401(self):
        f = self.copy("hello64.exe")
        before = hslib.sha256_file(f)
        iss = self.issuer
        cases = [
            ("expired", iss.mint(aud=AUD, lifetime=-120, nbf_offset=-600, iat_offset=-600),
             "token expired"),
            ("wrong audience", iss.mint(aud="api://AzureADTokenExchange"),
             "audience 'api://AzureADTokenExchange' not accepted"),
            ("not yet valid", iss.mint(aud=AUD, nbf_offset=600), "token not yet valid"),
            ("forged", iss.mint(aud=AUD, forge=True), "signature does not verify"),
            ("alg none", iss.mint(aud=AUD, alg="none"), "algorithm 'none' not accepted"),
            ("HMAC", iss.mint(aud=AUD, alg="HS256"), "algorithm 'HS256' not accepted"),
            ("other issuer", iss.mint(aud=AUD, claims={"iss": "https://gitlab.com"}),
             "issuer 'https://gitlab.com' not configured"),
            ("unknown key", iss.mint(aud=AUD, kid="k-unknown"), "signing key 'k-unknown'"),
        ]
        for what, token, reason in cases:
            r = self.token_sign(self.srv, "dongle", token, f)
            self.assertRefused(r, "rejected the token: ", reason, before, f)
            self.assertNotIn(token.split(".")[1][:16], r.stderr.decode(), what)
        entries = self.audit()
        self.assertEqual(len(entries), len(cases), entries)
        for (what, _, reason), e in zip(cases, entries):
            self.assertEqual(e["result"], "unauthenticated", what)
            self.assertIn(reason, e["error"], what)
        text = read(self.audit_path).decode() + self.srv.log_text()
        for _, token, _ in cases:
            self.assertNotIn(token, text)
        # The job's own token for another audience: the client says why.
        r = self.actions_sign(self.srv, "dongle", f, audience="https://github.com/acme")
        self.assertRefused(r, "rejected the token", "audience 'https://github.com/acme' not accepted",
                           before, f)
        _, _, metrics = self.request(self.srv, "GET", "/metrics", token=None)
        self.assertIn("hsmsign_auth_failures_total", metrics)

    def test_raw_requests(self):
        """Key Vault's 401 challenge without a token; a valid token signs a
        digest whose signature verifies against the certificate."""
        st, hdrs, ans = self.request(self.srv, "GET", "/keys/dongle", token=None)
        self.assertEqual(st, 401, ans)
        self.assertTrue(hdrs["www-authenticate"].startswith("Bearer authorization="))
        token = self.issuer.mint(aud=[AUD, "other"])
        st, _, cert = self.request(self.srv, "GET", "/certificates/dongle", token=token)
        self.assertEqual(st, 200, cert)
        pub = x509.load_der_x509_certificate(base64.b64decode(cert["cer"])).public_key()
        digest = hashlib.sha256(b"raw").digest()
        st, _, ans = self.request(self.srv, "POST",
                                  urllib.parse.urlparse(cert["kid"]).path + "/sign",
                                  {"alg": "RS256", "value": b64url(digest)}, token=token)
        self.assertEqual(st, 200, ans)
        pub.verify(b64url_decode(ans["value"]), digest, padding.PKCS1v15(),
                   utils.Prehashed(hashes.SHA256()))


class DiscoveryTest(OidcServeTestCase):
    def test_issuer_found_by_discovery(self):
        """An issuer configured by name only: its keys are found through
        /.well-known/openid-configuration; ES256 tokens."""
        with oidc_issuer.OidcIssuer({"keys": [{"kid": "e1", "type": "ec256"}],
                                     "claims": {"project_path": "acme/app",
                                                "ref_protected": True}}) as gl:
            cfg = self.config({"dongle": self.token_key(allow=[
                {"iss": gl.issuer, "project_path": "acme/*", "ref_protected": "true"}])})
            cfg["issuers"] = [{"issuer": gl.issuer, "audiences": ["https://signer.example"]}]
            srv = self.start(cfg, env=self.token.env)
            f = self.copy("hello64.exe")
            r = self.token_sign(srv, "dongle", gl.mint(aud="https://signer.example"), f)
            self.assertRc(r, 0)
            self.assertVerifies(f)
            self.assertEqual(len(gl.calls("discovery", 200)), 1)
            self.assertEqual(len(gl.calls("jwks", 200)), 1)
            entry = [e for e in self.audit() if e["op"] == "sign"][0]
            self.assertEqual(entry["client"]["claims"]["project_path"], "acme/app")


    def test_issuer_keys_unreachable_503(self):
        """An issuer whose JWKS cannot be fetched is an outage, not a bad
        token: 503 with Retry-After so clients come back, and the client
        names the service in one line without the token."""
        cfg = self.config({"dongle": self.token_key(allow=MAIN_ONLY)})
        cfg["issuers"] = [{"issuer": GH, "audiences": [AUD],
                           "jwks_uri": "http://127.0.0.1:%d/jwks" % free_port()}]
        srv = self.start(cfg, env=self.token.env)
        token = self.issuer.mint(aud=AUD)
        st, hdrs, ans = self.request(srv, "GET", "/certificates/dongle", token=token)
        self.assertEqual(st, 503, ans)
        self.assertIn("retry-after", hdrs)
        self.assertEqual(ans["error"]["code"], "ServiceUnavailable")
        f = self.copy("hello64.exe")
        before = read(f)
        r = hsmsign("sign", "-kvu", srv.url, "-kvc", "dongle", "-kva", "env:HS_JWT",
                    "--http-retries", "1", "-fd", "sha256", f, env={"HS_JWT": token})
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode()
        self.assertNotIn(token.rsplit(".", 1)[1][:24], err)
        self.assertIn("HTTP 503", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(read(f), before)

    def test_https_issuer_verified(self):
        """Keys fetched over HTTPS are fetched with TLS verified: with the
        issuer's CA trusted (SSL_CERT_FILE) tokens verify; without it the
        server cannot get the keys, and says so without blaming the caller."""
        ca_key, ca = make_ca("oidc issuer test CA")
        key, cert = issue(ca_key, ca, [x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")],
                          True)
        tls = {"cert": write_pem(self.path("iss.pem"), cert),
               "key": write_pem(self.path("iss.key"), key)}
        ca_file = write_pem(self.path("iss-ca.pem"), ca)
        with oidc_issuer.OidcIssuer({"tls": tls}) as tiss:
            self.assertTrue(tiss.issuer.startswith("https://127.0.0.1:"))
            for trusted in (True, False):
                cfg = self.config({"dongle": self.token_key(allow=[{"iss": tiss.issuer}])},
                                  audit_log=self.path("audit-%s.jsonl" % trusted))
                cfg["issuers"] = [{"issuer": tiss.issuer, "audiences": [AUD]}]
                env = dict(self.token.env)
                if trusted:
                    env["SSL_CERT_FILE"] = ca_file
                srv = self.start(cfg, env=env, name="serve-%s.json" % trusted)
                st, _, ans = self.request(srv, "GET", "/certificates/dongle",
                                          token=tiss.mint(aud=AUD))
                if trusted:
                    self.assertEqual(st, 200, ans)
                else:
                    self.assertGreaterEqual(st, 500, ans)
                    self.assertIn("not trusted", ans["error"]["message"])


class BurstTest(OidcServeTestCase):
    """1,000 concurrent sign requests against one token key that signs one
    at a time: all succeed, none is lost, one audit line each, and no request
    waits unboundedly in the queue."""

    N = 1000

    def test_thousand_concurrent_requests(self):
        srv = self.serve({"dongle": self.token_key(allow=MAIN_ONLY, concurrency=1)},
                         limits={"requests_per_second_per_client": 100000, "burst": 100000,
                                 "max_queue": 2000, "queue_timeout_seconds": 120,
                                 "max_connections": 4096})
        token = self.issuer.mint(aud=AUD, lifetime=600)
        st, _, cert = self.request(srv, "GET", "/certificates/dongle", token=token)
        self.assertEqual(st, 200, cert)
        pub = x509.load_der_x509_certificate(base64.b64decode(cert["cer"])).public_key()
        path = urllib.parse.urlparse(cert["kid"]).path + "/sign?api-version=7.4"
        digests = [hashlib.sha256(b"burst %d" % i).digest() for i in range(self.N)]

        async def one(i, start):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            body = json.dumps({"alg": "RS256", "value": b64url(digests[i])}).encode()
            await start.wait()
            t0 = time.monotonic()
            writer.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                             path.encode(), srv.port, token.encode(), len(body), body))
            await writer.drain()
            raw = await reader.read()
            elapsed = time.monotonic() - t0
            writer.close()
            head, _, payload = raw.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1]) if head else 0
            return i, status, payload, elapsed

        async def burst():
            start = asyncio.Event()
            tasks = [asyncio.ensure_future(one(i, start)) for i in range(self.N)]
            await asyncio.sleep(0.5)   # every connection open before any request
            start.set()
            return await asyncio.gather(*tasks, return_exceptions=True)

        t0 = time.monotonic()
        results = asyncio.run(burst())
        wall = time.monotonic() - t0
        failures = [r for r in results if isinstance(r, BaseException) or r[1] != 200]
        self.assertEqual(failures[:5], [], "%d of %d failed" % (len(failures), self.N))
        for i, _, payload, _ in results:
            sig = b64url_decode(json.loads(payload)["value"])
            pub.verify(sig, digests[i], padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        signs = [e for e in self.audit() if e["op"] == "sign"]
        self.assertEqual(len(signs), self.N)
        self.assertEqual(sorted(e["digest"] for e in signs),
                         sorted(d.hex() for d in digests), "every request audited once")
        self.assertTrue(all(e["result"] == "ok" for e in signs))
        # Bounded queueing: the slowest request (queue wait + signing) stays
        # far below the 120 s queue timeout (measured: ~4 s on 2 cores).
        slowest = max(r[3] for r in results)
        self.assertLess(slowest, 60, "slowest request %.1f s" % slowest)
        _, _, metrics = self.request(srv, "GET", "/metrics", token=None)
        self.assertIn('hsmsign_sign_duration_seconds_count{key="dongle"} %d' % self.N, metrics)
        self.assertIn('hsmsign_queue_depth{key="dongle"} 0', metrics)
        print("\nburst: %d requests in %.1f s, slowest %.1f s" % (self.N, wall, slowest),
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
