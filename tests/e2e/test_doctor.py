"""`hsmsign doctor` against the local Key Vault emulator and TSA.

Each failure the doctor diagnoses is provoked for real (a denied data
action, a wrong secret, a federated subject that does not match, an
incomplete chain, a dead TSA) and the checklist must name its fix.
"""
import os
import sys

from hslib import HSMSIGN, HsTestCase, free_port, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "servers"))
from emu_client import Emulator  # noqa: E402
from tsa_client import Tsa  # noqa: E402

SECRET_ID = "11111111-1111-1111-1111-111111111111"
FEDERATED_ID = "33333333-3333-3333-3333-333333333333"
NOSIGN_ID = "55555555-5555-5555-5555-555555555555"
SCRUB = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
         "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
         "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
         "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
         "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def closed_port_url():
    """An http URL on loopback where nothing listens."""
    return "http://127.0.0.1:%d" % free_port()


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class DoctorCase(HsTestCase):
    CONFIG = {"keys": ["codesign-rsa2048"]}
    MODE = "vault"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu = Emulator(mode=cls.MODE, config=cls.CONFIG)
        cls.emu.__enter__()
        cls.info = cls.emu.info
        cls.tsa = Tsa().start()

    @classmethod
    def tearDownClass(cls):
        cls.tsa.stop()
        cls.emu.__exit__(None, None, None)

    def setUp(self):
        super().setUp()
        self.emu.reset()

    def env(self, **extra):
        env = {k: "" for k in SCRUB}
        env.update({"AZURE_AUTHORITY_HOST": self.info["https"],
                    "SSL_CERT_FILE": self.info["tls_ca"],
                    "IMDS_ENDPOINT": closed_port_url(),
                    "AZURE_CLI_PATH": self.path("no-az"),
                    "XDG_CACHE_HOME": self.path("cache"),
                    "HSMSIGN_HTTP_BACKOFF_MS": "5"})
        env.update(extra)
        return env

    def doctor(self, *args, client=SECRET_ID, secret_file=None, env=None,
               name="codesign-rsa2048"):
        auth = []
        if client is not None:
            auth = ["-kvi", client, "-kvt", self.info["tenant"], "-kvs",
                    "file:" + (secret_file or self.info["client_secret_file"])]
        r = run([HSMSIGN, "doctor", "-kvu", self.info["https"], "--name", name,
                 "--roots", self.info["root"], *auth, *args],
                env=env if env is not None else self.env())
        return r, r.stdout.decode(), r.stderr.decode()

    def check_line(self, out, name):
        for line in out.splitlines():
            if line[7:].startswith(name + " "):
                return line
        self.fail("no %r check in:\n%s" % (name, out))

    def assertCheck(self, out, name, state):
        line = self.check_line(out, name)
        self.assertTrue(line.startswith("[%-4s]" % state), "%s\n---\n%s" % (line, out))


class DoctorTest(DoctorCase):
    def test_all_good(self):
        r, out, err = self.doctor("-tr", self.tsa.url("ok"))
        self.assertRc(r, 0)
        for name in ("credential", "vault", "certificate", "validity", "expiry",
                     "codeSigning", "chain", "clock", "sign test", "timestamp"):
            self.assertCheck(out, name, "ok")
        self.assertIn("source 'secret' gave a token", out)
        self.assertIn("1 sign transaction", out)
        self.assertIn("Everything hsmsign needs to sign works.", out)
        self.assertRegex(self.check_line(out, "clock"), r"[+-]\d+ s from the vault's clock")
        # The emulator's keys are software keys: flagged, not failed.
        self.assertCheck(out, "HSM key", "WARN")
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 1)
        self.assertEqual(self.tsa.count("ok"), 1)
        self.assertEqual(err, "")

    def test_denied_sign_names_the_data_action(self):
        r, out, _ = self.doctor(client=NOSIGN_ID,
                                secret_file=self.info["nosign_secret_file"])
        self.assertRc(r, 1)
        self.assertCheck(out, "certificate", "ok")
        self.assertCheck(out, "sign test", "FAIL")
        self.assertIn("Microsoft.KeyVault/vaults/keys/sign/action", out)
        self.assertIn("Checklist:", out)
        self.assertIn("[FAIL] sign test: the identity needs keys/sign/action", out)

    def test_denied_certificate_read(self):
        self.emu.config(deny_actions=["Microsoft.KeyVault/vaults/certificates/read"])
        r, out, _ = self.doctor()
        self.assertRc(r, 1)
        self.assertCheck(out, "credential", "ok")
        self.assertCheck(out, "certificate", "FAIL")
        self.assertIn("certificates/read", self.check_line(out, "certificate"))
        self.assertIn("'hsmsign vault role'", out)
        self.assertEqual(self.emu.count("POST", "/keys/"), 0)

    def test_wrong_secret(self):
        bad = self.path("bad-secret")
        with open(bad, "w") as f:
            f.write("not-the-secret\n")
        r, out, _ = self.doctor(secret_file=bad)
        self.assertRc(r, 1)
        self.assertCheck(out, "credential", "FAIL")
        self.assertCheck(out, "certificate", "skip")
        self.assertNotIn("not-the-secret", out)

    def test_missing_certificate(self):
        r, out, _ = self.doctor(name="no-such-cert")
        self.assertRc(r, 1)
        self.assertCheck(out, "certificate", "FAIL")
        self.assertIn("CertificateNotFound", out)
        self.assertIn("'hsmsign vault csr'", out)

    def test_incomplete_chain_and_dead_tsa(self):
        dead = closed_port_url()
        r, out, _ = self.doctor("--no-aia", "-tr", dead, "-tr", self.tsa.url("ok"))
        self.assertRc(r, 1)
        self.assertCheck(out, "chain", "FAIL")
        self.assertIn("incomplete", self.check_line(out, "chain"))
        lines = [l for l in out.splitlines() if l[7:].startswith("timestamp ")]
        self.assertEqual(len(lines), 2, out)
        self.assertTrue(lines[0].startswith("[FAIL]"), lines[0])
        self.assertIn(dead, lines[0])
        self.assertTrue(lines[1].startswith("[ok  ]"), lines[1])
        self.assertIn("-ac", out)

    def test_no_sign_test_costs_no_transaction(self):
        r, out, _ = self.doctor("--no-sign-test")
        self.assertRc(r, 0)
        self.assertCheck(out, "sign test", "skip")
        self.assertEqual(self.emu.count("POST", "/keys/"), 0)

    def test_vault_unreachable(self):
        r = run([HSMSIGN, "doctor", "-kvu", closed_port_url(), "--name", "x",
                 "-kvi", SECRET_ID, "-kvt", "t", "-kvs",
                 "file:" + self.info["client_secret_file"]], env=self.env())
        out = r.stdout.decode()
        self.assertRc(r, 1)
        self.assertCheck(out, "vault", "FAIL")
        self.assertIn("firewall", out)

    def test_usage_errors(self):
        r = run([HSMSIGN, "doctor", "--name", "x"], env=self.env())
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)


