"""No descriptor or memory growth over a 10,000-file batch (issue 8).

One `hsmsign sign` signs 10,000 small EFI images with a local key while
this test samples the process's open descriptors (/proc/PID/fd) and RSS.
Both must stay flat: what the batch holds per file must be released per
file. Then one `hsmsign verify` checks every output and osslsigncode a
sample. Linux only (/proc)."""
import os
import subprocess
import threading
import time
import unittest

from hslib import (HSMSIGN, HsTestCase, PE_DIR, ROOT_CA, key_args,
                   osslsigncode_verify, run)

N_FILES = 10000
JOBS = "2"


class Sampler(threading.Thread):
    """Samples (seconds, open fds, RSS KiB) of pid every `every` seconds."""

    def __init__(self, pid, every=0.05):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples, self.stop = [], threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            try:
                fds = len(os.listdir("/proc/%d/fd" % self.pid))
                with open("/proc/%d/status" % self.pid) as f:
                    rss = next(int(line.split()[1]) for line in f
                               if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                break  # the process has exited
            self.samples.append((time.monotonic() - t0, fds, rss))
            self.stop.wait(self.every)


@unittest.skipUnless(os.path.isdir("/proc/self/fd"), "needs /proc")
class TestTenThousandFiles(HsTestCase):
    def test_fds_and_rss_stay_flat_and_every_output_verifies(self):
        with open(os.path.join(PE_DIR, "app.efi"), "rb") as f:
            image = f.read()
        names = []
        for i in range(N_FILES):
            name = self.path("f%05d.efi" % i)
            with open(name, "wb") as f:
                f.write(image)
            names.append(name)
        listing = self.path("files.txt")
        with open(listing, "w") as f:
            f.write("\n".join(names) + "\n")

        t0 = time.monotonic()
        proc = subprocess.Popen(
            [HSMSIGN, "sign", *key_args(), "-mdop", JOBS, "-q", "@" + listing],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sampler = Sampler(proc.pid)
        sampler.start()
        out, err = proc.communicate(timeout=300)
        sampler.stop.set()
        sampler.join()
        elapsed = time.monotonic() - t0
        self.assertEqual(proc.returncode, 0, err.decode(errors="replace"))
        self.assertEqual(err, b"")

        samples = [s for s in sampler.samples if s[1] > 0]
        self.assertGreater(len(samples), 20, "too few samples to judge")
        third = len(samples) // 3
        first, last = samples[:third], samples[-third:]
        max_fds = max(s[1] for s in samples)
        # Bounded: stdio, the key and certificate, a couple of descriptors
        # per worker (input, temp output, directory): never per file done.
        self.assertLessEqual(max_fds, 32, "fd samples: %r" % samples[::50])
        self.assertLessEqual(max(s[1] for s in last),
                             max(s[1] for s in first) + 2,
                             "open descriptors grow with files done")
        rss_first = max(s[2] for s in first)
        rss_last = max(s[2] for s in last)
        self.assertLessEqual(rss_last, rss_first + 16 * 1024,
                             "RSS grows with files done: %d -> %d KiB" % (
                                 rss_first, rss_last))
        print("\n%d files signed in %.1f s; fds max %d; RSS %d -> %d KiB" % (
            N_FILES, elapsed, max_fds, rss_first, rss_last))

        # Every output: one verify run over all of them.
        r = run([HSMSIGN, "verify", "--ca-file", ROOT_CA, "-q", *names],
                timeout=300)
        self.assertRc(r, 0, "hsmsign verify of all outputs")
        for name in names[::N_FILES // 8]:
            ok, text = osslsigncode_verify(name)
            self.assertTrue(ok, text)


if __name__ == "__main__":
    unittest.main()
