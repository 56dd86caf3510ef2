"""Libraries loaded on first use (lib/core/curl_api.h, lib/serve/mhd_api.h).

On Linux builds hsmsign links neither libcurl nor libmicrohttpd and GnuTLS;
it loads libcurl when a command first needs the network, and the other two
when `hsmsign serve` starts. Checked here, with the dynamic loader's own
log (LD_DEBUG=files) as the witness: the binaries do not name them as
NEEDED; local signing and verifying load none of them (a signature that
osslsigncode accepts all the same); `--version` and a remote signature
load libcurl and nothing of serve's; serve loads libmicrohttpd; and when a
library cannot be loaded (HSMSIGN_FAULT makes the loader ask for a name no
system has), the run ends with one error line naming the library and exit
code 87 (serve: 2, it cannot start), and the input is untouched.
"""
import glob
import json
import os
import re
import subprocess
import sys
import unittest

import hslib
from hslib import HSMSIGN, HsTestCase, hsmsign, read, sign

import test_serve

NETWORK_LIBS = ("libcurl", "libmicrohttpd", "libgnutls")


def needed(path):
    """The NEEDED entries of an ELF file (readelf, from binutils)."""
    out = subprocess.run(["readelf", "-d", path], capture_output=True,
                         check=True).stdout.decode()
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def links_network_libraries():
    return any(n.startswith(NETWORK_LIBS) for n in needed(HSMSIGN))


# CTest passes the build's CMake option, so that a build meant to load the
# libraries on first use cannot skip these tests by linking them after all.
# By hand (unset), the binary says.
LAZY = os.environ.get("HSMSIGN_LAZY_LOAD",
                      "ON" if sys.platform.startswith("linux") and
                      not links_network_libraries() else "OFF") == "ON"


