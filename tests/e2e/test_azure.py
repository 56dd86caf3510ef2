"""Azure Key Vault signing end to end, against the local emulator.

Every endpoint is the emulator on 127.0.0.1 (tests/servers/azure_emu.py):
the vault, Entra ID, GitHub's OIDC endpoint, App Service and IMDS managed
identity. IMDS_ENDPOINT always points at the emulator or at a closed local
port, so the credential chain never probes the real metadata address.
"""
import json
import os
import sys
import time
import unittest
import urllib.parse
import urllib.request
import ssl

from hslib import (HSMSIGN, HsTestCase, free_port, lines, osslsigncode_verify, run, sbverify,
                   sha256_file, signature_count)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "servers"))
from emu_client import SharedEmulator  # noqa: E402

SECRET_ID = "11111111-1111-1111-1111-111111111111"
CERT_ID = "22222222-2222-2222-2222-222222222222"
GITHUB_ID = "33333333-3333-3333-3333-333333333333"
MI_ID = "44444444-4444-4444-4444-444444444444"
NOSIGN_ID = "55555555-5555-5555-5555-555555555555"

# Variables that would change which credential the chain picks.
SCRUB = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
         "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_CERTIFICATE_PASSWORD",
         "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
         "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
         "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
         "SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def closed_port_url():
    """An http URL on loopback where nothing listens."""
    return "http://127.0.0.1:%d" % free_port()


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class AzureCase(SharedEmulator, HsTestCase):
    def env(self, **extra):
        """A clean environment: nothing from the host, everything local."""
        env = {k: "" for k in SCRUB}
        env.update({
            "AZURE_AUTHORITY_HOST": self.info["https"],
            "SSL_CERT_FILE": self.info["tls_ca"],
            "IMDS_ENDPOINT": closed_port_url(),
            "AZURE_CLI_PATH": os.path.join(self.tmp, "no-az-here"),
            "XDG_CACHE_HOME": os.path.join(self.tmp, "cache"),
            "HSMSIGN_HTTP_BACKOFF_MS": "20",
        })
        env.update(extra)
        return env

    def sign(self, path, *args, env=None, key="codesign-rsa2048"):
        return run([HSMSIGN, "sign", "-kvu", self.info["https"], "-kvc", key,
                    *args, path], env=env if env is not None else self.env())

    def secret_args(self, client=SECRET_ID, secret_file="client-secret.txt"):
        return ["-kvi", client, "-kvt", self.info["tenant"], "-kvs",
                "file:" + os.path.join(self.state, secret_file)]

    def assertVerifies(self, path, independent=True):
        r = run([HSMSIGN, "verify", "--ca-file", self.info["root"], path])
        self.assertRc(r, 0, "hsmsign verify")
        if independent:
            ok, out = osslsigncode_verify(path, self.info["root"])
            self.assertTrue(ok, out)

    def token_for(self, client=SECRET_ID, secret_file="client-secret.txt"):
        """A vault token from the emulator's Entra endpoint (like `az`)."""
        form = urllib.parse.urlencode({
            "client_id": client, "grant_type": "client_credentials",
            "client_secret": read(os.path.join(self.state, secret_file)),
            "scope": "https://vault.azure.net/.default"}).encode()
        ctx = ssl.create_default_context(cafile=self.info["tls_ca"])
        url = "%s/%s/oauth2/v2.0/token" % (self.info["https"], self.info["tenant"])
        with urllib.request.urlopen(url, form, context=ctx) as resp:
            return json.load(resp)["access_token"]


