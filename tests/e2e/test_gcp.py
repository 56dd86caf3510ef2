"""Google Cloud KMS provider end to end against tests/servers/gcp_emu.py:
key types (digest and raw PKCS#1), version selection, every credential
source, CRC32C integrity in both directions, errors and throttling. Each
signature is checked by hsmsign verify, osslsigncode and (SHA-256)
sbverify."""
import gzip
import json
import os
import unittest

from cloudlib import EmulatorCase
from hslib import HSMSIGN, ROOT_CA, pki, read, run
from gcp_emu import GcpEmulator  # via cloudlib

RING = "projects/demo/locations/europe-west1/keyRings/signing"
TOKEN = "ya29.fixed-test-token"
SA = "signer@demo.iam.gserviceaccount.com"
WIF = ("projects/123456/locations/global/workloadIdentityPools/github/"
       "providers/actions")


def key(name):
    return "%s/cryptoKeys/%s" % (RING, name)


def emu_config():
    return {
        "access_tokens": [TOKEN],
        "service_account": {"email": SA, "key_file": pki("leaf-rsa2048.key")},
        "wif_provider": WIF, "github_request_token": "gh-bearer",
        "keys": [
            # version 2 is the newest enabled one; 3 is disabled
            {"name": key("rsa"), "versions": [
                {"key_file": pki("leaf-rsa3072.key"),
                 "algorithm": "RSA_SIGN_PKCS1_3072_SHA256"},
                {"key_file": pki("leaf-rsa2048.key"),
                 "algorithm": "RSA_SIGN_PKCS1_2048_SHA256"},
                {"key_file": pki("leaf-rsa3072.key"), "state": "DISABLED",
                 "algorithm": "RSA_SIGN_PKCS1_3072_SHA256"}]},
            {"name": key("raw"), "versions": [
                {"key_file": pki("leaf-rsa3072.key"),
                 "algorithm": "RSA_SIGN_RAW_PKCS1_3072"}]},
            {"name": key("ec256"), "versions": [
                {"key_file": pki("leaf-ec256.key"),
                 "algorithm": "EC_SIGN_P256_SHA256"}]},
            {"name": key("ec384"), "versions": [
                {"key_file": pki("leaf-ec384.key"),
                 "algorithm": "EC_SIGN_P384_SHA384"}]},
            {"name": key("pss"), "versions": [
                {"key_file": pki("leaf-rsa2048.key"),
                 "algorithm": "RSA_SIGN_PSS_2048_SHA256"}]},
            {"name": key("soft"), "versions": [
                {"key_file": pki("leaf-rsa2048.key"), "protection": "SOFTWARE",
                 "algorithm": "RSA_SIGN_PKCS1_2048_SHA256"}]},
            {"name": key("none"), "versions": [
                {"key_file": pki("leaf-rsa2048.key"), "state": "DISABLED",
                 "algorithm": "RSA_SIGN_PKCS1_2048_SHA256"}]},
        ],
        "attestation_chain": [pki("leaf-rsa2048.pem"), pki("intermediate.pem"),
                              pki("root.pem")]}


class GcpCase(EmulatorCase):
    emulator_class = GcpEmulator
    emu_config = staticmethod(emu_config)

    def env(self, token=True, **extra):
        env = {k: "" for k in os.environ
               if k.startswith(("GOOGLE_", "GCE_", "ACTIONS_", "CLOUDSDK_"))}
        env.update({"HOME": self.tmp, "HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS": self.emu.url +
                    "/v1/",
                    "GCE_METADATA_HOST": "127.0.0.1:9"})
        if token:
            env["GCP_TOKEN"] = TOKEN
        env.update(extra)
        return env

    def sign(self, path, *args, k="rsa", leaf="leaf-rsa2048",
             digest="sha256", env=None, token=True):
        targs = ["--gcp-access-token", "env:GCP_TOKEN"] if token else []
        return run([HSMSIGN, "sign", "--gcp-kms-key",
                    k if k.startswith("projects/") else key(k), "--cert",
                    pki(leaf + "-chain.pem"), "-fd", digest, *targs, *args,
                    path], env=env if env is not None else self.env())


