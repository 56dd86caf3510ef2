"""Batch signing: many files per run, in parallel, with -coe, Ctrl-C, globs,
@lists, --report, and a client-side rate limiter against the emulator.

Every remote service is the local emulator (tests/servers/azure_emu.py).
"""
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

from hslib import (HSMSIGN, ROOT_CA, UNSIGNED_PE, HsTestCase, key_args,
                   lines, osslsigncode_verify, read, run, sha256_file)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "servers"))
from emu_client import SharedEmulator  # noqa: E402
from tsa_client import Tsa  # noqa: E402

SECRET_ID = "11111111-1111-1111-1111-111111111111"
SCRUB = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
         "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
         "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
         "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
         "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


class BatchCase(HsTestCase):
    def make_files(self, n, subdir="in", names=None):
        """n unsigned PE copies (cycling through the fixtures) in tmp/subdir."""
        d = self.path(subdir)
        os.makedirs(d, exist_ok=True)
        paths = []
        for i in range(n):
            src = UNSIGNED_PE[i % len(UNSIGNED_PE)]
            name = names[i] if names else "f%03d-%s" % (i, src)
            paths.append(self.copy(src, os.path.join(subdir, name)))
        return paths

    def local_sign(self, *args, **kw):
        return run([HSMSIGN, "sign", *key_args(), *args], **kw)

    def assertNoTempFiles(self, d):
        left = [f for f in os.listdir(d) if ".hsmsign-" in f]
        self.assertEqual(left, [], "temporary files left behind")


