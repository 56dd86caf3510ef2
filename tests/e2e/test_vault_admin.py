"""`hsmsign vault csr|merge|show|role` against the local Key Vault emulator.

The test plays the CA: it issues the certificate for the vault's CSR with
the committed test PKI (tests/fixtures/pki), then the merged certificate
signs a PE file that hsmsign, osslsigncode and sbverify verify.
"""
import base64
import datetime
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from hslib import (HSMSIGN, HsTestCase, ROOT_CA, lines, osslsigncode_verify, pki,
                   run, sbverify)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "servers"))
from emu_client import SharedEmulator  # noqa: E402

SECRET_ID = "11111111-1111-1111-1111-111111111111"
NOSIGN_ID = "55555555-5555-5555-5555-555555555555"
SIGNER_ID = "77777777-7777-7777-7777-777777777777"
SIGNER_SECRET = "signer-only-test-secret"
# What `vault role` prints, without the Microsoft.KeyVault/vaults/ prefix.
SIGNER_ACTIONS = ["certificates/read", "keys/sign"]
ADMIN_ACTIONS = ["keys/sign", "keys/read", "certificates/read", "certificates/create",
                 "certificates/update", "certificates/delete"]
SCRUB = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
         "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
         "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
         "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
         "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
SUBJECT = "CN=Contoso Test Signing, O=Contoso Ltd, C=US"
SUBJECT_NAME = x509.Name.from_rfc4514_string("CN=Contoso Test Signing,O=Contoso Ltd,C=US")


def load_pem_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def load_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def issue(public_key, subject, eku=True):
    """The test CA (fixtures intermediate) issues a code-signing leaf."""
    ca = load_cert(pki("intermediate.pem"))
    t0 = datetime.datetime.utcnow() - datetime.timedelta(days=1)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
         .public_key(public_key).serial_number(x509.random_serial_number())
         .not_valid_before(t0).not_valid_after(t0 + datetime.timedelta(days=200))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                      False, False), True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                            False)
    return b.sign(load_pem_key(pki("intermediate.key")), hashes.SHA256())


class VaultCase(SharedEmulator, HsTestCase):
    """One emulator per class; the CA-side helpers."""

    CONFIG = {
        "keys": ["codesign-rsa2048"],
        "identities": [
            {"client_id": SECRET_ID, "actions": ADMIN_ACTIONS},
            {"client_id": SIGNER_ID, "name": "signer", "secret": SIGNER_SECRET,
             "actions": SIGNER_ACTIONS}]}

    def env(self):
        env = {k: "" for k in SCRUB}
        env.update({"AZURE_AUTHORITY_HOST": self.info["https"],
                    "SSL_CERT_FILE": self.info["tls_ca"],
                    "IMDS_ENDPOINT": "http://127.0.0.1:9",
                    "AZURE_CLI_PATH": self.path("no-az"),
                    "XDG_CACHE_HOME": self.path("cache"),
                    "HSMSIGN_HTTP_BACKOFF_MS": "20"})
        return env

    def auth(self, client=SECRET_ID, secret_file=None):
        if secret_file is None:
            secret_file = self.info["client_secret_file"]
        return ["-kvu", self.info["https"], "-kvi", client, "-kvt", self.info["tenant"],
                "-kvs", "file:" + secret_file]

    def vault(self, sub, *args, name="release", client=SECRET_ID, secret_file=None):
        return run([HSMSIGN, "vault", sub, *self.auth(client, secret_file), "--name", name,
                    *args], env=self.env())

    def csr(self, *args, name="release"):
        out = self.path("%s.csr" % name)
        r = self.vault("csr", "--subject", SUBJECT, "-o", out, *args, name=name)
        self.assertRc(r, 0, "vault csr")
        with open(out, "rb") as f:
            return x509.load_pem_x509_csr(f.read())

    def write_answer(self, cert, name="answer.pem", der=False):
        path = self.path(name)
        with open(path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.DER if der else
                                      serialization.Encoding.PEM))
        return path

    def log(self, method, suffix):
        """Authenticated requests (not the challenge round trips)."""
        return [e for e in self.emu.log() if e["method"] == method and
                e["path"].endswith(suffix) and e["bearer"]]


