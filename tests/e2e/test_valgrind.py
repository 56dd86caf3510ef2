"""Memory errors, leaks and descriptor leaks under valgrind memcheck.

The ASan+UBSan run of the whole suite (make check) catches most memory
errors; valgrind adds uninstrumented-library coverage (OpenSSL, libcurl) and
descriptor tracking: every file, socket and pipe hsmsign opens must be closed
by the time it exits, also after a batch of many files.
"""
import os
import re
import subprocess
import unittest

from hslib import HSMSIGN, HsTestCase, key_args, pki

# Not -q: the descriptor summary must always be printed, also when clean.
VALGRIND = ["valgrind", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--track-fds=yes"]


class ValgrindTest(HsTestCase):

    def memcheck(self, *args):
        r = subprocess.run(VALGRIND + [HSMSIGN, *args], capture_output=True, timeout=600)
        err = r.stderr.decode(errors="replace")
        self.assertNotEqual(r.returncode, 99, err)
        self.assertNotIn("definitely lost", err)
        opened = re.search(r"FILE DESCRIPTORS: (\d+) open \((\d+) std\) at exit", err)
        self.assertIsNotNone(opened, err)
        self.assertEqual(opened.group(1), opened.group(2), "descriptors leaked:\n" + err)
        return r

    def test_sign_verify_every_format(self):
        for fixture in ("hello64.exe", "msi/small.msi", "cab/stored.cab",
                        "scripts/ps1-utf8-crlf.ps1"):
            with self.subTest(fixture=fixture):
                path = self.copy(fixture)
                self.assertEqual(self.memcheck("sign", "-q", *key_args(), path).returncode, 0)
                self.assertEqual(self.memcheck("verify", "-q", "--ca-file", pki("root.pem"),
                                               path).returncode, 0)

    def test_batch_closes_every_descriptor(self):
        files = [self.copy("hello32.exe", "f%03d.exe" % i) for i in range(40)]
        r = self.memcheck("sign", "-q", "-mdop", "4", *key_args(), *files)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-2000:])

    def test_malformed_inputs(self):
        for name in ("truncated-header.exe", "certtable-lies.exe", "sections-past-eof.exe"):
            with self.subTest(name=name):
                path = self.copy(os.path.join("malformed", name))
                self.memcheck("sign", "-q", *key_args(), path)
                self.memcheck("verify", path)


if __name__ == "__main__":
    unittest.main()