class DoctorManagedHsmTest(DoctorCase):
    """A Managed HSM has keys but no /certificates endpoint: the doctor must
    ask for the certificate the way sign takes it (--cert, -ac), not send
    the user to fix a vault certificate."""
    MODE = "managedhsm"

    def test_without_certificate_names_the_cert_options(self):
        r, out, _ = self.doctor("--azure-managed-hsm")
        self.assertRc(r, 1)
        self.assertIn("(Managed HSM), key 'codesign-rsa2048'", out)
        self.assertCheck(out, "certificate", "FAIL")
        self.assertIn("no certificate store", self.check_line(out, "certificate"))
        self.assertIn("[FAIL] certificate: give the signing certificate with --cert FILE "
                      "and its intermediates with -ac FILE", out)
        self.assertNotIn("vault csr", out)
        self.assertCheck(out, "sign test", "skip")
        # Nothing was asked of an endpoint the HSM does not have.
        self.assertEqual(self.emu.count("GET", "/certificates/"), 0)
        self.assertEqual(self.emu.count("POST", "/keys/"), 0)

    def test_with_certificate_signs_once(self):
        r, out, err = self.doctor("--azure-managed-hsm", "--cert",
                                  self.emu.leaf("codesign-rsa2048"),
                                  "-tr", self.tsa.url("ok"))
        self.assertRc(r, 0)
        self.assertCheck(out, "certificate", "ok")
        self.assertCheck(out, "sign test", "ok")
        self.assertCheck(out, "timestamp", "ok")
        self.assertIn("Everything hsmsign needs to sign works.", out)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 1)
        self.assertEqual(self.emu.count("GET", "/certificates/"), 0)
        self.assertEqual(err, "")

    def test_denied_sign_names_the_hsm_role(self):
        self.emu.config(deny_actions=[
            "Microsoft.KeyVault/managedHsm/keys/sign/action"])
        r, out, _ = self.doctor("--azure-managed-hsm", "--cert",
                                self.emu.leaf("codesign-rsa2048"))
        self.assertRc(r, 1)
        self.assertCheck(out, "sign test", "FAIL")
        self.assertIn("[FAIL] sign test: the identity needs the Managed HSM local RBAC "
                      "role 'Managed HSM Crypto User'", out)

    def test_hsm_url_without_the_flag_gets_the_hint(self):
        # A loopback URL is not recognised as a Managed HSM by its name:
        # the vault path runs, fails on /certificates, and the fix says
        # what to do for an HSM.
        r, out, _ = self.doctor()
        self.assertRc(r, 1)
        self.assertCheck(out, "certificate", "FAIL")
        self.assertIn("add --azure-managed-hsm and give the certificate with --cert FILE",
                      out)


class DoctorFederatedTest(DoctorCase):
    """A GitHub federated credential whose subject does not match."""
    CONFIG = {"keys": ["codesign-rsa2048"],
              "github": {"subject": "repo:contoso/app:ref:refs/heads/feature"}}

    def test_federated_subject_mismatch(self):
        env = self.env(ACTIONS_ID_TOKEN_REQUEST_URL=self.info["github_token_url"],
                       ACTIONS_ID_TOKEN_REQUEST_TOKEN=read(
                           self.info["github_request_token_file"]),
                       AZURE_CLIENT_ID=FEDERATED_ID, AZURE_TENANT_ID=self.info["tenant"])
        r, out, _ = self.doctor("-kvm", client=None, env=env)
        self.assertRc(r, 1)
        self.assertCheck(out, "credential", "FAIL")
        self.assertIn("AADSTS70021", out)
        self.assertIn("repo:contoso/app:ref:refs/heads/feature", out)
        self.assertIn("federated credential's subject", out)
        self.assertNotIn(read(self.info["github_request_token_file"]), out)
