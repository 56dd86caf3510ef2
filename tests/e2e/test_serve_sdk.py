"""Compatibility proof for `hsmsign serve`: the official Azure SDK for
JavaScript (@azure/keyvault-certificates + @azure/keyvault-keys, pinned in
tests/servers/sdk-check) fetches certificates and signs digests through the
server over TLS, exactly as it does against Key Vault — challenge
authentication included — with a GitHub-style OIDC token from the local
issuer (tests/servers/oidc_issuer.py). node:crypto verifies each signature
against the certificate; the server's audit log shows the SDK's requests.
Keys: a SoftHSM2 RSA key and an EC P-256 file key."""
import json
import os
import shutil
import subprocess
import sys
import unittest

from cryptography import x509
from cryptography.x509.oid import NameOID

from test_serve import ServeTestCase, free_port, file_key, issue, make_ca, write_pem

HERE = os.path.dirname(os.path.abspath(__file__))
SDK_DIR = os.path.join(HERE, "..", "servers", "sdk-check")
sys.path.insert(0, os.path.join(HERE, "..", "servers"))
import oidc_issuer  # noqa: E402

GH = oidc_issuer.GITHUB_ISSUER


class ServeSdkTest(ServeTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import test_pkcs11
        cls.p11 = test_pkcs11
        cls.token = test_pkcs11.Token()
        cls.issuer = oidc_issuer.OidcIssuer({"issuer": GH}).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.issuer.__exit__(None, None, None)
        cls.token.cleanup()

    def node(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node (>= 20) is required for the SDK check")
        self.assertTrue(os.path.isdir(os.path.join(SDK_DIR, "node_modules")),
                        "run scripts/bootstrap (npm ci in %s)" % SDK_DIR)
        return node

    def setUp(self):
        super().setUp()
        ca_key, ca = make_ca("hsmsign serve SDK test CA")
        key, cert = issue(ca_key, ca, [x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")],
                          True)
        self.ca = write_pem(self.path("ca.pem"), ca)
        write_pem(self.path("server.pem"), cert)
        write_pem(self.path("server.key"), key)
        self.audit_path = self.path("audit.jsonl")
        allow = [{"iss": GH, "repository": "acme/app", "ref": "refs/heads/main"}]
        t = self.token
        self.srv = self.start({
            "listen": "127.0.0.1:%d" % free_port(),
            "tls": {"certificate": self.path("server.pem"), "key": self.path("server.key")},
            "audit_log": self.audit_path,
            "issuers": [{"issuer": GH, "audiences": ["hsmsign"],
                         "jwks_uri": self.issuer.jwks_uri}],
            "keys": {
                "dongle": {"provider": "pkcs11", "module": self.p11.SOFTHSM,
                           "uri": "pkcs11:token=%s;object=rsa2048" % self.p11.TOKEN,
                           "pin": "file:" + t.pin_file,
                           "certificates": [t.path("rsa2048-chain.pem")],
                           "concurrency": 1, "allow": allow},
                "ec": file_key("leaf-ec256", allow=allow),
            }}, env=t.env)

    def run_sdk(self, token, *certs):
        token_file = self.path("token.txt")
        with open(token_file, "w") as f:
            f.write(token)
        cmd = [self.node(), os.path.join(SDK_DIR, "serve-check.mjs"), "--vault", self.srv.url,
               "--token-file", token_file]
        for c in certs:
            cmd += ["--cert", c]
        env = dict(os.environ, NODE_EXTRA_CA_CERTS=self.ca)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        lines = r.stdout.strip().splitlines()
        return r.returncode, json.loads(lines[-1]) if lines else {"stderr": r.stderr}

    def test_sdk_signs_through_the_server(self):
        rc, out = self.run_sdk(self.issuer.mint(aud="hsmsign"), "dongle", "ec")
        self.assertEqual(rc, 0, out)
        self.assertTrue(out["ok"], out)
        self.assertEqual([(x["cert"], x["alg"], x["verified"]) for x in out["results"]],
                         [("dongle", "RS256", True), ("ec", "ES256", True)])
        self.assertEqual(out["results"][1]["sigBytes"], 64)
        for x in out["results"]:
            self.assertTrue(x["kid"].startswith(self.srv.url + "/keys/" + x["cert"] + "/"))
        # The SDK followed the server's challenge: it asked for a token for
        # the resource the 401 named (the server itself).
        self.assertEqual(out["scopes"], [self.srv.url + "/.default"])
        entries = self.audit(self.audit_path)
        signs = [e for e in entries if e["op"] == "sign"]
        self.assertEqual([(e["key"], e["alg"], e["result"]) for e in signs],
                         [("dongle", "RS256", "ok"), ("ec", "ES256", "ok")])
        self.assertTrue(all(e["client"]["kind"] == "oidc" for e in signs))

    def test_sdk_sees_key_vault_errors(self):
        # Another repository: the SDK gets Key Vault's 403 Forbidden.
        token = self.issuer.mint(aud="hsmsign", claims={"repository": "evil/app"})
        rc, out = self.run_sdk(token, "dongle")
        self.assertEqual(rc, 1, out)
        self.assertEqual(out.get("status"), 403, out)
        self.assertIn("claim 'repository' is 'evil/app'", out["error"])
        # An expired token: 401 with the reason.
        rc, out = self.run_sdk(self.issuer.mint(aud="hsmsign", lifetime=-300,
                                                nbf_offset=-900, iat_offset=-900), "dongle")
        self.assertEqual(rc, 1, out)
        self.assertEqual(out.get("status"), 401, out)
        self.assertIn("token expired", out["error"])


if __name__ == "__main__":
    unittest.main()
