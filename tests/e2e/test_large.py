"""Large inputs: memory stays flat as files grow (one streaming pass), and
the threaded pass (from 8 MiB on) gives the same checksum and signature
as any other."""
import os
import resource
import shutil
import subprocess
import unittest

from hslib import (HSMSIGN, PE_DIR, HsTestCase, key_args, osslsigncode_verify, pe_checksum_ok,
                   read, verify)


def peak_rss_kb(args):
    """Runs args in a fresh child and returns its peak RSS in KiB."""
    code = ("import resource, subprocess, sys;"
            "r = subprocess.run(sys.argv[1:], capture_output=True);"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run(["/usr/bin/python3", "-c", code, *args], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


class LargeFileTest(HsTestCase):

    def make_pe(self, name, overlay_mb):
        """hello64.exe plus an installer-like overlay of overlay_mb MiB."""
        path = self.path(name)
        shutil.copyfile(os.path.join(PE_DIR, "hello64.exe"), path)
        with open(path, "ab") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(overlay_mb):
                f.write(chunk)
            f.write(b"tail")  # an odd size: padding is needed
        return path

    def test_memory_does_not_grow_with_file_size(self):
        # Both above 64 MiB, where the pass keeps its deeper ring of
        # buffers (lib/core/stream.c): from there on nothing grows.
        small = self.make_pe("small.exe", 72)
        large = self.make_pe("large.exe", 384)
        rc_s, rss_s = peak_rss_kb([HSMSIGN, "sign", "-q", *key_args(), small])
        rc_l, rss_l = peak_rss_kb([HSMSIGN, "sign", "-q", *key_args(), large])
        self.assertEqual((rc_s, rc_l), (0, 0))
        self.assertLess(rss_l, 64 * 1024, "peak RSS must stay well under 64 MiB")
        self.assertLess(rss_l - rss_s, 8 * 1024,
                        "RSS grew by %d KiB for 312 MiB more input" % (rss_l - rss_s))
        self.assertRc(verify(large), 0)
        ok, out = osslsigncode_verify(large)
        self.assertTrue(ok, out)

    def test_threaded_pass_checksum(self):
        # 12 MiB: streamed on three threads (reader, writer, hasher); the
        # PE checksum is summed on the reader (lib/formats/pe.c), in place
        # and with -o.
        src = self.make_pe("in.exe", 12)
        out = self.path("out.exe")
        self.assertRc(self.hs("sign", "-q", *key_args(), "-o", out, src), 0)
        inplace = self.path("inplace.exe")
        shutil.copyfile(src, inplace)
        self.assertRc(self.hs("sign", "-q", *key_args(), inplace), 0)
        for path in (out, inplace):
            self.assertTrue(pe_checksum_ok(read(path)), path)
            self.assertRc(verify(path), 0)
            ok, text = osslsigncode_verify(path)
            self.assertTrue(ok, text)

    def hs(self, *args):
        return subprocess.run([HSMSIGN, *args], capture_output=True)


if __name__ == "__main__":
    unittest.main()
