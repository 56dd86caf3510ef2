"""Conformance: the same fixtures and signature features through every key
provider (local file, Azure Key Vault, PKCS#11/SoftHSM, AWS KMS, Google
Cloud KMS, HashiCorp Vault transit, Azure Trusted Signing with its forced
timestamp), each against its local server, each result verified by hsmsign
and osslsigncode. RSA PKCS#1 v1.5 signatures
are deterministic and hsmsign adds no signingTime, so the providers that
hold the same RSA key (file, AWS, GCP, Vault emulators load
leaf-rsa2048.key) must produce byte-identical files."""
import os
import shutil
import sys
import unittest

from hslib import HSMSIGN, HsTestCase, ROOT_CA, pki, read, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "servers"))
from aws_emu import AwsEmulator  # noqa: E402
from emu_client import Emulator  # noqa: E402
from gcp_emu import GcpEmulator  # noqa: E402
from trusted_emu import TrustedEmulator  # noqa: E402
from tsa_client import Tsa  # noqa: E402
from vault_emu import VaultEmulator  # noqa: E402
import test_pkcs11  # noqa: E402

# (fixture, extra options): one per format and signature feature.
CASES = (
    ("pe/hello64.exe", ["-ph", "-d", "Conformance", "-du",
                        "https://example.com/app"]),
    ("pe/lib32.dll", []),
    ("msi/small.msi", []),
    ("cab/stored.cab", []),
    ("scripts/ps1-utf8-crlf.ps1", []),
)
SAME_RSA_KEY = ("file", "aws-kms", "gcp-kms", "vault-transit")
CLEAN = ("AWS_", "GOOGLE_", "GCE_", "VAULT_", "ACTIONS_", "AZURE_",
         "CLOUDSDK_", "IDENTITY_", "MSI_", "SSL_CERT_FILE")


class Providers:
    """Starts every local server once; builds each provider's arguments."""

    def __init__(self):
        self.aws = AwsEmulator({
            "region": "us-east-2", "credentials": {"AKIAEXAMPLE": "secret"},
            "keys": [{"alias": "alias/cs",
                      "key_file": pki("leaf-rsa2048.key")}]}).__enter__()
        self.gcp = GcpEmulator({
            "access_tokens": ["ya29.t"],
            "keys": [{"name": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
                      "versions": [{"key_file": pki("leaf-rsa2048.key"),
                                    "algorithm": "RSA_SIGN_PKCS1_2048_SHA256"}]}]
        }).__enter__()
        self.vault = VaultEmulator({
            "tokens": ["hvs.t"],
            "keys": [{"name": "cs", "versions": [pki("leaf-rsa2048.key")]}]
        }).__enter__()
        self.azure = Emulator(mode="vault").__enter__()
        self.trusted = TrustedEmulator({
            "account": "acct", "profile": "prof", "client_id": "c1",
            "client_secret": "s1", "key_file": pki("leaf-rsa2048.key"),
            "chain": [pki("leaf-rsa2048.pem"), pki("intermediate.pem")]
        }).__enter__()
        self.tsa = Tsa().start()
        self.token = test_pkcs11.Token()
        self.azure_state = os.path.dirname(self.azure.info["tls_ca"])

    def close(self):
        for s in (self.aws, self.gcp, self.vault, self.azure, self.trusted):
            s.__exit__(None, None, None)
        self.tsa.stop()
        self.token.cleanup()

    def env(self, home):
        env = {k: "" for k in os.environ if k.startswith(CLEAN)}
        env.update({"HOME": home, "HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                    "AWS_SECRET_ACCESS_KEY": "secret",
                    "AWS_REGION": "us-east-2",
                    "AWS_ENDPOINT_URL_KMS": self.aws.url,
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "GCP_TOKEN": "ya29.t",
                    "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS": self.gcp.url,
                    "VAULT_ADDR": self.vault.url, "VAULT_TOKEN": "hvs.t",
                    "TS_SECRET": "s1",
                    "AZURE_AUTHORITY_HOST": self.azure.info["https"],
                    "SSL_CERT_FILE": self.azure.info["tls_ca"],
                    "XDG_CACHE_HOME": os.path.join(home, "cache")})
        env.update(self.token.env)
        return env

    def args(self, name):
        """(key options, root CA) of a provider, all with leaf RSA keys."""
        chain = pki("leaf-rsa2048-chain.pem")
        if name == "file":
            return ["--key", pki("leaf-rsa2048.key"), "--cert", chain], ROOT_CA
        if name == "aws-kms":
            return ["--aws-kms-key", "alias/cs", "--cert", chain], ROOT_CA
        if name == "gcp-kms":
            return ["--gcp-kms-key",
                    "projects/p/locations/l/keyRings/r/cryptoKeys/k",
                    "--gcp-access-token", "env:GCP_TOKEN", "--cert",
                    chain], ROOT_CA
        if name == "vault-transit":
            return ["--vault-transit-key", "cs", "--cert", chain], ROOT_CA
        if name == "trusted-signing":  # its certificate comes from the service
            return ["--trusted-signing-endpoint", self.trusted.url,
                    "--trusted-signing-account", "acct",
                    "--trusted-signing-profile", "prof", "-kvi", "c1", "-kvt",
                    "t1", "-kvs", "env:TS_SECRET", "-au", self.trusted.url,
                    "-tr", self.tsa.url("ok")], ROOT_CA
        if name == "pkcs11":
            return ["--pkcs11-module", test_pkcs11.SOFTHSM, "--key",
                    "pkcs11:token=%s;object=rsa2048" % test_pkcs11.TOKEN,
                    "--pin", "file:" + self.token.pin_file], ROOT_CA
        info = self.azure.info  # azure-key-vault, client secret credential
        return ["-kvu", info["https"], "-kvc", "codesign-rsa2048",
                "-kvi", "11111111-1111-1111-1111-111111111111",
                "-kvt", info["tenant"], "-kvs", "file:" + os.path.join(
                    self.azure_state, "client-secret.txt")], info["root"]