class TestArticleWorkflow(AzureCase):
    """The seed article's pipeline, reproduced locally."""

    def test_github_actions_oidc_no_az_step(self):
        path = self.copy("nsis-stub.exe", "setup.exe")
        env = self.env(
            ACTIONS_ID_TOKEN_REQUEST_URL=self.info["https"] + "/_github/token?api-version=2.0",
            ACTIONS_ID_TOKEN_REQUEST_TOKEN=read(os.path.join(self.state,
                                                             "github-request-token.txt")),
            AZURE_CLIENT_ID=GITHUB_ID, AZURE_TENANT_ID=self.info["tenant"])
        r = self.sign(path, "--verbose", "-kvm", "-fd", "sha256", "-s", env=env)
        self.assertRc(r, 0)
        self.assertIn("github-oidc", r.stderr.decode())
        self.assertVerifies(path)
        ok, out = sbverify(path, self.info["root"])
        self.assertTrue(ok, out)
        self.assertEqual(self.emu.count("GET", "/certificates/", bearer=True), 1)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 1)

    def test_article_command_line_with_access_token(self):
        path = self.copy("hello64.exe", "app.exe")
        token = self.token_for()
        r = run([HSMSIGN, "sign", "--verbose", "-kvu", self.info["https"],
                 "-kvc", "codesign-rsa2048", "-kva", token, "-fd", "sha256", "-s", path],
                env=self.env())
        self.assertRc(r, 0)
        self.assertVerifies(path)
        out = r.stdout + r.stderr
        self.assertNotIn(token.encode(), out)
        # -s: a second run skips the signed file and signs nothing.
        before = sha256_file(path)
        self.emu.reset()
        r = run([HSMSIGN, "sign", "-kvu", self.info["https"], "-kvc", "codesign-rsa2048",
                 "-kva", "env:TOKEN", "-s", path], env=self.env(TOKEN=token))
        self.assertRc(r, 0)
        self.assertEqual(sha256_file(path), before)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 0)

    def test_one_certificate_fetch_and_one_sign_per_file(self):
        files = [self.copy(n) for n in ("hello32.exe", "hello64.exe", "lib64.dll")]
        r = run([HSMSIGN, "sign", *self.secret_args(), "-kvu", self.info["https"],
                 "-kvc", "codesign-ec256", *files], env=self.env())
        self.assertRc(r, 0)
        self.assertEqual(self.emu.count("GET", "/certificates/", bearer=True), 1)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 3)
        self.assertEqual(self.emu.count("GET", "/keys/", bearer=True), 0, "no GET key for vaults")
        for f in files:
            self.assertVerifies(f)


class TestKeyTypes(AzureCase):

    def test_rsa_and_ec_keys(self):
        cases = (("codesign-rsa2048", "sha256"), ("codesign-rsa3072", "sha384"),
                 ("codesign-rsa4096", "sha512"), ("codesign-rsa2048", "sha1"),
                 ("codesign-ec256", "sha256"), ("codesign-ec384", "sha384"))
        for key, digest in cases:
            with self.subTest(key=key, digest=digest):
                path = self.copy("hello64.exe", "%s-%s.exe" % (key, digest))
                r = self.sign(path, *self.secret_args(), "-fd", digest, key=key)
                self.assertRc(r, 0)
                self.assertVerifies(path)
                if digest == "sha256":
                    ok, out = sbverify(path, self.info["root"])
                    self.assertTrue(ok, out)

    def test_ec_key_with_mismatched_digest_is_a_clear_error(self):
        path = self.copy("hello64.exe")
        before = sha256_file(path)
        r = self.sign(path, *self.secret_args(), "-fd", "sha512", key="codesign-ec256")
        self.assertRc(r, 2)
        self.assertIn("sha256", r.stderr.decode())
        self.assertEqual(sha256_file(path), before)

    def test_chain_comes_from_aia(self):
        """The vault returns only the leaf; the intermediate comes via AIA and is cached."""
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path, *self.secret_args()), 0)
        self.assertVerifies(path)
        self.assertEqual(self.emu.count("GET", "/aia/"), 1)
        again = self.copy("hello32.exe")
        self.assertRc(self.sign(again, *self.secret_args()), 0)
        self.assertEqual(self.emu.count("GET", "/aia/"), 1, "second run uses the cache")

    def test_no_aia_with_additional_certificate(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, *self.secret_args(), "--no-aia", "-ac", self.info["intermediate"])
        self.assertRc(r, 0)
        self.assertEqual(self.emu.count("GET", "/aia/"), 0)
        self.assertVerifies(path)