class TestLocalBatch(BatchCase):
    def test_parallel_outputs_equal_one_at_a_time(self):
        """RSA PKCS#1 v1.5 is deterministic: a parallel batch must write
        exactly what signing each file alone writes."""
        batch = self.make_files(27, "batch")
        single = self.make_files(27, "single")
        r = self.local_sign("-mdop", "8", *batch)
        self.assertRc(r, 0)
        self.assertEqual(len(re.findall(rb"^Signed: ", r.stdout, re.M)), 27)
        self.assertIn(b"Summary: 27 signed, 0 skipped, 0 failed", r.stdout)
        for path in single:
            self.assertRc(self.local_sign("-mdop", "1", path), 0)
        for a, b in zip(batch, single):
            self.assertEqual(read(a), read(b), a)
        for path in batch[:len(UNSIGNED_PE)]:
            ok, out = osslsigncode_verify(path)
            self.assertTrue(ok, "%s: %s" % (path, out))

    def test_globs_lists_and_duplicates(self):
        files = self.make_files(6, "tree/a") + self.make_files(4, "tree/b/c")
        other = self.copy("hello64.exe", "other.exe")
        listing = self.path("list.txt")
        with open(listing, "w") as f:
            f.write("# release files\n\n%s\n  %s  \n%s\n" % (
                other, other, os.path.join(self.tmp, "tree", "b", "*", "*.exe")))
        report = self.path("r.json")
        # '**' crosses directories; the Windows-style pattern and the list
        # name the same files again: each is signed once.
        r = self.local_sign("--report", report, os.path.join(self.tmp, "tree", "**", "*"),
                            self.tmp + "\\tree\\a\\*.dll", "@" + listing,
                            "-ifl", listing)
        self.assertRc(r, 0)
        with open(report) as f:
            rep = json.load(f)
        paths = [e["path"] for e in rep["files"]]
        self.assertEqual(len(paths), len(set(paths)))
        self.assertEqual(sorted(os.path.realpath(p) for p in paths),
                         sorted(os.path.realpath(p) for p in files + [other]))
        self.assertEqual(rep["summary"]["signed"], 11)

    def test_many_inputs_are_collected_in_linear_time(self):
        """Each input used to be compared with every one before it to drop
        duplicates: 40,000 inputs cost seconds of CPU before the key was
        even opened. The inputs are 40,000 names (hard links) of one file
        plus 1,000 repeated ones; the vault is a closed port, so the run
        stops right after the inputs are collected and checked."""
        d = self.path("many")
        os.makedirs(d)
        first = self.copy("hello64.exe", os.path.join("many", "f0.exe"))
        names = [first]
        for i in range(1, 40000):
            names.append(os.path.join(d, "f%d.exe" % i))
            os.link(first, names[-1])
        listing = self.path("many.txt")
        with open(listing, "w") as f:
            f.write("\n".join(names + names[:1000]) + "\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        r = run([HSMSIGN, "sign", "-kvu", "https://127.0.0.1:9", "-kvc", "x", "-kva", "env:T",
                 "--http-retries", "0", "-ifl", listing], env={"T": "not-a-token"})
        user = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
        self.assertRc(r, 87)
        self.assertEqual(len(lines(r.stderr)), 1, r.stderr[-2000:])
        self.assertIn(b"127.0.0.1", r.stderr)
        # 0.15 s of CPU here (0.45 s under ASan); comparing pairs took 3.5 s.
        self.assertLess(user, 1.2)

    def test_pattern_without_match_signs_nothing(self):
        files = self.make_files(3)
        before = [sha256_file(p) for p in files]
        r = self.local_sign(*files, self.path("in/*.nothing"))
        self.assertRc(r, 2)
        self.assertIn(b"no files match", r.stderr)
        self.assertEqual([sha256_file(p) for p in files], before)

    def test_pattern_with_many_stars_matches_in_linear_time(self):
        """fuzz_cli found a list line ("**/" and ~40 stars) that made the
        recursive '**' matcher backtrack exponentially: the walk never
        finished. Each (pattern, path) position is now tried once."""
        files = self.make_files(3, subdir="in/sub")
        pattern = self.path("in") + "/**/" + "*" * 40 + "1*/*1"
        t0 = time.monotonic()
        r = self.local_sign(pattern, timeout=60)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertRc(r, 2)
        self.assertIn(b"no files match", r.stderr)
        before = [sha256_file(p) for p in files]
        r = self.local_sign(self.path("in") + "/**/" + "*" * 40 + "hello64*")
        self.assertRc(r, 0)  # the same stars still match what they should
        after = [sha256_file(p) for p in files]
        self.assertEqual([b != a for b, a in zip(before, after)],
                         [False, True, False])  # only f001-hello64.exe

    def test_every_input_checked_before_signing(self):
        files = self.make_files(5)
        bad = self.path("in/not-a-pe.exe")
        with open(bad, "wb") as f:
            f.write(b"MZ" + b"\0" * 10)
        missing = self.path("in/missing.exe")
        before = [sha256_file(p) for p in files]
        r = self.local_sign(*files[:3], bad, missing, *files[3:])
        self.assertRc(r, 2)
        err = lines(r.stderr)
        self.assertEqual(len(err), 3, err)
        self.assertIn("not-a-pe.exe", err[0])
        self.assertIn("missing.exe", err[1])
        self.assertIn("nothing signed: 2 input(s)", err[2])
        self.assertEqual([sha256_file(p) for p in files], before)
        # -coe signs the good ones and still fails the run (exit 1).
        r = self.local_sign("-coe", *files[:3], bad, missing, *files[3:])
        self.assertRc(r, 1)
        self.assertIn(b"Summary: 5 signed, 0 skipped, 0 failed", r.stdout)
        for p, h in zip(files, before):
            self.assertNotEqual(sha256_file(p), h)

    def test_many_inputs_checked_in_parallel_report_in_order(self):
        # 150 inputs are checked on several threads; the errors still come
        # one line per bad input, in the order the inputs were given.
        files = self.make_files(150)
        bad_at = (5, 77, 149)
        for i in bad_at:
            with open(files[i], "wb") as f:
                f.write(b"MZ" + b"\0" * (10 + i))
        before = [sha256_file(p) for p in files]
        r = self.local_sign(*files)
        self.assertRc(r, 2)
        err = lines(r.stderr)
        self.assertEqual(len(err), 4, err)
        for line, i in zip(err, bad_at):
            self.assertIn(os.path.basename(files[i]), line)
        self.assertIn("nothing signed: 3 input(s)", err[3])
        self.assertEqual([sha256_file(p) for p in files], before)
        r = self.local_sign("-coe", "-q", *files)
        self.assertRc(r, 1)
        changed = [sha256_file(p) != h for p, h in zip(files, before)]
        self.assertEqual([i for i, c in enumerate(changed) if not c], list(bad_at))

    def test_fifo_input_refused_without_waiting(self):
        # Opening a named pipe for reading waits for a writer: an input that
        # is not a regular file is refused before it is opened.
        fifo = self.path("pipe.exe")
        os.mkfifo(fifo)
        for cmd in (["sign", *key_args()], ["verify", "--ca-file", ROOT_CA]):
            t0 = time.monotonic()
            r = run([HSMSIGN, *cmd, fifo], timeout=30)
            self.assertLess(time.monotonic() - t0, 10)
            self.assertRc(r, 2)
            self.assertIn(b"not a regular file", r.stderr)

    def test_failure_stops_batch_unless_coe(self):
        files = self.make_files(12)
        before = [sha256_file(p) for p in files]
        env = {"HSMSIGN_FAULT": "sign"}
        r = self.local_sign("-mdop", "1", *files, env=env)
        self.assertRc(r, 2)
        err = lines(r.stderr)
        self.assertEqual(len(err), 2, err)
        self.assertIn("stopped after the first failure: 11 file(s) not signed", err[1])
        r = self.local_sign("-mdop", "4", "-coe", *files, env=env)
        self.assertRc(r, 2)
        self.assertEqual(len(lines(r.stderr)), 12)
        self.assertIn(b"0 signed, 0 skipped, 12 failed, 0 not started", r.stdout)
        self.assertEqual([sha256_file(p) for p in files], before)
        self.assertNoTempFiles(self.path("in"))

    def test_skip_signed_and_quiet(self):
        files = self.make_files(4)
        self.assertRc(self.local_sign(files[0], files[1]), 0)
        r = self.local_sign("-s", *files)
        self.assertRc(r, 0)
        self.assertEqual(len(re.findall(rb"^Skipped \(already signed\): ", r.stdout, re.M)), 2)
        self.assertIn(b"Summary: 2 signed, 2 skipped, 0 failed", r.stdout)
        r = self.local_sign("-q", "-s", *files)
        self.assertRc(r, 0)
        self.assertEqual(r.stdout, b"")

    def test_report_schema(self):
        files = self.make_files(3)
        before = {p: sha256_file(p) for p in files}
        report = self.path("report.json")
        r = self.local_sign("--report", report, "-fd", "sha384", *files)
        self.assertRc(r, 0)
        with open(report) as f:
            rep = json.load(f)
        self.assertEqual(set(rep), {"tool", "key_id", "digest", "timestamp_servers",
                                    "summary", "files"})
        self.assertRegex(rep["key_id"], r"^sha1:[0-9A-F]{40}$")
        self.assertEqual(rep["digest"], "sha384")
        self.assertEqual(rep["summary"], dict(rep["summary"], files=3, signed=3, skipped=0,
                                              failed=0, not_started=0, vault_requests=0))
        for e in rep["files"]:
            self.assertEqual(set(e), {"path", "output", "format", "digest", "key_id",
                                      "result", "error", "duration_s", "sha256_before",
                                      "sha256_after", "timestamp_time", "tsa"})
            self.assertEqual((e["format"], e["result"], e["error"]), ("pe", "signed", None))
            self.assertEqual((e["timestamp_time"], e["tsa"]), (None, None))
            self.assertEqual(e["sha256_before"], before[e["path"]])
            self.assertEqual(e["sha256_after"], sha256_file(e["path"]))
            self.assertGreater(e["duration_s"], 0)
        # A failed file carries its error; the report is written anyway.
        r = self.local_sign("--report", report, "-coe", *files, env={"HSMSIGN_FAULT": "sign"})
        self.assertRc(r, 2)
        with open(report) as f:
            rep = json.load(f)
        self.assertEqual(rep["summary"]["failed"], 3)
        for e in rep["files"]:
            self.assertEqual(e["result"], "failed")
            self.assertTrue(e["error"])
            self.assertEqual(e["sha256_before"], e["sha256_after"])