class TestKeys(GcpCase):
    def test_newest_enabled_version_two_files(self):
        a, b = self.copy("hello64.exe"), self.copy("lib32.dll")
        r = run([HSMSIGN, "sign", "--gcp-kms-key", key("rsa"), "--cert",
                 pki("leaf-rsa2048-chain.pem"), "--gcp-access-token",
                 "env:GCP_TOKEN", a, b], env=self.env())
        self.assertRc(r, 0)
        for p in (a, b):
            self.assertVerifies(p)
        signs = self.emu.calls("sign", 200)
        self.assertEqual(len(signs), 2)
        self.assertTrue(signs[0]["body"]["name"].endswith("/2"))
        self.assertEqual(len(self.emu.calls("list", 200)), 1)
        self.assertEqual(len(self.emu.calls("publicKey", 200)), 1)

    def test_explicit_version(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, k=key("rsa") + "/cryptoKeyVersions/1",
                      leaf="leaf-rsa3072")
        self.assertRc(r, 0)
        self.assertVerifies(path)
        self.assertEqual(self.emu.calls("list"), [])

    def test_ec_and_raw_pkcs1_keys(self):
        cases = [("ec256", "leaf-ec256", "sha256"),
                 ("ec384", "leaf-ec384", "sha384"),
                 ("raw", "leaf-rsa3072", "sha1"),
                 ("raw", "leaf-rsa3072", "sha512")]
        for k, leaf, digest in cases:
            with self.subTest(key=k, digest=digest):
                path = self.copy("hello32.exe", "%s-%s.exe" % (k, digest))
                self.assertRc(self.sign(path, k=k, leaf=leaf, digest=digest), 0)
                self.assertVerifies(path, sha256=digest == "sha256")

    def test_digest_must_match_the_algorithm(self):
        path = self.copy("hello64.exe")
        before = read(path)
        r = self.sign(path, digest="sha384")
        self.assertFailsCleanly(r, 2, "signs only sha256", path=path,
                                before=before)
        self.assertEqual(self.emu.calls("sign"), [])

    def test_pss_and_disabled_keys_refused_at_open(self):
        r = self.sign(self.copy("hello64.exe"), k="pss")
        self.assertFailsCleanly(r, 87, "RSA_SIGN_PSS_2048_SHA256")
        r = self.sign(self.copy("hello64.exe"), k="none")
        self.assertFailsCleanly(r, 87, "no enabled version")

    def test_certificate_of_another_key_is_refused(self):
        r = self.sign(self.copy("hello64.exe"), leaf="leaf-rsa3072")
        self.assertFailsCleanly(r, 87, "does not belong")

    def test_bad_key_names(self):
        for name in ("projects/p/keyRings/r", key("rsa") + "/../x",
                     key("rsa") + "/cryptoKeyVersions/1?x=y"):
            with self.subTest(name=name):
                r = self.sign(self.copy("hello64.exe"), k=name)
                self.assertFailsCleanly(r, 87, "--gcp-kms-key" if "?" not in
                                        name and ".." not in name else "")
        self.assertEqual(self.emu.calls(), [])


class TestIntegrity(GcpCase):
    def test_request_checksum_is_sent_and_verified(self):
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path), 0)
        self.assertTrue(self.emu.calls("sign", 200)[0]["body"][
            "verifiedDigestCrc32c"])

    def test_corrupted_signature_checksum_is_caught(self):
        path = self.copy("hello64.exe")
        self.emu.knobs(corrupt_crc=1)
        self.assertFailsCleanly(self.sign(path), 2, "CRC32C", path=path,
                                before=read(self.copy("hello64.exe", "o")))

    def test_unverified_request_checksum_is_caught(self):
        path = self.copy("hello64.exe")
        self.emu.knobs(unverified=1)
        self.assertFailsCleanly(self.sign(path), 2, "did not confirm")


