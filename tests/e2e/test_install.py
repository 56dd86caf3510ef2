"""`make install` (issue 12): cmake --install of the build tree under test
into a temporary DESTDIR, then the installed files are used as a user would:
the binary signs and verifies, a small program compiles and runs against the
installed header, pkg-config file, shared and static library, the man pages
render and the bash completion completes."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import hslib
from hslib import HsTestCase, run

BUILD = os.path.dirname(os.path.abspath(hslib.HSMSIGN))

PROGRAM = r"""
#include <stdio.h>
#include <hsmsign.h>

int main(int argc, char **argv)
{
	struct hs_ctx *ctx;
	const char *format = NULL;
	int r;

	if (argc != 2 || hs_ctx_new(&ctx) != 0)
		return 2;
	r = hs_file_format(ctx, argv[1], &format);
	printf("%s %s\n", HS_VERSION, r == 0 ? format : hs_ctx_message(ctx));
	hs_ctx_free(ctx);
	return r == 0 ? 0 : 1;
}
"""


def cache_value(name):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split("=", 1)[1].strip()
    return ""


class InstallTest(HsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists(os.path.join(BUILD, "CMakeCache.txt")):
            raise AssertionError("HSMSIGN is not in a CMake build tree: "
                                 + BUILD)
        cls.destdir = tempfile.mkdtemp(prefix="hs-install-")
        cls.prefix = cache_value("CMAKE_INSTALL_PREFIX")
        r = run(["cmake", "--install", BUILD],
                env={"DESTDIR": cls.destdir})
        if r.returncode != 0:
            raise AssertionError("cmake --install failed: "
                                 + r.stderr.decode(errors="replace"))
        cls.root = cls.destdir + cls.prefix
        cls.libdir = os.path.join(cls.root,
                                  cache_value("CMAKE_INSTALL_LIBDIR"))
        cls.bin = os.path.join(cls.root, "bin", "hsmsign")
        cls.sanitize = cache_value("HSMSIGN_SANITIZE").upper() in ("ON", "1",
                                                                  "TRUE")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.destdir, ignore_errors=True)

    def commands(self):
        out = run([self.bin, "--help"]).stdout.decode()
        cmds = re.findall(r"^  ([a-z0-9-]+) ", out, re.M)
        self.assertIn("sign", cmds)
        self.assertNotIn("help-man", cmds)
        return cmds

    def test_layout(self):
        share = os.path.join(self.root, "share")
        for p in (self.bin,
                  os.path.join(self.root, "include", "hsmsign.h"),
                  os.path.join(self.libdir, "libhsmsign.a"),
                  os.path.join(self.libdir, "libhsmsign.so"),
                  os.path.join(self.libdir, "pkgconfig", "hsmsign.pc"),
                  os.path.join(share, "bash-completion", "completions",
                               "hsmsign"),
                  os.path.join(share, "zsh", "vendor-completions",
                               "_hsmsign"),
                  os.path.join(share, "fish", "vendor_completions.d",
                               "hsmsign.fish")):
            self.assertTrue(os.path.exists(p), p)
        self.assertTrue(os.access(self.bin, os.X_OK))
        # The installed binary must not point back into the build tree.
        with open(self.bin, "rb") as f:
            self.assertNotIn(BUILD.encode() + b"/libhsmsign", f.read())

    def test_installed_binary_signs_and_verifies(self):
        exe = self.copy("hello64.exe")
        r = run([self.bin, "sign", *hslib.key_args(), "-fd", "sha256", exe])
        self.assertRc(r, 0, "installed sign")
        self.assertRc(run([self.bin, "verify", "--ca-file", hslib.ROOT_CA,
                           exe]), 0, "installed verify")
        ok, out = hslib.osslsigncode_verify(exe)
        self.assertTrue(ok, out)
        ok, out = hslib.sbverify(exe)
        self.assertTrue(ok, out)

    def test_version_reports_runtime_libraries(self):
        r = run([self.bin, "--version"])
        self.assertRc(r, 0, "--version")
        out = r.stdout.decode()
        m = re.match(r"hsmsign (\S+) \(git ([0-9a-f]{12}|unknown)\)\n"
                     r"OpenSSL (\S+)\nlibcurl (\S+)\njansson (\S+)\n$", out)
        self.assertIsNotNone(m, out)
        version, _, openssl, curl, jansson = m.groups()
        self.assertEqual(version, cache_value("CMAKE_PROJECT_VERSION"))
        # The same shared libraries the system's own tools load.
        self.assertIn("OpenSSL %s " % openssl,
                      run(["openssl", "version"]).stdout.decode())
        self.assertIn("libcurl/%s " % curl,
                      run(["curl", "--version"]).stdout.decode())
        self.assertEqual(jansson, run(["pkg-config", "--modversion",
                                       "jansson"]).stdout.decode().strip())
        in_git = run(["git", "-C", hslib.HERE, "rev-parse", "HEAD"])
        if in_git.returncode == 0:
            self.assertNotIn("unknown", out.splitlines()[0])

    def test_man_pages_one_per_command(self):
        man1 = os.path.join(self.root, "share", "man", "man1")
        pages = sorted(os.listdir(man1))
        want = ["hsmsign.1"] + ["hsmsign-%s.1" % c for c in self.commands()]
        self.assertEqual(pages, sorted(want))
        if shutil.which("man") is None:
            self.skipTest("man not installed")
        r = run(["man", "-l", os.path.join(man1, "hsmsign-sign.1")],
                env={"MANWIDTH": "200", "MAN_KEEP_FORMATTING": ""})
        text = r.stdout.decode()
        self.assertRc(r, 0, "man -l")
        # Every option of 'sign --help' is in the page, '-' unmangled.
        help_text = run([self.bin, "sign", "--help"]).stdout.decode()
        for opt in re.findall(r"^  (--[a-z0-9-]+)", help_text, re.M):
            self.assertIn(opt, text)

    def test_bash_completion(self):
        comp = os.path.join(self.root, "share", "bash-completion",
                            "completions", "hsmsign")
        script = ('source "$1"; COMP_WORDS=(hsmsign %s); COMP_CWORD=%d; '
                  '_hsmsign; printf "%%s\\n" "${COMPREPLY[@]}"')
        r = run(["bash", "-c", script % ("ver", 1), "x", comp])
        self.assertEqual(r.stdout.decode().split(), ["verify"])
        r = run(["bash", "-c", script % ("sign --file-d", 2), "x", comp])
        self.assertEqual(r.stdout.decode().split(), ["--file-digest"])

    def pkg_config(self, *args):
        r = run(["pkg-config", "--define-variable=prefix=" + self.root,
                 *args, "hsmsign"],
                env={"PKG_CONFIG_PATH": os.path.join(self.libdir,
                                                     "pkgconfig")})
        self.assertRc(r, 0, "pkg-config")
        return r.stdout.decode().split()

    def compile_and_run(self, link_args):
        src = self.path("prog.c")
        with open(src, "w") as f:
            f.write(PROGRAM)
        prog = self.path("prog")
        flags = ["-std=c17", "-Wall", "-Werror"]
        if self.sanitize:  # the installed library is instrumented
            flags.append("-fsanitize=address,undefined")
        r = run(["cc", *flags, src, "-o", prog,
                 *self.pkg_config("--cflags"), *link_args])
        self.assertRc(r, 0, "cc")
        r = run([prog, os.path.join(hslib.PE_DIR, "hello64.exe")])
        self.assertRc(r, 0, "program")
        self.assertEqual(r.stdout.decode().split()[1], "pe")
        return prog

    def test_program_against_shared_library(self):
        libs = self.pkg_config("--libs")
        self.assertIn("-L" + self.libdir, libs)
        prog = self.compile_and_run(libs + ["-Wl,-rpath," + self.libdir])
        ldd = run(["ldd", prog]).stdout.decode()
        self.assertIn(os.path.join(self.libdir, "libhsmsign.so.0"), ldd)

    def test_program_against_static_library(self):
        # A static libhsmsign with the system's shared dependencies: the
        # .pc names them in Requires.private (no static libcurl here).
        deps = self.pkg_config("--print-requires-private")
        r = run(["pkg-config", "--libs", *deps])
        self.assertRc(r, 0, "pkg-config deps")
        libs = r.stdout.decode().split() + ["-lpthread", "-ldl"]
        prog = self.compile_and_run(
            [os.path.join(self.libdir, "libhsmsign.a")] + libs)
        self.assertNotIn("libhsmsign", run(["ldd", prog]).stdout.decode())

    def test_shared_library_exports_only_the_public_api(self):
        # -fvisibility=hidden + HS_API: the dynamic symbol table of the
        # installed library is exactly the functions include/hsmsign.h
        # declares, all of them marked HS_API; the Debian symbols file
        # lists the same set.
        with open(os.path.join(self.root, "include", "hsmsign.h")) as f:
            header = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
        declared = set(re.findall(
            r"^(?:HS_API )?[a-z][^;#{}()]*?\b(hs_[a-z0-9_]+)\(", header,
            re.M))
        marked = set(re.findall(r"^HS_API [^;#{}()]*?\b(hs_[a-z0-9_]+)\(",
                                header, re.M))
        self.assertGreater(len(declared), 40)
        self.assertEqual(declared - marked, set(),
                         "declared without HS_API")
        self.assertEqual(marked - declared, set())
        so = os.path.realpath(os.path.join(self.libdir, "libhsmsign.so"))
        r = run(["nm", "-D", "--defined-only", so])
        self.assertRc(r, 0, "nm -D")
        exported = set()
        for line in r.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] not in ("A", "a"):
                exported.add(parts[2].split("@")[0])
        self.assertEqual(exported - marked, set(),
                         "exported but not public API")
        self.assertEqual(marked - exported, set(),
                         "public API missing from libhsmsign.so")
        symbols = os.path.join(hslib.HERE, "..", "..", "debian",
                               "libhsmsign0.symbols")
        with open(symbols) as f:
            listed = set(re.findall(r"^ (hs_[a-z0-9_]+)@Base ", f.read(),
                                    re.M))
        self.assertEqual(listed, marked, "debian/libhsmsign0.symbols")


if __name__ == "__main__":
    unittest.main()
