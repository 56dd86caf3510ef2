"""The local Azure emulator (tests/servers/azure_emu.py) itself: the official
Azure SDK for JavaScript works against it, and its wire behaviour matches
protocols.md sections 1-3 (tests/servers/README.md is the contract)."""
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import unittest
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.normpath(os.path.join(HERE, "..", "servers"))
sys.path.insert(0, SERVERS)

from emu_client import Emulator, b64url_decode  # noqa: E402

SDK_DIR = os.path.join(SERVERS, "sdk-check")
VAULT = "https://vault.azure.net"
MHSM = "https://managedhsm.azure.net"
SIGN_ACTION = "Microsoft.KeyVault/vaults/keys/sign/action"
AV = "?api-version=2025-07-01"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_claims(token):
    return json.loads(b64url_decode(token.split(".")[1]))


def load_leaf(emu, key):
    with open(emu.leaf(key), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


class VaultEmulatorTest(unittest.TestCase):
    emu = None

    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator(mode="vault").start()
        cls.token = cls.emu.access_token()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        self.emu.reset()

    # ------------------------------------------------------------ helpers
    def cert_bundle(self, name="codesign-rsa2048"):
        r = self.emu.request("GET", "/certificates/%s%s" % (name, AV),
                             token=self.token)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def sign(self, kid, alg, value, token=None):
        return self.emu.request("POST", kid + "/sign" + AV,
                                {"alg": alg, "value": b64url(value)},
                                token=token or self.token)

    # --------------------------------------------------------- SDK check
    def test_sdk_check_rsa_and_ec(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node (>= 20) is required for the SDK check")
        self.assertTrue(os.path.isdir(os.path.join(SDK_DIR, "node_modules")),
                        "run scripts/bootstrap (npm ci in %s)" % SDK_DIR)
        i = self.emu.info
        cmd = [node, os.path.join(SDK_DIR, "check.mjs"),
               "--vault", i["vault_url"], "--authority", i["authority_host"],
               "--tenant", i["tenant"],
               "--client-id", i["identities"]["secret"],
               "--secret-file", i["client_secret_file"],
               "--cert", "codesign-rsa2048", "--cert", "codesign-ec256"]
        env = dict(os.environ, NODE_EXTRA_CA_CERTS=i["tls_ca"])
        r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertTrue(out["ok"])
        self.assertEqual([x["alg"] for x in out["results"]],
                         ["RS256", "ES256"])
        self.assertEqual(out["results"][1]["sigBytes"], 64)
        log = self.emu.log()
        vault = [e for e in log if e.get("service") == "vault"]
        # challenge authentication: an unauthenticated probe answered 401,
        # then a token from the Entra endpoint, then authorised requests
        self.assertEqual((vault[0]["bearer"], vault[0]["status"]),
                         (False, 401))
        self.assertTrue(vault[0]["path"].startswith("/certificates/"))
        tok = [n for n, e in enumerate(log)
               if e["path"].endswith("/oauth2/v2.0/token")]
        self.assertTrue(tok and log[tok[0]]["status"] == 200)
        authed = [e for e in vault if e["bearer"]]
        self.assertTrue(all(e["status"] == 200 for e in authed), authed)
        self.assertEqual(self.emu.count("POST", "/keys/", status=200,
                                        bearer=True), 2)
        self.assertEqual(self.emu.count("GET", "/certificates/", bearer=True),
                         2)

    # ---------------------------------------------------- authentication
    def test_missing_token_is_challenged(self):
        r = self.emu.request("GET", "/certificates/codesign-rsa2048" + AV)
        self.assertEqual(r.status, 401)
        self.assertEqual(r.json()["error"]["code"], "Unauthorized")
        self.assertIn("AKV10000", r.json()["error"]["message"])
        www = r.headers["WWW-Authenticate"]
        self.assertIn('resource="%s"' % VAULT, www)
        self.assertIn('authorization="%s/%s"' % (self.emu.url,
                                                  self.emu.tenant), www)

    def test_challenge_scope_style(self):
        self.emu.config(challenge_style="scope")
        r = self.emu.request("GET", "/keys/codesign-rsa2048" + AV)
        self.assertIn('scope="%s/.default"' % VAULT,
                      r.headers["WWW-Authenticate"])

    def test_wrong_audience(self):
        token = self.emu.access_token(resource="https://management.azure.com")
        r = self.emu.request("GET", "/certificates/codesign-rsa2048" + AV,
                             token=token)
        self.assertEqual(r.status, 401)
        self.assertIn("AKV10022: Invalid audience. Expected "
                      "https://vault.azure.net, found: "
                      "https://management.azure.com",
                      r.json()["error"]["message"])
        self.assertIn("WWW-Authenticate", r.headers)

    def test_forged_and_expired_tokens(self):
        h, c, _ = self.token.split(".")
        r = self.emu.request("GET", "/keys/codesign-rsa2048" + AV,
                             token=h + "." + c + "." + b64url(b"x" * 256))
        self.assertEqual(r.status, 401)
        self.emu.config(token_lifetime=1)
        short = self.emu.access_token()
        time.sleep(1.2)
        r = self.emu.request("GET", "/keys/codesign-rsa2048" + AV,
                             token=short)
        self.assertEqual(r.status, 401)
        self.assertIn("expired", r.json()["error"]["message"])

    def test_api_version_required(self):
        r = self.emu.request("GET", "/certificates/codesign-rsa2048",
                             token=self.token)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["code"], "BadParameter")
        r = self.emu.request("GET", "/certificates/codesign-rsa2048"
                             "?api-version=2016-10-01", token=self.token)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["code"], "BadParameter")
        for v in ("7.4", "7.5", "7.6", "2025-06-01", "2025-07-01"):
            r = self.emu.request("GET", "/certificates/codesign-rsa2048"
                                 "?api-version=" + v, token=self.token)
            self.assertEqual(r.status, 200, v)

    # -------------------------------------------------------------- RBAC
    def test_rbac_denial_names_the_action(self):
        token = self.emu.access_token(
            client_id=self.emu.info["identities"]["nosign"],
            secret=self.emu.read("client-secret-nosign.txt"))
        bundle = self.emu.request("GET", "/certificates/codesign-rsa2048" + AV,
                                  token=token)
        self.assertEqual(bundle.status, 200)
        r = self.sign(bundle.json()["kid"], "RS256", b"\0" * 32, token=token)
        self.assertEqual(r.status, 403)
        err = r.json()["error"]
        self.assertEqual(err["code"], "Forbidden")
        self.assertEqual(err["innererror"]["code"], "ForbiddenByRbac")
        self.assertIn("Action: '%s'" % SIGN_ACTION, err["message"])
        self.assertIn("Caller: appid=5555", err["message"])

    def test_deny_actions_knob(self):
        self.emu.config(deny_actions=["Microsoft.KeyVault/vaults/"
                                      "certificates/read"])
        r = self.emu.request("GET", "/certificates/codesign-rsa2048" + AV,
                             token=self.token)
        self.assertEqual(r.status, 403)
        self.assertIn("certificates/read", r.json()["error"]["message"])

    # ---------------------------------------------------------- not found
    def test_not_found(self):
        r = self.emu.request("GET", "/certificates/nope" + AV,
                             token=self.token)
        self.assertEqual(r.status, 404)
        err = r.json()["error"]
        self.assertEqual(err["code"], "CertificateNotFound")
        self.assertIn("(name/id) nope was not found", err["message"])
        r = self.sign(self.emu.url + "/keys/nope/0123", "RS256", b"\0" * 32)
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["code"], "KeyNotFound")

    # ------------------------------------------------------------ bundles
    def test_certificate_bundle_and_pki(self):
        b = self.cert_bundle()
        der = base64.b64decode(b["cer"], validate=True)     # standard base64
        with open(self.emu.path("pki", "codesign-rsa2048.cer"), "rb") as f:
            self.assertEqual(der, f.read())                  # leaf only
        self.assertEqual(b["x5t"], b64url(hashlib.sha1(der).digest()))
        self.assertRegex(b["kid"], r"^%s/keys/codesign-rsa2048/[0-9a-f]{32}$"
                         % self.emu.url)
        self.assertEqual(b["id"].split("/")[-1], b["kid"].split("/")[-1])
        self.assertIs(b["preserveCertOrder"], False)
        leaf = x509.load_der_x509_certificate(der)
        self.assertIn(ExtendedKeyUsageOID.CODE_SIGNING,
                      leaf.extensions.get_extension_for_class(
                          x509.ExtendedKeyUsage).value)
        self.assertTrue(leaf.extensions.get_extension_for_class(
            x509.KeyUsage).value.digital_signature)
        aia = leaf.extensions.get_extension_for_oid(
            ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
        url = aia[0].access_location.value
        self.assertEqual(url, self.emu.http_url + "/aia/intermediate.cer")
        r = self.emu.request("GET", url)
        self.assertEqual(r.status, 200)
        inter = x509.load_der_x509_certificate(r.body)
        inter.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                                  padding.PKCS1v15(),
                                  leaf.signature_hash_algorithm)
        with open(self.emu.info["root"], "rb") as f:
            root = x509.load_pem_x509_certificate(f.read())
        self.assertEqual(inter.issuer, root.subject)
        k = self.emu.request("GET", "/keys/codesign-ec384/" + AV,
                             token=self.token).json()
        self.assertEqual((k["key"]["kty"], k["key"]["crv"]), ("EC", "P-384"))
        self.assertEqual(len(b64url_decode(k["key"]["x"])), 48)
        self.assertTrue(k["managed"])

    # -------------------------------------------------------------- sign
    def test_sign_rs256_verifies_and_is_counted(self):
        b = self.cert_bundle("codesign-rsa3072")
        self.emu.reset()
        digest = hashlib.sha256(b"hello").digest()
        r = self.sign(b["kid"], "RS256", digest)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["kid"], b["kid"])
        sig = b64url_decode(r.json()["value"])
        self.assertNotIn("=", r.json()["value"])
        self.assertEqual(len(sig), 384)
        leaf = load_leaf(self.emu, "codesign-rsa3072")
        leaf.public_key().verify(sig, b"hello", padding.PKCS1v15(),
                                 hashes.SHA256())
        self.assertEqual(self.emu.count("POST", "/keys/"), 1)
        self.assertEqual(self.emu.count("GET", "/certificates/"), 0)

    def test_sign_rs_ps_lengths_and_wrong_alg(self):
        b = self.cert_bundle("codesign-rsa2048")
        pub = load_leaf(self.emu, "codesign-rsa2048").public_key()
        for alg, h in (("RS384", hashes.SHA384), ("RS512", hashes.SHA512)):
            d = hashlib.new(h.name, b"m").digest()
            sig = b64url_decode(self.sign(b["kid"], alg, d).json()["value"])
            pub.verify(sig, b"m", padding.PKCS1v15(), h())
        sig = b64url_decode(self.sign(b["kid"], "PS256", hashlib.sha256(
            b"m").digest()).json()["value"])
        pub.verify(sig, b"m", padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                   hashes.SHA256())
        r = self.sign(b["kid"], "RS256", b"\1" * 20)       # SHA-1 length
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["code"], "BadParameter")
        r = self.sign(b["kid"], "ES256", b"\1" * 32)
        self.assertEqual(r.status, 400)
        r = self.emu.request("POST", b["kid"] + "/sign" + AV,
                             {"alg": "RS256", "value": "ab+/"},
                             token=self.token)
        self.assertEqual(r.status, 400)                   # not base64url

    def test_sign_rsnull_sha1_digestinfo(self):
        b = self.cert_bundle("codesign-rsa2048")
        digest_info = bytes.fromhex("3021300906052b0e03021a05000414") + \
            hashlib.sha1(b"legacy").digest()
        r = self.sign(b["kid"], "RSNULL", digest_info)
        self.assertEqual(r.status, 200, r)
        sig = b64url_decode(r.json()["value"])
        load_leaf(self.emu, "codesign-rsa2048").public_key().verify(
            sig, b"legacy", padding.PKCS1v15(), hashes.SHA1())

    def test_sign_ecdsa_raw_r_s(self):
        for key, alg, h, width in (("codesign-ec256", "ES256", hashes.SHA256,
                                    32),
                                   ("codesign-ec384", "ES384", hashes.SHA384,
                                    48),
                                   ("codesign-ec521", "ES512", hashes.SHA512,
                                    66)):
            b = self.cert_bundle(key)
            d = hashlib.new(h.name, b"ec").digest()
            r = self.sign(b["kid"], alg, d)
            self.assertEqual(r.status, 200, r)
            sig = b64url_decode(r.json()["value"])
            self.assertEqual(len(sig), 2 * width, alg)     # P1363, not DER
            der = utils.encode_dss_signature(
                int.from_bytes(sig[:width], "big"),
                int.from_bytes(sig[width:], "big"))
            load_leaf(self.emu, key).public_key().verify(der, b"ec",
                                                         ec.ECDSA(h()))
        r = self.sign(self.cert_bundle("codesign-ec256")["kid"], "ES384",
                      b"\0" * 48)
        self.assertEqual(r.status, 400)

    def test_corrupt_sign_knob(self):
        b = self.cert_bundle("codesign-ec256")
        self.emu.config(corrupt_sign_next=1)
        d = hashlib.sha256(b"x").digest()
        sig = b64url_decode(self.sign(b["kid"], "ES256", d).json()["value"])
        pub = load_leaf(self.emu, "codesign-ec256").public_key()
        der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                         int.from_bytes(sig[32:], "big"))
        with self.assertRaises(Exception):
            pub.verify(der, b"x", ec.ECDSA(hashes.SHA256()))

    # ------------------------------------------------------------- knobs
    def test_throttle_with_and_without_retry_after(self):
        url = "/certificates/codesign-rsa2048" + AV
        self.emu.config(throttle_next=1, throttle_retry_after=3)
        r = self.emu.request("GET", url, token=self.token)
        self.assertEqual(r.status, 429)
        self.assertEqual(r.headers["Retry-After"], "3")
        self.assertEqual(r.json()["error"]["code"], "Throttled")
        self.assertIn("VaultRequestTypeLimitReached",
                      r.json()["error"]["message"])
        self.emu.config(throttle_next=1, throttle_retry_after=None)
        r = self.emu.request("GET", url, token=self.token)
        self.assertEqual(r.status, 429)
        self.assertIsNone(r.headers.get("Retry-After"))
        self.assertEqual(self.emu.request("GET", url, token=self.token).status,
                         200)

    def test_fail_reset_latency_and_only_paths(self):
        url = "/certificates/codesign-rsa2048" + AV
        self.emu.config(fail_next=1, fail_status=500, only_paths=["/keys/"])
        self.assertEqual(self.emu.request("GET", url, token=self.token).status,
                         200)                       # not a /keys/ path
        self.emu.config(only_paths=[])
        self.assertEqual(self.emu.request("GET", url, token=self.token).status,
                         500)
        self.emu.config(fail_next=1, fail_status=503)
        self.assertEqual(self.emu.request("GET", url, token=self.token).status,
                         503)
        self.emu.config(reset_next=1)
        with self.assertRaises(Exception):
            self.emu.request("GET", url, token=self.token)
        self.emu.config(latency_ms=300)
        t0 = time.time()
        self.assertEqual(self.emu.request("GET", url, token=self.token).status,
                         200)
        self.assertGreaterEqual(time.time() - t0, 0.3)
        log = self.emu.log()
        self.assertEqual([e["status"] for e in log if e["path"].startswith(
            "/certificates/")], [200, 500, 503, 0, 200])

    def test_keep_alive(self):
        conn = http.client.HTTPSConnection(
            "127.0.0.1", int(self.emu.url.rsplit(":", 1)[1]),
            context=ssl.create_default_context(cafile=self.emu.ca))
        for _ in range(3):
            conn.request("GET", "/certificates/codesign-rsa2048" + AV,
                         headers={"Authorization": "Bearer " + self.token})
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertTrue(r.getheader("Content-Length"))
            r.read()
        sock = conn.sock
        conn.request("GET", "/keys/codesign-rsa2048" + AV)
        conn.getresponse().read()                           # 401, same conn
        self.assertIs(conn.sock, sock)
        conn.close()

    # ------------------------------------------------------------ Entra
    def test_entra_errors(self):
        r = self.emu.token(secret="wrong")
        self.assertEqual(r.status, 401)
        self.assertIn("AADSTS7000215", r.json()["error_description"])
        self.assertEqual(r.json()["error_codes"], [7000215])
        r = self.emu.token(client_id="99999999-9999-9999-9999-999999999999",
                           secret="x")
        self.assertEqual(r.status, 400)
        self.assertIn("AADSTS700016", r.json()["error_description"])
        r = self.emu.token()
        self.assertEqual(r.status, 200)
        body = r.json()
        self.assertEqual(body["token_type"], "Bearer")
        self.assertIsInstance(body["expires_in"], int)
        c = jwt_claims(body["access_token"])
        self.assertEqual((c["aud"], c["appid"], c["tid"]),
                         (VAULT, self.emu.info["identities"]["secret"],
                          self.emu.tenant))

    def test_client_certificate_assertion(self):
        with open(self.emu.info["client_cert"], "rb") as f:
            pem = f.read()
        key = serialization.load_pem_private_key(pem, None)
        cert = x509.load_pem_x509_certificate(pem)
        cid = self.emu.info["identities"]["certificate"]
        endpoint = "%s/%s/oauth2/v2.0/token" % (self.emu.url, self.emu.tenant)

        def assertion(aud, alg="PS256"):
            der = cert.public_bytes(serialization.Encoding.DER)
            if alg == "PS256":
                hdr = {"alg": alg, "typ": "JWT",
                       "x5t#S256": b64url(hashlib.sha256(der).digest())}
                pad = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
            else:
                hdr = {"alg": alg, "typ": "JWT",
                       "x5t": b64url(hashlib.sha1(der).digest())}
                pad = padding.PKCS1v15()
            t = int(time.time())
            claims = {"aud": aud, "iss": cid, "sub": cid, "jti": "1",
                      "nbf": t, "iat": t, "exp": t + 600}
            si = (b64url(json.dumps(hdr).encode()) + "." +
                  b64url(json.dumps(claims).encode()))
            return si + "." + b64url(key.sign(si.encode(), pad,
                                              hashes.SHA256()))
        form = {"client_assertion_type":
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
        for alg in ("PS256", "RS256"):
            r = self.emu.token(client_id=cid, client_assertion=assertion(
                endpoint, alg), **form)
            self.assertEqual(r.status, 200, r)
            tok = r.json()["access_token"]
            self.assertEqual(self.emu.request(
                "GET", "/certificates/codesign-rsa2048" + AV,
                token=tok).status, 200)
        r = self.emu.token(client_id=cid, client_assertion=assertion(
            "https://login.microsoftonline.com/x/oauth2/v2.0/token"), **form)
        self.assertEqual(r.status, 400)

    def test_github_oidc_federated_exchange(self):
        i = self.emu.info
        r = self.emu.request("GET", i["github_token_url"] +
                             "&audience=api%3A%2F%2FAzureADTokenExchange")
        self.assertEqual(r.status, 401)                      # no request token
        r = self.emu.request(
            "GET", i["github_token_url"] +
            "&audience=api%3A%2F%2FAzureADTokenExchange",
            headers={"Authorization": "Bearer " +
                     self.emu.read("github-request-token.txt"),
                     "Accept": "application/json"})
        self.assertEqual(r.status, 200)
        gh = r.json()["value"]
        c = jwt_claims(gh)
        self.assertEqual((c["iss"], c["sub"], c["aud"]),
                         ("https://token.actions.githubusercontent.com",
                          "repo:contoso/app:ref:refs/heads/main",
                          "api://AzureADTokenExchange"))
        form = {"client_assertion_type":
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
        fed = i["identities"]["federated"]
        r = self.emu.token(client_id=fed, client_assertion=gh, **form)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.emu.request(
            "GET", "/certificates/codesign-rsa2048" + AV,
            token=r.json()["access_token"]).status, 200)
        bad = self.emu.mint_federated(sub="repo:contoso/app:ref:refs/heads/dev")
        r = self.emu.token(client_id=fed, client_assertion=bad, **form)
        self.assertEqual(r.status, 400)
        desc = r.json()["error_description"]
        self.assertIn("AADSTS70021", desc)
        self.assertIn("Assertion Issuer: 'https://token.actions."
                      "githubusercontent.com'", desc)
        self.assertIn("Assertion Subject: 'repo:contoso/app:ref:refs/heads/"
                      "dev'", desc)
        old = self.emu.mint_federated(lifetime=-600)
        r = self.emu.token(client_id=fed, client_assertion=old, **form)
        self.assertIn("AADSTS700024", r.json()["error_description"])

    # -------------------------------------------------- managed identity
    def test_imds_and_app_service(self):
        base = self.emu.http_url
        url = (base + "/metadata/identity/oauth2/token?api-version=2018-02-01"
               "&resource=" + urllib.parse.quote(VAULT, safe=""))
        r = self.emu.request("GET", url)
        self.assertEqual(r.status, 400)
        self.assertIn("metadata header", r.json()["error_description"])
        r = self.emu.request("GET", url, headers={"Metadata": "true"})
        self.assertEqual(r.status, 200)
        body = r.json()
        for k in ("expires_in", "expires_on", "not_before"):
            self.assertIsInstance(body[k], str, k)
        self.assertEqual(self.emu.request(
            "GET", "/certificates/codesign-rsa2048" + AV,
            token=body["access_token"]).status, 200)
        url = (self.emu.info["identity_endpoint"] + "?api-version=2019-08-01"
               "&resource=" + urllib.parse.quote(VAULT, safe=""))
        self.assertNotEqual(self.emu.request("GET", url).status, 200)
        r = self.emu.request("GET", url, headers={
            "X-IDENTITY-HEADER": self.emu.read("identity-header.txt")})
        self.assertEqual(r.status, 200)
        self.assertIsInstance(r.json()["expires_on"], str)
        self.assertEqual(jwt_claims(r.json()["access_token"])["appid"],
                         self.emu.info["identities"]["managed"])

    def test_fake_az_cli(self):
        r = subprocess.run([self.emu.info["az"], "account", "get-access-token",
                            "--output", "json", "--resource", VAULT],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertIsInstance(out["expires_on"], int)
        self.assertRegex(out["expiresOn"],
                         r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
        self.assertEqual(self.emu.request(
            "GET", "/keys/codesign-rsa2048" + AV,
            token=out["accessToken"]).status, 200)

    # --------------------------------------------------------------- log
    def test_log_has_no_secrets(self):
        self.emu.token()
        self.emu.token(secret="wrong")
        self.emu.request("GET", "/certificates/codesign-rsa2048" + AV,
                         token=self.token)
        with open(self.emu.info["log"]) as f:
            text = f.read()
        self.assertEqual(json.loads(json.dumps(self.emu.log())),
                         [json.loads(x) for x in text.splitlines()])
        for secret in (self.emu.read("client-secret.txt"), "wrong",
                       self.token.split(".")[2],
                       self.emu.read("github-request-token.txt")):
            self.assertNotIn(secret, text)
        self.assertNotIn("client_secret", text)


class ManagedHsmEmulatorTest(unittest.TestCase):
    def test_managed_hsm_mode(self):
        with Emulator(mode="managedhsm") as emu:
            self.assertEqual(emu.info["resource"], MHSM)
            r = emu.request("GET", "/keys/codesign-rsa2048" + AV)
            self.assertEqual(r.status, 401)
            self.assertIn('resource="%s"' % MHSM,
                          r.headers["WWW-Authenticate"])
            self.assertIn("(Activity ID: ", r.json()["error"]["message"])
            vault_token = emu.access_token(resource=VAULT)
            r = emu.request("GET", "/keys/codesign-rsa2048" + AV,
                            token=vault_token)
            self.assertEqual(r.status, 401)
            self.assertIn("AKV10022", r.json()["error"]["message"])
            token = emu.access_token(resource=MHSM)
            self.assertEqual(jwt_claims(token)["aud"], MHSM)
            r = emu.request("GET", "/certificates/codesign-rsa2048" + AV,
                            token=token)
            self.assertEqual(r.status, 404)
            r = emu.request("GET", "/keys/codesign-rsa2048/" + AV,
                            token=token)
            self.assertEqual(r.status, 200)
            key = r.json()["key"]
            self.assertEqual(key["kty"], "RSA-HSM")
            self.assertNotIn("managed", r.json())
            d = hashlib.sha256(b"hsm").digest()
            r = emu.request("POST", key["kid"] + "/sign" + AV,
                            {"alg": "RS256", "value": b64url(d)}, token=token)
            self.assertEqual(r.status, 200, r)
            load_leaf(emu, "codesign-rsa2048").public_key().verify(
                b64url_decode(r.json()["value"]), b"hsm", padding.PKCS1v15(),
                hashes.SHA256())
            nosign = emu.access_token(
                client_id=emu.info["identities"]["nosign"],
                secret=emu.read("client-secret-nosign.txt"), resource=MHSM)
            r = emu.request("POST", key["kid"] + "/sign" + AV,
                            {"alg": "RS256", "value": b64url(d)}, token=nosign)
            self.assertEqual(r.status, 403)
            self.assertIn("Microsoft.KeyVault/managedHsm/keys/sign/action",
                          r.json()["error"]["message"])


class LifecycleTest(unittest.TestCase):
    def test_exits_on_stdin_eof_and_sigterm(self):
        emu = Emulator(config={"keys": ["codesign-ec256"],
                               "github": {"subject": "repo:o/r:pull_request"},
                               "knobs": {"latency_ms": 1}})
        emu.start()
        try:
            self.assertEqual(emu.info["keys"], ["codesign-ec256"])
            self.assertEqual(emu.config()["latency_ms"], 1)
            r = emu.request("GET", emu.info["github_token_url"], headers={
                "Authorization": "Bearer " +
                emu.read("github-request-token.txt")})
            r = emu.token(client_id=emu.info["identities"]["federated"],
                          client_assertion=r.json()["value"],
                          client_assertion_type="urn:ietf:params:oauth:"
                          "client-assertion-type:jwt-bearer")
            self.assertIn("Assertion Subject: 'repo:o/r:pull_request'",
                          r.json()["error_description"])
            proc = emu.proc
            proc.stdin.close()                     # parent "dies"
            self.assertEqual(proc.wait(10), 0)
        finally:
            emu.stop()
        emu = Emulator(config={"keys": ["codesign-ec256"]})
        emu.start()
        try:
            os.kill(emu.proc.pid, signal.SIGTERM)
            self.assertEqual(emu.proc.wait(10), 0)
        finally:
            emu.stop()


if __name__ == "__main__":
    unittest.main()