class TestTimestampBatch(BatchCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tsa = Tsa().start()

    @classmethod
    def tearDownClass(cls):
        cls.tsa.stop()

    def test_timestamp_rate_limit_per_server(self):
        files = self.make_files(10)
        t0 = time.time()
        report = self.path("r.json")
        r = self.local_sign("-mdop", "8", "-tr", self.tsa.url("ok"),
                            "--timestamp-rate-limit", "5", "--report", report, *files)
        elapsed = time.time() - t0
        self.assertRc(r, 0)
        with open(report) as f:
            rep = json.load(f)
        self.assertEqual(rep["timestamp_servers"], [self.tsa.url("ok")])
        for e in rep["files"]:
            self.assertRegex(e["timestamp_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertIn("CN=", e["tsa"])
        # 10 requests at 5/s with a 0.5-token burst: at least 1.8 s.
        self.assertGreater(elapsed, 1.7)
        for path in files[:2]:
            v = run([HSMSIGN, "verify", "--ca-file", ROOT_CA, "--tsa-ca-file",
                     self.tsa.root, path])
            self.assertRc(v, 0)
            self.assertIn(b"timestamp", v.stdout.lower() + v.stderr.lower())


class EmulatorBatchCase(SharedEmulator, BatchCase):
    def env(self):
        env = {k: "" for k in SCRUB}
        env.update({"AZURE_AUTHORITY_HOST": self.info["https"],
                    "SSL_CERT_FILE": self.info["tls_ca"],
                    "IMDS_ENDPOINT": "http://127.0.0.1:9",
                    "XDG_CACHE_HOME": os.path.join(self.tmp, "cache"),
                    "HSMSIGN_HTTP_BACKOFF_MS": "20"})
        return env

    def vault_args(self, *args):
        return [HSMSIGN, "sign", "-kvu", self.info["https"], "-kvc", "codesign-rsa2048",
                "-kvi", SECRET_ID, "-kvt", self.info["tenant"], "-kvs",
                "file:" + os.path.join(self.state, "client-secret.txt"), *args]

    def vault_sign(self, *args):
        return run(self.vault_args(*args), env=self.env())

    def sign_log(self):
        return [e for e in self.emu.log()
                if e["method"] == "POST" and e["path"].endswith("/sign")]

    def sign_peak(self):
        """The most sign requests the emulator had in flight at once."""
        spans = [(e["t"], e["t"] + e["ms"] / 1000.0) for e in self.sign_log()]
        return max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never
    answers: a vault (and identity endpoint) that hangs."""

    def __init__(self, test):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()
        test.addCleanup(self.stop)

    def accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class TestEarlyKeyOpen(BatchCase):
    """A remote key is opened while the inputs are checked."""

    def test_bad_input_does_not_wait_for_a_hanging_vault(self):
        # The key is still opening (the vault never answers) when an input
        # fails its check: the run ends at once with the input's error,
        # not after the HTTP timeouts, and says nothing of the vault.
        # The input list comes on stdin, written only once the vault has
        # accepted the opening connection: the check cannot finish first,
        # however the threads are scheduled.
        srv = SilentServer(self)
        url = "https://127.0.0.1:%d" % srv.port
        files = self.make_files(200)
        bad = self.path("in/not-a-pe.exe")
        with open(bad, "wb") as f:
            f.write(b"MZ" + b"\0" * 10)
        secret = self.path("secret.txt")
        with open(secret, "w") as f:
            f.write("s3cret\n")
        before = [sha256_file(p) for p in files]
        env = dict(os.environ)
        env.update({k: "" for k in SCRUB})
        env.update({"AZURE_AUTHORITY_HOST": url, "IMDS_ENDPOINT": "http://127.0.0.1:9",
                    "XDG_CACHE_HOME": self.path("cache")})
        proc = subprocess.Popen(
            [HSMSIGN, "sign", "-kvu", url, "-kvc", "codesign", "-kvi", SECRET_ID, "-kvt",
             "72f988bf-86f1-41af-91ab-2d7cd011db47", "-kvs", "file:" + secret, "-ifl",
             "/dev/stdin"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.addCleanup(proc.kill)
        deadline = time.monotonic() + 30
        while not srv.conns and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(srv.conns, "the key was not being opened before the inputs came")
        listing = "\n".join(files[:100] + [bad] + files[100:]) + "\n"
        t0 = time.monotonic()
        out, err = proc.communicate(listing.encode(), timeout=120)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(proc.returncode, 2, err)
        err = lines(err)
        self.assertEqual(len(err), 2, err)
        self.assertIn("not-a-pe.exe", err[0])
        self.assertIn("nothing signed: 1 input(s)", err[1])
        self.assertEqual([sha256_file(p) for p in files], before)


class TestVaultBatch(EmulatorBatchCase):
    def test_requests_in_flight_and_one_call_per_file(self):
        files = self.make_files(48)
        self.emu.config(latency_ms=100)
        r = self.vault_sign("-mdop", "16", "--report", self.path("r.json"), *files)
        self.assertRc(r, 0)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 48)
        self.assertEqual(self.emu.count("GET", "/certificates/", bearer=True), 1)
        # The emulator's log shows requests overlapping in time.
        most = self.sign_peak()
        self.assertGreaterEqual(most, 8, "at most %d sign requests in flight" % most)
        # 24 worker threads (16 + 8 for file work), but never more than
        # -mdop sign requests at once.
        self.assertLessEqual(most, 16, "%d sign requests in flight at -mdop 16" % most)
        with open(self.path("r.json")) as f:
            rep = json.load(f)
        self.assertTrue(rep["key_id"].startswith(self.info["https"] + "/keys/"))
        self.assertGreaterEqual(rep["summary"]["vault_requests"], 49)
        self.assertIn(b"vault requests", r.stdout)
        for path in files[:3]:
            ok, out = osslsigncode_verify(path, self.info["root"])
            self.assertTrue(ok, out)

    def test_rate_limiter_keeps_below_vault_throttling(self):
        files = self.make_files(30)
        # The vault allows 20 sign requests in any second; the excess gets
        # 429 without Retry-After, as Key Vault does.
        self.emu.config(rate_limit=20, rate_window_ms=1000, only_paths=["/keys/"])
        t0 = time.time()
        r = self.vault_sign("-mdop", "8", "--vault-rate-limit", "15", *files)
        elapsed = time.time() - t0
        self.assertRc(r, 0)
        self.assertEqual([e["status"] for e in self.sign_log()].count(429), 0)
        self.assertEqual(self.emu.count("POST", "/keys/", status=200), 30)
        # 30 requests at 15/s (burst 1.5): about 2 s.
        self.assertGreater(elapsed, 1.5)

    def test_without_limiter_429s_are_retried(self):
        files = self.make_files(30)
        self.emu.config(rate_limit=10, rate_window_ms=500, only_paths=["/keys/"])
        r = self.vault_sign("-mdop", "8", "--vault-rate-limit", "0", "--http-retries", "30",
                            *files)
        self.assertRc(r, 0)
        statuses = [e["status"] for e in self.sign_log()]
        self.assertGreater(statuses.count(429), 0, "the emulator never throttled")
        self.assertEqual(statuses.count(200), 30)

    def test_sigint_leaves_files_signed_or_untouched(self):
        files = self.make_files(60)
        before = {p: sha256_file(p) for p in files}
        self.emu.config(latency_ms=150)
        env = dict(os.environ)
        env.update(self.env())
        proc = subprocess.Popen(self.vault_args("-mdop", "4", *files), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline and len(self.sign_log()) < 8:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        self.assertIn(proc.returncode, (1, 2), err)
        self.assertIn(b"interrupted", err)
        signed = [p for p in files if sha256_file(p) != before[p]]
        self.assertGreater(len(signed), 0)
        self.assertLess(len(signed), len(files))
        for p in signed:
            ok, out_text = osslsigncode_verify(p, self.info["root"])
            self.assertTrue(ok, "%s: %s" % (p, out_text))
        self.assertEqual(len(self.sign_log()), len(signed))
        self.assertNoTempFiles(self.path("in"))


if __name__ == "__main__":
    unittest.main()