class TestCredentials(AzureCase):
    """Each credential source, chosen explicitly and through the chain."""

    def signed_with(self, env, *args, source=None):
        path = self.copy("hello64.exe")
        r = self.sign(path, "-v", *args, env=env)
        self.assertRc(r, 0)
        if source:
            self.assertIn("'%s'" % source, r.stderr.decode())
        self.assertVerifies(path, independent=False)
        return r

    def test_client_secret_options(self):
        self.signed_with(self.env(), *self.secret_args(), source="secret")

    def test_environment_secret(self):
        env = self.env(AZURE_CLIENT_ID=SECRET_ID, AZURE_TENANT_ID=self.info["tenant"],
                       AZURE_CLIENT_SECRET=read(os.path.join(self.state, "client-secret.txt")))
        self.signed_with(env, "-kvm", source="secret")

    def test_environment_certificate(self):
        env = self.env(AZURE_CLIENT_ID=CERT_ID, AZURE_TENANT_ID=self.info["tenant"],
                       AZURE_CLIENT_CERTIFICATE_PATH=os.path.join(self.state, "client-cert.pem"))
        self.signed_with(env, source="certificate")

    def test_workload_identity(self):
        ctx = ssl.create_default_context(cafile=self.info["tls_ca"])
        req = urllib.request.Request(
            self.info["https"] + "/_github/token?api-version=2.0&audience=api%3A%2F%2FAzureADTokenExchange",
            headers={"Authorization": "Bearer " + read(os.path.join(self.state,
                                                                    "github-request-token.txt"))})
        with urllib.request.urlopen(req, context=ctx) as resp:
            jwt = json.load(resp)["value"]
        token_file = self.path("federated-token")
        with open(token_file, "w") as f:
            f.write(jwt)
        env = self.env(AZURE_CLIENT_ID=GITHUB_ID, AZURE_TENANT_ID=self.info["tenant"],
                       AZURE_FEDERATED_TOKEN_FILE=token_file)
        self.signed_with(env, source="workload-identity")

    def test_app_service_managed_identity(self):
        env = self.env(IDENTITY_ENDPOINT=self.info["http"] + "/msi/token",
                       IDENTITY_HEADER=read(os.path.join(self.state, "identity-header.txt")))
        self.signed_with(env, "-kvm", source="managed-identity")

    def test_imds_managed_identity(self):
        env = self.env(IMDS_ENDPOINT=self.info["http"])
        self.signed_with(env, "--azure-credential", "managed-identity",
                         source="managed-identity")

    def test_azure_cli(self):
        env = self.env(AZURE_CLI_PATH=os.path.join(self.state, "az"))
        self.signed_with(env, source="azure-cli")

    def test_chain_with_nothing_configured_fails_clearly(self):
        path = self.copy("hello64.exe")
        before = sha256_file(path)
        r = self.sign(path, "-kvm")
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertEqual(sha256_file(path), before)


