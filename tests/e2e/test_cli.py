"""Command line surface: help, version, argument errors (87) and secrets
that must never be echoed."""
from hslib import (HSMSIGN, HsTestCase, hsmsign, key_args, lines, p12_password, pki,
                   sign, verify)

COMMANDS = ("sign", "verify", "remove", "extract", "digest")
WRONG_PASSWORD = "Wr0ng-Pa55word-hsmsign"


class TestHelp(HsTestCase):

    def test_help(self):
        r = hsmsign("--help")
        self.assertRc(r, 0)
        out = r.stdout.decode()
        self.assertIn("sage", out)  # Usage / usage
        for cmd in COMMANDS:
            self.assertIn(cmd, out)

    def test_version(self):
        r = hsmsign("--version")
        self.assertRc(r, 0)
        self.assertIn("0.1.0", r.stdout.decode())

    def test_command_help(self):
        for cmd in COMMANDS:
            with self.subTest(cmd=cmd):
                r = hsmsign(cmd, "--help")
                self.assertRc(r, 0)
                out = r.stdout.decode()
                self.assertIn("sage", out)
                self.assertIn(cmd, out)
        self.assertIn("--pfx-pass", hsmsign("sign", "--help").stdout.decode())


class TestArgumentErrors(HsTestCase):

    def assert87(self, r):
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)

    def test_unknown_option(self):
        self.assert87(hsmsign("sign", "--no-such-option", self.copy(
            "hello64.exe")))
        self.assert87(hsmsign("--no-such-option"))

    def test_unknown_command(self):
        self.assert87(hsmsign("frobnicate"))

    def test_unknown_digest(self):
        path = self.copy("hello64.exe")
        self.assert87(sign(path, "leaf-rsa2048", "md5"))
        self.assertRc(verify(path), 10)

    def test_missing_key_file(self):
        path = self.copy("hello64.exe")
        self.assert87(hsmsign("sign", "--key", self.path("nope.key"),
                              "--cert", pki("leaf-rsa2048-chain.pem"), path))
        self.assertRc(verify(path), 10)

    def test_key_without_cert(self):
        self.assert87(hsmsign("sign", "--key", pki("leaf-rsa2048.key"),
                              self.copy("hello64.exe")))

    def test_key_cert_mismatch(self):
        self.assert87(hsmsign("sign", "--key", pki("leaf-rsa2048.key"),
                              "--cert", pki("leaf-rsa3072-chain.pem"),
                              self.copy("hello64.exe")))

    def test_output_with_several_files(self):
        a, b = self.copy("hello64.exe"), self.copy("lib64.dll")
        self.assert87(hsmsign("sign", *key_args(), "-o", self.path("o.exe"),
                              a, b))
        self.assertRc(verify(a), 10)

    def test_no_files(self):
        self.assert87(hsmsign("sign", *key_args()))

    def test_encrypted_key_without_password(self):
        """No terminal prompt in a pipeline: an encrypted key without
        --key-pass is a configuration error."""
        r = hsmsign("sign", "--key", pki("leaf-rsa2048-enc.key"), "--cert",
                    pki("leaf-rsa2048-chain.pem"), self.copy("hello64.exe"),
                    stdin=b"")
        self.assert87(r)

    def test_secret_spec_must_have_a_source(self):
        """A bare literal is not a secret source (env:, file: or stdin)."""
        r = hsmsign("sign", "--pfx", pki("leaf-rsa2048.p12"), "--pfx-pass",
                    p12_password(), self.copy("hello64.exe"))
        self.assert87(r)
        self.assertNotIn(p12_password().encode(), r.stdout + r.stderr)


class TestSecrets(HsTestCase):
    """Passwords never appear in any output, also at -v."""

    def check_secret_hidden(self, r, secret):
        for stream in (r.stdout, r.stderr):
            self.assertNotIn(secret.encode(), stream)

    def test_wrong_pfx_password(self):
        for spec, env, stdin in (
                ("env:HS_PW", {"HS_PW": WRONG_PASSWORD}, None),
                ("stdin", None, WRONG_PASSWORD.encode() + b"\n")):
            for verbose in ([], ["-v"]):
                with self.subTest(spec=spec, verbose=verbose):
                    path = self.copy("hello64.exe")
                    r = hsmsign("sign", *verbose, "--pfx",
                                pki("leaf-rsa2048.p12"), "--pfx-pass", spec,
                                path, env=env, stdin=stdin)
                    self.assertRc(r, 87)
                    if verbose:  # progress lines may precede the error
                        self.assertTrue(lines(r.stderr)[-1].startswith(
                            "hsmsign:"), r.stderr)
                    else:
                        self.assertOneErrorLine(r)
                    self.check_secret_hidden(r, WRONG_PASSWORD)
                    self.assertRc(verify(path), 10)

    def test_wrong_key_password(self):
        path = self.copy("hello64.exe")
        r = hsmsign("sign", "-v", "--key", pki("leaf-rsa2048-enc.key"),
                    "--cert", pki("leaf-rsa2048-chain.pem"), "--key-pass",
                    "env:HS_PW", path, env={"HS_PW": WRONG_PASSWORD})
        self.assertRc(r, 87)
        self.check_secret_hidden(r, WRONG_PASSWORD)

    def test_right_password_verbose(self):
        secret = p12_password()
        for spec, env, stdin in (
                ("env:HS_PW", {"HS_PW": secret}, None),
                ("file:" + pki("leaf-rsa2048.p12.pass"), None, None),
                ("stdin", None, secret.encode())):
            with self.subTest(spec=spec):
                path = self.copy("hello64.exe")
                r = hsmsign("sign", "-v", "--pfx", pki("leaf-rsa2048.p12"),
                            "--pfx-pass", spec, path, env=env, stdin=stdin)
                self.assertRc(r, 0)
                self.check_secret_hidden(r, secret)
        path = self.copy("hello64.exe", "pem.exe")
        r = hsmsign("sign", "-v", "--key", pki("leaf-rsa2048-enc.key"),
                    "--cert", pki("leaf-rsa2048-chain.pem"), "--key-pass",
                    "env:HS_PW", path, env={"HS_PW": secret})
        self.assertRc(r, 0)
        self.check_secret_hidden(r, secret)

    def test_quiet(self):
        path = self.copy("hello64.exe")
        r = sign(path, "leaf-rsa2048", "sha256", "-q")
        self.assertRc(r, 0)
        self.assertEqual(r.stdout + r.stderr, b"")


class NoCoreDumpsTest(HsTestCase):
    """While a secret is held, the process must not be able to dump core."""

    def test_core_dumps_disabled_while_waiting_for_a_secret(self):
        import subprocess
        import time
        path = self.copy("hello64.exe")
        proc = subprocess.Popen([HSMSIGN, "sign", "--pfx", pki("leaf-rsa2048.p12"),
                                 "--pfx-pass", "stdin", path],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            limits = ""
            for _ in range(100):  # until main() has run
                with open("/proc/%d/limits" % proc.pid) as f:
                    limits = f.read()
                core = [l for l in limits.splitlines() if l.startswith("Max core file size")]
                if core and core[0].split()[4:6] == ["0", "0"]:
                    break
                time.sleep(0.02)
            core = [l for l in limits.splitlines() if l.startswith("Max core file size")]
            self.assertEqual(core[0].split()[4:6], ["0", "0"], limits)
            out, err = proc.communicate(p12_password().encode() + b"\n", timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        self.assertEqual(proc.returncode, 0, err)
        self.assertNotIn(p12_password().encode(), out + err)