class TestCredentials(GcpCase):
    def signed_with(self, env, *args, kind):
        path = self.copy("hello64.exe")
        r = self.sign(path, *args, env=env, token=False)
        self.assertRc(r, 0)
        self.assertVerifies(path)
        self.assertEqual(self.emu.calls("sign", 200)[0]["token_kind"], kind)

    def test_access_token_from_environment(self):
        self.signed_with(self.env(GOOGLE_OAUTH_ACCESS_TOKEN=TOKEN),
                         kind="fixed")

    def write_sa(self, key_file):
        with open(pki(key_file)) as f:
            sa = {"type": "service_account", "client_email": SA,
                  "private_key_id": "k1", "private_key": f.read(),
                  "token_uri": self.emu.url + "/token"}
        path = self.path("sa.json")
        with open(path, "w") as f:
            json.dump(sa, f)
        return path, sa["private_key"]

    def test_service_account_key_file(self):
        path, _ = self.write_sa("leaf-rsa2048.key")
        self.signed_with(self.env(token=False), "--gcp-credentials", path,
                         kind="service-account")
        self.assertEqual(len(self.emu.calls("oauth", 200)), 1)
        self.emu.state.log.clear()
        self.signed_with(self.env(token=False,
                                  GOOGLE_APPLICATION_CREDENTIALS=path),
                         kind="service-account")

    def test_service_account_with_wrong_key_is_rejected(self):
        path, pem = self.write_sa("leaf-rsa3072.key")
        r = self.sign(self.copy("hello64.exe"), env=self.env(
            GOOGLE_APPLICATION_CREDENTIALS=path), token=False)
        self.assertFailsCleanly(r, 87, "invalid_grant")
        self.assertNotIn(pem.splitlines()[1].encode(), r.stdout + r.stderr)

    def test_github_oidc_workload_identity_with_impersonation(self):
        env = self.env(token=False,
                       ACTIONS_ID_TOKEN_REQUEST_URL=self.emu.url +
                       "/github/token?api-version=2.0",
                       ACTIONS_ID_TOKEN_REQUEST_TOKEN="gh-bearer",
                       HSMSIGN_GCP_STS_URL=self.emu.url + "/sts/v1/token",
                       HSMSIGN_GCP_IAM_URL=self.emu.url + "/iam")
        self.signed_with(env, "--gcp-workload-provider", WIF,
                         "--gcp-service-account", SA, kind="impersonated")
        self.emu.state.log.clear()
        self.signed_with(env, "--gcp-workload-provider", WIF,
                         kind="federated")

    def test_external_account_file(self):
        cfg = {"type": "external_account",
               "audience": "//iam.googleapis.com/" + WIF,
               "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
               "token_url": self.emu.url + "/sts/v1/token",
               "credential_source": {
                   "url": self.emu.url + "/github/token?audience=" +
                   "https://iam.googleapis.com/" + WIF,
                   "headers": {"Authorization": "Bearer gh-bearer"},
                   "format": {"type": "json",
                              "subject_token_field_name": "value"}}}
        path = self.path("wif.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.signed_with(self.env(token=False,
                                  GOOGLE_APPLICATION_CREDENTIALS=path),
                         kind="federated")

    def test_wrong_workload_provider_is_an_sts_error(self):
        env = self.env(token=False,
                       ACTIONS_ID_TOKEN_REQUEST_URL=self.emu.url +
                       "/github/token",
                       ACTIONS_ID_TOKEN_REQUEST_TOKEN="gh-bearer",
                       HSMSIGN_GCP_STS_URL=self.emu.url + "/sts/v1/token")
        r = self.sign(self.copy("hello64.exe"), "--gcp-workload-provider",
                      WIF + "x", env=env, token=False)
        self.assertFailsCleanly(r, 87, "STS token exchange")

    def test_metadata_server(self):
        host = self.emu.url[len("http://"):]
        self.signed_with(self.env(token=False, GCE_METADATA_HOST=host),
                         kind="metadata")

    def test_unreachable_metadata_server_fails_clearly(self):
        # A closed loopback port stands in for "not on Google Cloud": the
        # real metadata address must not be contacted from a test.
        r = self.sign(self.copy("hello64.exe"), env=self.env(token=False),
                      token=False)
        self.assertFailsCleanly(r, 87, "127.0.0.1:9")