class TestErrors(AzureCase):
    CONFIG = None

    def unchanged_after(self, r, rc, *words, path=None):
        self.assertRc(r, rc)
        err = r.stderr.decode()
        for w in words:
            self.assertIn(w, err)
        return err

    def test_rbac_denial_names_the_missing_action(self):
        path = self.copy("hello64.exe")
        before = sha256_file(path)
        r = self.sign(path, *self.secret_args(NOSIGN_ID, "client-secret-nosign.txt"))
        self.unchanged_after(r, 2, "Microsoft.KeyVault/vaults/keys/sign/action", "RBAC")
        self.assertEqual(sha256_file(path), before)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["cache", "hello64.exe"])

    def test_certificate_not_found_names_vault_and_certificate(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, *self.secret_args(), key="no-such-cert")
        err = self.unchanged_after(r, 87, "no-such-cert", "CertificateNotFound", "127.0.0.1")
        self.assertEqual(len(lines(r.stderr)), 1, err)

    def test_bad_client_secret(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, "-kvi", SECRET_ID, "-kvt", self.info["tenant"], "-kvs",
                      "env:WRONG", env=self.env(WRONG="not-the-secret-xyzzy"))
        err = self.unchanged_after(r, 87, "AADSTS")
        self.assertNotIn("not-the-secret-xyzzy", err)

    def test_rejected_access_token(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, "-kva", "env:T", env=self.env(T="eyJhbGciOiJub25lIn0.e30.bad"))
        self.unchanged_after(r, 87, "rejected the token")

    def test_throttled_then_successful(self):
        for retry_after in (1, None):
            with self.subTest(retry_after=retry_after):
                self.emu.reset()
                self.emu.config(throttle_next=3, throttle_retry_after=retry_after,
                                only_paths=["/keys/"])
                path = self.copy("hello64.exe", "t%s.exe" % retry_after)
                r = self.sign(path, *self.secret_args())
                self.assertRc(r, 0)
                self.assertVerifies(path, independent=False)
                statuses = [e["status"] for e in self.emu.log() if e["path"].startswith("/keys/")]
                self.assertEqual(statuses.count(429), 3, statuses)

    def test_persistent_throttling_ends_within_the_bound(self):
        self.emu.config(throttle_next=10000, throttle_retry_after=None, only_paths=["/keys/"])
        path = self.copy("hello64.exe")
        before = sha256_file(path)
        start = time.monotonic()
        r = self.sign(path, *self.secret_args(), "--http-retries", "4",
                      "--http-max-time", "5")
        elapsed = time.monotonic() - start
        self.unchanged_after(r, 2, "429")
        self.assertLess(elapsed, 15)
        self.assertEqual(sha256_file(path), before)
        self.assertLessEqual(self.emu.count("POST", "/keys/", bearer=True), 5)

    def test_file_changed_while_waiting_for_the_vault_is_not_overwritten(self):
        """Another writer touches the file while the sign request is in flight:
        hsmsign must refuse to commit rather than drop that change."""
        import subprocess
        self.emu.config(latency_ms=3000, only_paths=["/keys/"])
        path = self.copy("hello64.exe")
        env = dict(os.environ)
        env.update(self.env())
        proc = subprocess.Popen([HSMSIGN, "sign", "-kvu", self.info["https"], "-kvc",
                                 "codesign-rsa2048", *self.secret_args(), path],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # The log records a request when it is answered: once the certificate
        # (and its AIA intermediate) have been fetched, the file is hashed
        # and the 3-second sign request is in flight.
        for _ in range(500):
            if any(e["path"].startswith("/aia/") for e in self.emu.log()):
                break
            time.sleep(0.02)
        time.sleep(0.8)
        with open(path, "ab") as f:
            f.write(b"appended by someone else")
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 2, err)
        self.assertIn(b"changed while it was being signed", err)
        with open(path, "rb") as f:
            self.assertTrue(f.read().endswith(b"appended by someone else"))
        self.assertEqual(sorted(os.listdir(self.tmp)), ["cache", "hello64.exe"])

    def test_server_errors_are_retried(self):
        self.emu.config(fail_next=2, only_paths=["/keys/"])
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path, *self.secret_args()), 0)

    def test_append_signature_goes_through_the_vault(self):
        """-as is supported now (test_nested.py): the nested signature comes
        from the vault like any other, with one sign request per signature."""
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path, *self.secret_args(), "-fd", "sha1"), 0)
        before = self.emu.count("POST", "/keys/", bearer=True)
        r = self.sign(path, *self.secret_args(), "-as", "-fd", "sha256,sha384")
        self.assertRc(r, 0)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True) - before, 2)
        with open(path, "rb") as f:
            self.assertEqual(signature_count(f.read()), 3)
        self.assertVerifies(path)

    def test_vault_signs_a_two_step_request(self):
        """digest -o / sign --sign-request / attach with the key in the vault:
        the same bytes as signing in one step (RSA), one sign request."""
        one, two = self.copy("hello64.exe", "one.exe"), self.copy("hello64.exe", "two.exe")
        self.assertRc(self.sign(one, *self.secret_args(), "-q"), 0)
        req, sig = self.path("two.req"), self.path("two.sig")
        chain = self.emu.leaf("codesign-rsa2048", chain=True)
        self.assertRc(run([HSMSIGN, "digest", two, "-o", req, "--cert", chain]), 0)
        before = self.emu.count("POST", "/keys/", bearer=True)
        r = run([HSMSIGN, "sign", "-kvu", self.info["https"], "-kvc", "codesign-rsa2048",
                 *self.secret_args(), "--sign-request", req, "-o", sig], env=self.env())
        self.assertRc(r, 0)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True) - before, 1)
        self.assertRc(run([HSMSIGN, "attach", two, "--request", req, "--signature", sig]), 0)
        self.assertEqual(sha256_file(two), sha256_file(one))

    def test_secrets_never_printed(self):
        secret = read(os.path.join(self.state, "client-secret.txt"))
        token = self.token_for()
        for verbosity in ([], ["-v"], ["-q"]):
            with self.subTest(verbosity=verbosity):
                path = self.copy("hello64.exe", "s%d.exe" % len(verbosity))
                r1 = self.sign(path, *verbosity, "-kvi", SECRET_ID, "-kvt",
                               self.info["tenant"], "-kvs", secret)
                r2 = self.sign(path, *verbosity, "-kva", token)
                for r in (r1, r2):
                    self.assertRc(r, 0)
                    out = r.stdout + r.stderr
                    self.assertNotIn(secret.encode(), out)
                    self.assertNotIn(token.encode(), out)
        with open(self.info["log"], "rb") as f:
            log = f.read()
        self.assertNotIn(secret.encode(), log)
        self.assertNotIn(token.encode(), log)