@unittest.skipUnless(LAZY, "this build links libcurl (HSMSIGN_LAZY_LOAD=OFF)")
class LazyLoad(HsTestCase):

    def trace_env(self):
        """Environment making the dynamic loader log every object it loads
        (LD_DEBUG=files), and the prefix of its log files."""
        prefix = self.path("ld-%d" % len(os.listdir(self.tmp)))
        return {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": prefix}, prefix

    def loaded(self, prefix):
        """Base names of the libraries in the loader logs at prefix."""
        names = set()
        for log in glob.glob(prefix + ".*"):
            with open(log, errors="replace") as f:
                for m in re.finditer(r"file=(\S+) \[\d+\];\s+(?:needed|dynamically loaded) by",
                                     f.read()):
                    names.add(os.path.basename(m.group(1)))
        self.assertIn("libcrypto.so.3", names, "the loader log was not read")
        return names

    def run_traced(self, *args, env=None):
        """Runs hsmsign under trace_env(); (result, loaded())."""
        full_env, prefix = self.trace_env()
        full_env.update(env or {})
        r = hsmsign(*args, env=full_env)
        return r, self.loaded(prefix)

    def serve_config(self):
        """A serve configuration with one file key, on a free port."""
        cfg = self.path("serve.json")
        with open(cfg, "w") as fp:
            json.dump(test_serve.base_config(hslib.free_port(),
                                             {"codesign": test_serve.file_key()}), fp)
        return cfg

    def assertLoaded(self, loaded, stem, expected):
        got = any(name.startswith(stem) for name in loaded)
        self.assertEqual(got, expected, "%s %s loaded: %s" % (
            stem, "not" if expected else "", sorted(loaded)))

    def test_binaries_do_not_link_network_libraries(self):
        for name in needed(HSMSIGN):
            self.assertFalse(name.startswith(NETWORK_LIBS), name)
        lib = os.path.join(os.path.dirname(HSMSIGN), "libhsmsign.so.0")
        if os.path.exists(lib):
            for name in needed(lib):
                self.assertFalse(name.startswith(NETWORK_LIBS), name)

    def test_local_sign_and_verify_load_none(self):
        f = self.copy("hello64.exe")
        r, loaded = self.run_traced("sign", *hslib.key_args(), "-fd", "sha256", f)
        self.assertRc(r, 0)
        for stem in NETWORK_LIBS:
            self.assertLoaded(loaded, stem, False)
        ok, out = hslib.osslsigncode_verify(f)
        self.assertTrue(ok, out)
        r, loaded = self.run_traced("verify", "--ca-file", hslib.ROOT_CA, f)
        self.assertRc(r, 0)
        for stem in NETWORK_LIBS:
            self.assertLoaded(loaded, stem, False)

    def test_version_loads_libcurl(self):
        r, loaded = self.run_traced("--version")
        self.assertRc(r, 0)
        self.assertRegex(r.stdout.decode(), r"(?m)^libcurl \d+\.\d+\.\d+$")
        self.assertLoaded(loaded, "libcurl", True)
        self.assertLoaded(loaded, "libmicrohttpd", False)

    def test_remote_sign_loads_libcurl_only(self):
        port = hslib.free_port()
        srv = test_serve.Server(self, test_serve.base_config(
            port, {"codesign": test_serve.file_key()}))
        self.addCleanup(srv.stop)
        f = self.copy("hello64.exe")
        r, loaded = self.run_traced("sign", "-kvu", srv.url, "-kvc", "codesign",
                                    "-kva", "env:T", "-fd", "sha256", f,
                                    env={"T": test_serve.TOKEN})
        self.assertRc(r, 0)
        self.assertLoaded(loaded, "libcurl", True)
        self.assertLoaded(loaded, "libmicrohttpd", False)
        ok, out = hslib.osslsigncode_verify(f)
        self.assertTrue(ok, out)

    def test_serve_loads_libmicrohttpd(self):
        r, loaded = self.run_traced("serve", "--config", self.serve_config(), "--check")
        self.assertRc(r, 0)
        # --check reads the configuration and opens the keys; it starts no
        # server, so it needs no HTTP server library.
        self.assertLoaded(loaded, "libmicrohttpd", False)
        env, prefix = self.trace_env()
        srv = test_serve.Server(self, test_serve.base_config(
            hslib.free_port(), {"codesign": test_serve.file_key()}), env=env)
        self.assertEqual(srv.stop(), 0)
        self.assertLoaded(self.loaded(prefix), "libmicrohttpd", True)

    def test_missing_libcurl(self):
        for url in ("https://kv.hsmsign.invalid", "http://127.0.0.1:9"):
            f = self.copy("hello64.exe", "in-%d.exe" % len(url))
            before = read(f)
            r = hsmsign("sign", "-kvu", url, "-kvc", "codesign", "-kva", "env:T",
                        "-fd", "sha256", f,
                        env={"T": "unused-token", "HSMSIGN_FAULT": "load-libcurl"})
            self.assertRc(r, 87, url)
            self.assertOneErrorLine(r)
            err = r.stderr.decode()
            self.assertIn("libcurl could not be loaded", err)
            self.assertIn("cannot open shared object file", err)
            self.assertNotIn("unused-token", err)
            self.assertEqual(read(f), before)
        # Local signing does not need it at all.
        f = self.copy("hello64.exe")
        r = sign(f, env={"HSMSIGN_FAULT": "load-libcurl"})
        self.assertRc(r, 0)

    def test_missing_libmicrohttpd(self):
        r = hsmsign("serve", "--config", self.serve_config(), "--allow-root",
                    env={"HSMSIGN_FAULT": "load-libmicrohttpd"}, timeout=30)
        # The server cannot start: exit 2, as when the address cannot be
        # bound (docs/server.md).
        self.assertRc(r, 2)
        err = r.stderr.decode()
        self.assertIn("libmicrohttpd could not be loaded", err)
        self.assertEqual(len([line for line in err.splitlines()
                              if "could not be loaded" in line]), 1, err)


if __name__ == "__main__":
    unittest.main()