class TestAttestation(GcpCase):
    def attest(self, k, *args):
        return run([HSMSIGN, "gcp", "attestation", key(k), "--gcp-access-token",
                    "env:GCP_TOKEN", *args], env=self.env())

    def test_chains_verified_to_pinned_roots_and_statement_saved(self):
        out = self.path("attestation.dat.gz")
        r = self.attest("rsa/cryptoKeyVersions/2", "-o", out, "--roots", ROOT_CA)
        self.assertRc(r, 0)
        text = r.stdout.decode()
        for chain in ("caviumCerts", "googleCardCerts", "googlePartitionCerts"):
            self.assertIn("%s: 3 certificates, verified" % chain, text)
        self.assertNotIn("not pinned", text)
        self.assertEqual(gzip.decompress(read(out)),
                         b"emulated attestation of " + key("rsa").encode() +
                         b"/cryptoKeyVersions/2")

    def test_newest_version_and_unpinned_roots(self):
        r = self.attest("rsa")
        self.assertRc(r, 0)
        self.assertIn("cryptoKeyVersions/2", self.emu.calls("version")[0][
            "body"]["name"])
        self.assertIn("root not pinned", r.stdout.decode())
        self.assertTrue(r.stdout.decode().startswith(
            key("rsa") + "/cryptoKeyVersions/2: HSM attestation"))

    def test_wrong_roots_and_broken_chain_fail(self):
        r = self.attest("rsa/cryptoKeyVersions/2", "--roots",
                        pki("other-root.pem"), "-o", self.path("a"))
        self.assertFailsCleanly(r, 14, "does not verify")
        self.assertFalse(os.path.exists(self.path("a")))
        self.emu.knobs(bad_chain=True)
        r = self.attest("rsa/cryptoKeyVersions/2", "--roots", ROOT_CA)
        self.assertFailsCleanly(r, 14, "caviumCerts does not verify")

    def test_software_key_has_no_attestation(self):
        r = self.attest("soft/cryptoKeyVersions/1")
        self.assertFailsCleanly(r, 2, "only HSM keys")


class TestErrors(GcpCase):
    def test_rejected_token(self):
        r = self.sign(self.copy("hello64.exe"),
                      env=self.env(GCP_TOKEN="ya29.wrong"))
        self.assertFailsCleanly(r, 87, "UNAUTHENTICATED")
        self.assertNotIn(b"ya29.wrong", r.stdout + r.stderr)

    def test_permission_denied_leaves_file_intact(self):
        path = self.copy("hello64.exe")
        before = read(path)
        self.emu.knobs(deny=True)
        self.assertFailsCleanly(self.sign(path), 2, "PERMISSION_DENIED",
                                "useToSign", path=path, before=before)

    def test_throttling_and_server_errors_are_retried(self):
        self.emu.knobs(throttle_next=2, fail_next_500=1)
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path), 0)
        self.assertVerifies(path)

    def test_unknown_key(self):
        r = self.sign(self.copy("hello64.exe"), k="missing")
        self.assertFailsCleanly(r, 87, "NOT_FOUND")

    def test_token_never_printed(self):
        r = self.sign(self.copy("hello64.exe"), "-v")
        self.assertRc(r, 0)
        self.assertNotIn(TOKEN.encode(), r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
