"""Malformed inputs: signing fails cleanly (exit 2, one error line, input
untouched, no stray files); verify calls them malformed (11).

An empty file or plain text can be read, it is just not a supported format,
which the contract counts as 11 ("malformed file ... / not a supported
format"); 2 is only for files that cannot be read at all."""
import os

from hslib import (MALFORMED_DIR, HsTestCase, hsmsign, key_args, lines,
                   sha256_file, sign, verify)

MALFORMED = sorted(os.listdir(MALFORMED_DIR))

# few-rva.exe is a well-formed PE whose directory array simply ends before
# the Certificate Table entry: it cannot carry a signature, so "no signature"
# (10) is as defensible as "malformed" (11) for verify.
VERIFY_RC = {"few-rva.exe": (10, 11)}


class TestMalformed(HsTestCase):

    def test_fixtures_present(self):
        self.assertEqual(MALFORMED, sorted([
            "certtable-inside.exe", "certtable-lies.exe", "empty.exe",
            "few-rva.exe",
            "lfanew-out-of-range.exe", "mz-only.exe", "not-a-pe.txt",
            "sections-past-eof.exe", "truncated-header.exe"]))

    def test_sign_fails_cleanly(self):
        for name in MALFORMED:
            with self.subTest(fixture=name):
                path = self.copy(os.path.join(MALFORMED_DIR, name))
                before = sha256_file(path)
                listing = sorted(os.listdir(self.tmp))
                r = sign(path)
                self.assertRc(r, 2)
                self.assertOneErrorLine(r)
                self.assertIn(name, lines(r.stderr)[0])
                self.assertEqual(sha256_file(path), before)
                self.assertEqual(sorted(os.listdir(self.tmp)), listing)

    def test_sign_with_output_creates_nothing(self):
        for name in MALFORMED:
            with self.subTest(fixture=name):
                path = self.copy(os.path.join(MALFORMED_DIR, name))
                out = self.path("out-" + name)
                r = sign(path, "leaf-rsa2048", "sha256", "-o", out)
                self.assertRc(r, 2)
                self.assertOneErrorLine(r)
                self.assertFalse(os.path.exists(out))

    def test_verify_says_malformed(self):
        for name in MALFORMED:
            with self.subTest(fixture=name):
                path = self.copy(os.path.join(MALFORMED_DIR, name))
                r = verify(path)
                allowed = VERIFY_RC.get(name, (11,))
                self.assertIn(r.returncode, allowed, r.stdout + r.stderr)
                # reported either as a verdict line or as an error line
                if r.returncode == 11 and r.stdout:
                    self.assertTrue(lines(r.stdout)[0].startswith(
                        path + ": FAILED (malformed)"), r.stdout)
                elif r.returncode == 11:
                    self.assertOneErrorLine(r)
                self.assertEqual(sha256_file(path),
                                 sha256_file(os.path.join(MALFORMED_DIR, name)))

    def test_digest_fails(self):
        for name in MALFORMED:
            if name == "few-rva.exe":
                continue  # hashable: the linear digest does not need dir 4
            with self.subTest(fixture=name):
                r = hsmsign("digest", self.copy(
                    os.path.join(MALFORMED_DIR, name)))
                self.assertNotEqual(r.returncode, 0)
                self.assertOneErrorLine(r)

    def test_some_files_failed(self):
        """One good and one bad file: every input is checked before signing,
        so without -coe nothing is signed (exit 2); with -coe the good one
        is signed (exit 1)."""
        good = self.copy("hello64.exe")
        bad = self.copy(os.path.join(MALFORMED_DIR, "mz-only.exe"))
        before = sha256_file(good)
        r = hsmsign("sign", *key_args(), good, bad)
        self.assertRc(r, 2)
        err = lines(r.stderr)
        self.assertEqual(len(err), 2, err)
        self.assertIn("mz-only.exe", err[0])
        self.assertIn("nothing signed", err[1])
        self.assertEqual(sha256_file(good), before)
        r = hsmsign("sign", *key_args(), "--continue-on-error", good, bad)
        self.assertRc(r, 1)
        self.assertOneErrorLine(r)
        self.assertRc(verify(good), 0)