class TestTokenPrefetch(AzureCase):
    """With the tenant given, the token is fetched while the vault's 401
    challenge is on its way; it is used only if the challenge names the
    audience it was fetched for."""

    LATENCY_MS = 300

    def signed(self, *args, env=None):
        path = self.copy("hello64.exe")
        self.emu.config(latency_ms=self.LATENCY_MS)
        r = self.sign(path, *args, env=env)
        self.assertRc(r, 0)
        self.assertVerifies(path, independent=False)
        return self.emu.log()

    @staticmethod
    def first(log, service, bearer=None):
        return next(e for e in log if e.get("service") == service and
                    (bearer is None or e["bearer"] == bearer))

    def tokens(self, log):
        return [e for e in log if e.get("service") == "entra" and e["method"] == "POST"]

    def assertTokenDuringProbe(self, log):
        """The token request started before the challenge came back (both
        take LATENCY_MS), and it was the only one."""
        probe = self.first(log, "vault", bearer=False)
        self.assertLess(self.first(log, "entra")["t"],
                        probe["t"] + probe["ms"] / 1000.0 - 0.1, log)
        self.assertEqual(len(self.tokens(log)), 1)

    def test_token_fetched_during_the_challenge(self):
        self.assertTokenDuringProbe(self.signed(*self.secret_args()))

    def test_tenant_from_the_environment(self):
        env = self.env(AZURE_CLIENT_ID=SECRET_ID, AZURE_TENANT_ID=self.info["tenant"],
                       AZURE_CLIENT_SECRET=read(os.path.join(self.state, "client-secret.txt")))
        self.assertTokenDuringProbe(self.signed(env=env))

    def test_without_tenant_the_challenge_comes_first(self):
        args = self.secret_args()
        del args[2:4]  # -kvt TENANT: the challenge names the tenant
        log = self.signed(*args)
        probe = self.first(log, "vault", bearer=False)
        token = self.first(log, "entra")
        self.assertGreaterEqual(token["t"], probe["t"] + probe["ms"] / 1000.0 - 0.05, log)
        self.assertEqual(len(self.tokens(log)), 1)

    def test_challenge_naming_another_audience_is_followed(self):
        self.emu.config(resource="https://vault.azure.cn")
        log = self.signed(*self.secret_args())
        scopes = [e["form"]["scope"] for e in self.tokens(log)]
        # The prefetched token (the public cloud's) is not sent: the
        # vault accepts only its own audience, and every request with a
        # token succeeded.
        self.assertEqual(scopes, ["https://vault.azure.net/.default",
                                  "https://vault.azure.cn/.default"])
        self.assertEqual([e["status"] for e in log if e.get("service") == "vault" and
                          e["bearer"]], [200, 200])

    def test_failed_sign_in_is_tried_once(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, "-kvi", SECRET_ID, "-kvt", self.info["tenant"], "-kvs",
                      "env:WRONG", env=self.env(WRONG="not-the-secret-xyzzy"))
        self.assertRc(r, 87)
        self.assertEqual(len(lines(r.stderr)), 1, r.stderr)
        self.assertIn(b"AADSTS", r.stderr)
        self.assertEqual(len(self.tokens(self.emu.log())), 1)


class TestFederatedMismatch(AzureCase):
    """GitHub issues a token for a branch the federated credential does not name."""
    CONFIG = {"github": {"subject": "repo:contoso/app:ref:refs/heads/feature"}}

    def test_federated_subject_mismatch_names_issuer_and_subject(self):
        path = self.copy("hello64.exe")
        env = self.env(
            ACTIONS_ID_TOKEN_REQUEST_URL=self.info["https"] + "/_github/token?api-version=2.0",
            ACTIONS_ID_TOKEN_REQUEST_TOKEN=read(os.path.join(self.state,
                                                             "github-request-token.txt")),
            AZURE_CLIENT_ID=GITHUB_ID, AZURE_TENANT_ID=self.info["tenant"])
        r = self.sign(path, "-kvm", env=env)
        self.assertRc(r, 87)
        err = r.stderr.decode()
        for w in ( "AADSTS70021", "token.actions.githubusercontent.com",
                             "refs/heads/feature"):
            self.assertIn(w, err)


class TestManagedHsm(AzureCase):
    MODE = "managedhsm"

    def test_sign_with_certificate_file(self):
        for key, digest in (("codesign-rsa2048", "sha256"), ("codesign-ec384", "sha384")):
            with self.subTest(key=key):
                path = self.copy("hello64.exe", key + ".exe")
                cert = self.emu.leaf(key)
                r = self.sign(path, *self.secret_args(), "--azure-managed-hsm", "--cert", cert,
                              "-fd", digest, key=key)
                self.assertRc(r, 0)
                self.assertVerifies(path)
        self.assertEqual(self.emu.count("GET", "/certificates/", bearer=True), 0)

    def test_certificate_required(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, *self.secret_args(), "--azure-managed-hsm")
        self.assertRc(r, 87)
        self.assertIn("--cert", r.stderr.decode())


if __name__ == "__main__":
    unittest.main()