class VaultAdminTest(VaultCase):
    def test_csr_merge_show_sign(self):
        req = self.csr()
        self.assertEqual(req.subject.rfc4514_string(),
                         SUBJECT_NAME.rfc4514_string())
        self.assertIsInstance(req.public_key(), rsa.RSAPublicKey)
        self.assertEqual(req.public_key().key_size, 3072)
        policy = self.log("POST", "/certificates/release/create")[0]["policy"]
        self.assertEqual(policy, {"kty": "RSA-HSM", "size": 3072, "exportable": False,
                                  "ekus": ["1.3.6.1.5.5.7.3.3"],
                                  "key_usage": ["digitalSignature"]})
        leaf = issue(req.public_key(), req.subject)
        # Intermediate first, as DER: merge sorts the chain itself.
        inter = self.write_answer(load_cert(pki("intermediate.pem")), "ca.cer", der=True)
        answer = self.write_answer(leaf)
        self.assertRc(self.vault("merge", inter, answer), 0, "vault merge")
        merges = self.log("POST", "/certificates/release/pending/merge")
        self.assertEqual([m["x5c"] for m in merges], [[
            SUBJECT_NAME.rfc4514_string(),
            load_cert(pki("intermediate.pem")).subject.rfc4514_string()]])
        r = self.vault("show", "--roots", ROOT_CA, "-ac", pki("intermediate.pem"))
        self.assertRc(r, 0, "vault show")
        out = r.stdout.decode()
        self.assertIn("RSA-HSM 3072 (HSM, not exportable)", out)
        self.assertIn("codeSigning", out)
        self.assertIn("chain        complete: Contoso Test Signing <- hsmsign Test "
                      "Intermediate CA <- hsmsign Test Root CA", out)
        self.assertIn(format(leaf.serial_number, "X"), out.replace(" ", ""))
        exe = self.copy("hello64.exe")
        r = run([HSMSIGN, "sign", *self.auth(), "-kvc", "release", "-ac",
                 pki("intermediate.pem"), exe], env=self.env())
        self.assertRc(r, 0, "sign with the merged certificate")
        self.assertRc(run([HSMSIGN, "verify", "--ca-file", ROOT_CA, exe]), 0)
        ok, text = osslsigncode_verify(exe)
        self.assertTrue(ok, text)
        ok, text = sbverify(exe)
        self.assertTrue(ok, text)

    def test_show_reports_incomplete_chain(self):
        req = self.csr()
        self.assertRc(self.vault("merge", self.write_answer(issue(req.public_key(),
                                                                  req.subject))), 0)
        r = self.vault("show", "--roots", ROOT_CA, "--no-aia")
        self.assertRc(r, 0)
        self.assertIn("chain        incomplete:", r.stdout.decode())

    def test_merge_pkcs7_answer(self):
        for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
            name = "p7-" + encoding.name.lower()
            req = self.csr(name=name)
            leaf = issue(req.public_key(), req.subject)
            p7 = pkcs7.serialize_certificates([load_cert(pki("intermediate.pem")), leaf],
                                              encoding)
            path = self.path(name + ".p7b")
            with open(path, "wb") as f:
                f.write(p7)
            self.assertRc(self.vault("merge", path, name=name), 0, "merge " + name)
            self.assertEqual(len(self.log("POST", "/%s/pending/merge" % name)), 1)

    def test_csr_refuses_pending_then_cancel(self):
        self.csr()
        r = self.vault("csr", "--subject", SUBJECT, "-o", self.path("again.csr"))
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertIn("--cancel-pending", r.stderr.decode())
        self.assertFalse(os.path.exists(self.path("again.csr")))
        self.csr("--cancel-pending", "--key-type", "EC-HSM", "--curve", "P-384")
        self.assertEqual(len(self.log("PATCH", "/certificates/release/pending")), 1)
        self.assertEqual(len(self.log("DELETE", "/certificates/release/pending")), 1)
        policy = self.log("POST", "/create")[-1]["policy"]
        self.assertEqual((policy["kty"], policy["size"]), ("EC-HSM", "P-384"))

    def test_merge_refuses_certificate_for_another_key(self):
        self.csr()
        other = load_pem_key(pki("leaf-rsa2048.key")).public_key()
        answer = self.write_answer(issue(other, SUBJECT_NAME))
        r = self.vault("merge", answer)
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertIn("public key of the pending CSR", r.stderr.decode())
        self.assertEqual(self.log("POST", "/pending/merge"), [])

    def test_merge_without_pending_request(self):
        answer = self.write_answer(load_cert(pki("leaf-rsa2048.pem")))
        r = self.vault("merge", answer, name="nothing-pending")
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn("PendingCertificateNotFound", r.stderr.decode())

    def test_merge_rejects_non_certificate(self):
        self.csr()
        junk = self.path("junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        r = self.vault("merge", junk)
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn("no certificate in it", r.stderr.decode())

    def test_bad_csr_arguments(self):
        for args, needle in ((["--key-type", "DSA"], "key type"),
                             (["--key-size", "1024"], "RSA key size"),
                             (["--subject", "O=No Common Name"], "subject")):
            extra = args if args[0] == "--subject" else ["--subject", SUBJECT, *args]
            r = self.vault("csr", *extra)
            self.assertRc(r, 87, str(args))
            self.assertOneErrorLine(r)
            self.assertIn(needle, r.stderr.decode())
        self.assertEqual(self.log("POST", "/create"), [])

    def test_csr_denied_names_the_data_action(self):
        r = self.vault("csr", "--subject", SUBJECT, client=NOSIGN_ID,
                       secret_file=self.info["nosign_secret_file"])
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn("Microsoft.KeyVault/vaults/certificates/create/action",
                      r.stderr.decode())

    def test_secret_on_command_line_refused(self):
        r = run([HSMSIGN, "vault", "show", "-kvu", self.info["https"], "--name", "x",
                 "-kvi", SECRET_ID, "-kvs", "literal-secret-value"], env=self.env())
        self.assertRc(r, 87)
        self.assertNotIn("literal-secret-value", (r.stdout + r.stderr).decode())


class EmulatorCsrProtocolTest(VaultCase):
    """The emulator's CSR workflow on the wire (protocols.md 1.e), so that the
    CLI tests above test hsmsign against the documented protocol."""
    AV = "?api-version=2025-07-01"
    POLICY = {"policy": {"key_props": {"exportable": False, "kty": "EC-HSM",
                                       "crv": "P-256", "reuse_key": False},
                         "secret_props": {"contentType": "application/x-pkcs12"},
                         "x509_props": {"subject": "CN=Proto", "ekus": ["1.3.6.1.5.5.7.3.3"],
                                        "key_usage": ["digitalSignature"],
                                        "validity_months": 12},
                         "issuer": {"name": "Unknown"}},
              "attributes": {"enabled": True}}

    def test_create_pending_merge_cancel_delete(self):
        tok = self.emu.access_token()
        req = self.emu.request
        r = req("POST", "/certificates/proto/create" + self.AV, self.POLICY, token=tok)
        self.assertEqual(r.status, 202)
        self.assertIn("/certificates/proto/pending?api-version=2025-07-01&request_id=",
                      r.headers["Location"])
        op = r.json()
        self.assertEqual((op["status"], op["issuer"]["name"], op["cancellation_requested"]),
                         ("inProgress", "Unknown", False))
        csr = x509.load_der_x509_csr(base64.b64decode(op["csr"]))
        self.assertEqual(req("GET", "/certificates/proto/pending" + self.AV,
                             token=tok).json()["csr"], op["csr"])
        self.assertEqual(req("POST", "/certificates/proto/create" + self.AV, self.POLICY,
                             token=tok).status, 409)
        wrong = issue(load_pem_key(pki("leaf-ec256.key")).public_key(), csr.subject)
        b64 = base64.b64encode
        r = req("POST", "/certificates/proto/pending/merge" + self.AV,
                {"x5c": [b64(wrong.public_bytes(serialization.Encoding.DER)).decode()]},
                token=tok)
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, "BadParameter"))
        r = req("PATCH", "/certificates/proto/pending" + self.AV,
                {"cancellation_requested": True}, token=tok)
        self.assertEqual((r.status, r.json()["status"]), (200, "cancelled"))
        self.assertEqual(req("DELETE", "/certificates/proto/pending" + self.AV,
                             token=tok).status, 200)
        r = req("GET", "/certificates/proto/pending" + self.AV, token=tok)
        self.assertEqual((r.status, r.json()["error"]["code"]),
                         (404, "PendingCertificateNotFound"))
        r = req("POST", "/certificates/proto/create" + self.AV, self.POLICY, token=tok)
        self.assertEqual(r.status, 202)
        csr = x509.load_der_x509_csr(base64.b64decode(r.json()["csr"]))
        good = issue(csr.public_key(), csr.subject)
        r = req("POST", "/certificates/proto/pending/merge" + self.AV,
                {"x5c": [b64(good.public_bytes(serialization.Encoding.DER)).decode()]},
                token=tok)
        self.assertEqual(r.status, 201)
        self.assertEqual(r.json()["policy"]["key_props"]["kty"], "EC-HSM")
        r = req("GET", "/certificates/proto" + self.AV, token=tok)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["cer"], b64(good.public_bytes(
            serialization.Encoding.DER)).decode())


