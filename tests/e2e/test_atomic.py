"""A failure at any stage of signing leaves the input byte-identical and no
temporary file (`<name>.hsmsign-XXXXXX`) behind. Fault points are compiled
in with HSMSIGN_FAULT_INJECTION (CMake option, ON by default):
  sign   - after hashing, before the key signs
  write  - while writing the temporary file
  commit - after the temporary file is complete, before the rename
"""
import os

from hslib import HsTestCase, sha256_file, sign, verify

FAULTS = ("sign", "write", "commit")


class TestAtomic(HsTestCase):

    def check_fault(self, fault, fixture, output=None):
        path = self.copy(fixture)
        before = sha256_file(path)
        listing = sorted(os.listdir(self.tmp))
        extra = ["-o", self.path(output)] if output else []
        r = sign(path, "leaf-rsa2048", "sha256", *extra,
                 env={"HSMSIGN_FAULT": fault})
        self.assertNotEqual(r.returncode, 0, "fault %s did not fail" % fault)
        self.assertOneErrorLine(r)
        self.assertEqual(sha256_file(path), before)
        self.assertEqual(sorted(os.listdir(self.tmp)), listing,
                         "leftover files after fault %s" % fault)
        return path

    def test_in_place(self):
        for fault in FAULTS:
            for fixture in ("hello64.exe", "presigned64.exe"):
                with self.subTest(fault=fault, fixture=fixture):
                    self.check_fault(fault, fixture)
                    os.unlink(self.path(fixture))

    def test_with_output(self):
        for fault in FAULTS:
            with self.subTest(fault=fault):
                self.check_fault(fault, "odd64.exe", "out.exe")
                self.assertFalse(os.path.exists(self.path("out.exe")))
                os.unlink(self.path("odd64.exe"))

    def test_existing_output_kept(self):
        """A failed sign must not clobber an existing -o target either."""
        target = self.copy("lib64.dll", "out.exe")
        before = sha256_file(target)
        for fault in FAULTS:
            with self.subTest(fault=fault):
                path = self.check_fault(fault, "hello32.exe", "out.exe")
                self.assertEqual(sha256_file(target), before)
                os.unlink(path)

    def test_no_fault_control(self):
        """The same calls without HSMSIGN_FAULT succeed (the faults above
        are what made them fail)."""
        path = self.copy("hello64.exe")
        r = sign(path, env={"HSMSIGN_FAULT": ""})
        self.assertRc(r, 0)
        self.assertRc(verify(path), 0)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["hello64.exe"])


class TestDiskFull(HsTestCase):
    """A real write failure (not an injected one): the file-size limit makes
    writes fail with EFBIG as on a full disk. hsmsign must report it in one
    line, not be killed by SIGXFSZ, and leave no temp file."""

    def test_file_size_limit(self):
        import resource
        import subprocess
        from hslib import HSMSIGN, key_args, lines
        path = self.copy("symtab64.exe")
        before = sha256_file(path)
        limit = os.path.getsize(path) // 2

        def small_files():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        r = subprocess.run([HSMSIGN, "sign", *key_args(), path], capture_output=True,
                           preexec_fn=small_files)
        self.assertEqual(r.returncode, 2, r.stderr)
        err = lines(r.stderr)
        self.assertEqual(len(err), 1, err)
        self.assertIn("write failed", err[0])
        self.assertEqual(sha256_file(path), before)
        self.assertEqual(os.listdir(self.tmp), ["symtab64.exe"])
