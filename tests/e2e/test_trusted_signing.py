"""Azure Trusted Signing provider end to end against
tests/servers/trusted_emu.py (and tests/servers/tsa.py for timestamps):
sign + poll, both path spellings and body shapes, the double-base64
PKCS#7 chain (shuffled), both error shapes, throttling, failed
operations, a certificate renewed mid-run. Results are verified with
hsmsign, osslsigncode and sbverify."""
import os
import unittest

from cloudlib import EmulatorCase
from hslib import HSMSIGN, ROOT_CA, pki, read, run, sbverify
from trusted_emu import TrustedEmulator  # via cloudlib
from tsa_client import Tsa  # via cloudlib

CLIENT = "66666666-6666-6666-6666-666666666666"
TENANT = "77777777-7777-7777-7777-777777777777"
SECRET = "trusted-client-secret"


def emu_config():
    return {"account": "contoso", "profile": "public-trust",
            "client_id": CLIENT, "client_secret": SECRET,
            "key_file": pki("leaf-rsa2048.key"),
            "chain": [pki("leaf-rsa2048.pem"), pki("intermediate.pem"),
                      pki("root.pem")],
            "rotated_key_file": pki("leaf-rsa3072.key"),
            "rotated_chain": [pki("leaf-rsa3072.pem"), pki("intermediate.pem")]}


class TrustedCase(EmulatorCase):
    emulator_class = TrustedEmulator
    emu_config = staticmethod(emu_config)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tsa = Tsa().start()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.tsa.stop()

    def setUp(self):
        super().setUp()
        with self.emu.state.lock:
            self.emu.state.signed = 0

    def env(self, **extra):
        env = {k: "" for k in os.environ
               if k.startswith(("AZURE_", "ACTIONS_", "IDENTITY_", "MSI_"))}
        env.update({"HOME": self.tmp, "HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "AZURE_AUTHORITY_HOST": self.emu.url,
                    "AZURE_CLI_PATH": os.path.join(self.tmp, "no-az"),
                    "IMDS_ENDPOINT": "http://127.0.0.1:9", "TS_SECRET": SECRET})
        env.update(extra)
        return env

    def sign(self, *paths, args=(), ts=True, env=None):
        tsa = ["-tr", self.tsa.url("ok")] if ts else []
        return run([HSMSIGN, "sign", "--trusted-signing-endpoint", self.emu.url,
                    "--trusted-signing-account", "contoso",
                    "--trusted-signing-profile", "public-trust",
                    "-kvi", CLIENT, "-kvt", TENANT, "-kvs", "env:TS_SECRET",
                    "-fd", "sha256", *tsa, *args, *paths],
                   env=env if env is not None else self.env())

    def assertVerifies(self, path):
        r = run([HSMSIGN, "verify", "--ca-file", ROOT_CA, "--tsa-ca-file",
                 self.tsa.root, path])
        self.assertRc(r, 0)
        r = run(["osslsigncode", "verify", "-CAfile", ROOT_CA, "-TSA-CAfile",
                 self.tsa.root, "-in", path])
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("Signature verification: ok", out)
        ok, out = sbverify(path)
        self.assertTrue(ok, out)


class TestSigning(TrustedCase):
    def test_two_files_chain_from_the_service_timestamped(self):
        a, b = self.copy("hello64.exe"), self.copy("lib64.dll")
        self.assertRc(self.sign(a, b), 0)
        for p in (a, b):
            self.assertVerifies(p)
        # one sign for the chain at open, one per file; each polled twice
        self.assertEqual(len(self.emu.calls("sign", 202)), 3)
        self.assertEqual(len(self.emu.calls("poll", 200)), 9)
        self.assertEqual(len(self.emu.calls("token", 200)), 1)

    def test_colon_path_and_nested_body(self):
        self.emu.knobs(colon_only=True, nested=True, polls=0)
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path), 0)
        self.assertVerifies(path)
        colon = [c for c in self.emu.calls("sign", 202) if ":sign" in c["path"]]
        self.assertEqual(len(colon), 2)

    def test_without_tsa_the_microsoft_tsa_is_the_default(self):
        # The default TSA is reached through a proxy on a closed loopback
        # port, so nothing leaves the machine: the run must fail naming the
        # Microsoft TSA and the proxy, and leave the file untouched.
        env = self.env(http_proxy="http://127.0.0.1:9",
                       HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")
        path = self.copy("hello64.exe")
        before = read(path)
        r = self.sign(path, ts=False, args=("--timestamp-retries", "0"),
                      env=env)
        self.assertRc(r, 2)
        err = r.stderr.decode()
        self.assertIn("http://timestamp.acs.microsoft.com", err)
        self.assertIn("127.0.0.1 port 9", err)
        self.assertEqual(read(path), before)


class TestErrors(TrustedCase):
    def test_wrong_client_secret(self):
        r = self.sign(self.copy("hello64.exe"),
                      env=self.env(TS_SECRET="wrong-secret-value"))
        self.assertFailsCleanly(r, 87, "AADSTS7000215")
        self.assertNotIn(b"wrong-secret-value", r.stdout + r.stderr)

    def test_forbidden_legacy_error_shape(self):
        self.emu.knobs(deny=True)
        r = self.sign(self.copy("hello64.exe"))
        self.assertFailsCleanly(r, 87, "InternalError", "403 (Forbidden)")

    def test_failed_operation(self):
        self.emu.knobs(fail_op=True)
        r = self.sign(self.copy("hello64.exe"))
        self.assertFailsCleanly(r, 87, "Failed")

    def test_throttled_submit_is_retried(self):
        self.emu.knobs(throttle_next=2)
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path), 0)
        self.assertVerifies(path)

    def test_certificate_renewed_mid_run_fails_the_file(self):
        self.emu.knobs(rotate=True)
        path = self.copy("hello64.exe")
        before = read(path)
        r = self.sign(path)
        self.assertFailsCleanly(r, 2, "renewed its signing certificate",
                                path=path, before=before)

    def test_unknown_profile(self):
        r = run([HSMSIGN, "sign", "--trusted-signing-endpoint", self.emu.url,
                 "--trusted-signing-account", "contoso",
                 "--trusted-signing-profile", "nope", "-kvi", CLIENT, "-kvt",
                 TENANT, "-kvs", "env:TS_SECRET", "-tr", self.tsa.url("ok"),
                 self.copy("hello64.exe")], env=self.env())
        self.assertFailsCleanly(r, 87, "NotFound")

    def test_sha1_refused(self):
        path = self.copy("hello64.exe")
        r = run([HSMSIGN, "sign", "--trusted-signing-endpoint", self.emu.url,
                 "--trusted-signing-account", "contoso",
                 "--trusted-signing-profile", "public-trust", "-kvi", CLIENT,
                 "-kvt", TENANT, "-kvs", "env:TS_SECRET", "-fd", "sha1",
                 "-tr", self.tsa.url("ok"), path], env=self.env())
        self.assertFailsCleanly(r, 2, "sha256")


if __name__ == "__main__":
    unittest.main()