PROVIDERS = ("file", "azure-key-vault", "pkcs11", "aws-kms", "gcp-kms",
             "vault-transit", "trusted-signing")


class TestConformance(HsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.providers = Providers()

    @classmethod
    def tearDownClass(cls):
        cls.providers.close()

    def sign_with(self, provider, fixture, extra):
        src = os.path.join(os.environ.get("HS_FIXTURES") or os.path.join(
            os.path.dirname(__file__), "..", "fixtures"), fixture)
        out_dir = os.path.join(self.tmp, provider)
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, os.path.basename(fixture))
        shutil.copyfile(src, path)
        key_args, root = self.providers.args(provider)
        r = run([HSMSIGN, "sign", *key_args, "-fd", "sha256", *extra, path],
                env=self.providers.env(self.tmp))
        self.assertRc(r, 0, "%s %s" % (provider, fixture))
        return path, root

    def test_every_provider_every_format(self):
        for fixture, extra in CASES:
            outputs = {}
            for provider in PROVIDERS:
                with self.subTest(provider=provider, fixture=fixture):
                    path, root = self.sign_with(provider, fixture, extra)
                    tsa = self.providers.tsa.root
                    self.assertRc(run([HSMSIGN, "verify", "--ca-file", root,
                                       "--tsa-ca-file", tsa, path]), 0)
                    if not fixture.endswith(".ps1"):  # osslsigncode: no scripts
                        r = run(["osslsigncode", "verify", "-CAfile", root,
                                 "-TSA-CAfile", tsa, "-in", path])
                        out = (r.stdout + r.stderr).decode(errors="replace")
                        self.assertEqual(r.returncode, 0, out)
                        self.assertIn("Signature verification: ok", out)
                        self.assertNotIn("MISMATCH", out)
                    outputs[provider] = read(path)
            with self.subTest(fixture=fixture, check="identical"):
                same = {p: outputs[p] for p in SAME_RSA_KEY if p in outputs}
                self.assertEqual(len(same), len(SAME_RSA_KEY))
                self.assertEqual(len(set(same.values())), 1,
                                 "providers holding the same RSA key differ")
                self.assertNotEqual(outputs["pkcs11"], outputs["file"])


if __name__ == "__main__":
    unittest.main()