class VaultRoleTest(VaultCase):
    """The role `vault role` prints is enough to sign, and nothing more."""

    def test_role_json_is_what_signing_uses(self):
        r = run([HSMSIGN, "vault", "role", "--json", "--scope", "/subscriptions/s/"
                 "resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"])
        self.assertRc(r, 0)
        role = json.loads(r.stdout)
        self.assertEqual(role["Actions"], [])
        self.assertEqual(sorted(role["DataActions"]),
                         sorted("Microsoft.KeyVault/vaults/" + a + ("/action" if a ==
                                "keys/sign" else "") for a in SIGNER_ACTIONS))
        self.assertEqual(role["AssignableScopes"], ["/subscriptions/s/resourceGroups/rg/"
                                                    "providers/Microsoft.KeyVault/vaults/kv"])
        # An identity holding exactly these data actions signs.
        secret = self.path("signer-secret")
        with open(secret, "w") as f:
            f.write(SIGNER_SECRET)
        exe = self.copy("hello64.exe")
        r = run([HSMSIGN, "sign", *self.auth(SIGNER_ID, secret), "-kvc", "codesign-rsa2048",
                 exe], env=self.env())
        self.assertRc(r, 0, "sign with the minimal role")
        self.assertRc(run([HSMSIGN, "verify", "--ca-file", self.info["root"], exe]), 0)

    def test_admin_role_covers_the_provisioning_calls(self):
        r = run([HSMSIGN, "vault", "role", "--json", "--admin"])
        self.assertRc(r, 0)
        actions = json.loads(r.stdout)["DataActions"]
        for needed in ("certificates/create/action", "certificates/read",
                       "certificates/update/action", "certificates/delete"):
            self.assertIn("Microsoft.KeyVault/vaults/" + needed, actions)
        self.assertNotIn("Microsoft.KeyVault/vaults/keys/sign/action", actions)

    def test_role_script_with_federated_credential(self):
        r = run([HSMSIGN, "vault", "role", "--github-repo", "contoso/app", "--app-id",
                 "33333333-3333-3333-3333-333333333333"])
        self.assertRc(r, 0)
        out = r.stdout.decode()
        self.assertIn("az role definition create --role-definition @hsmsign-role.json", out)
        self.assertIn("az role assignment create --role \"hsmsign Code Signer\"", out)
        self.assertIn('"subject": "repo:contoso/app:ref:refs/heads/main"', out)
        self.assertIn('"audiences": ["api://AzureADTokenExchange"]', out)
        r = run([HSMSIGN, "vault", "role", "--github-repo", "contoso/app",
                 "--github-environment", "release"])
        self.assertIn("repo:contoso/app:environment:release", r.stdout.decode())

    def test_role_refuses_shell_metacharacters(self):
        r = run([HSMSIGN, "vault", "role", "--github-repo", "a/b';rm -rf ~;'"])
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertEqual(lines(r.stdout), [])

