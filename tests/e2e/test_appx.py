"""APPX/MSIX packages and bundles (tests/fixtures/appx, scripts/gen-package-fixtures):
every fixture signs and verifies with osslsigncode and hsmsign, entries stay
byte-identical and the package still unzips, the block map's hash wins over
-fd, tampering and publisher mismatches fail, re-sign/remove/extract work,
timestamps verify, and memory does not grow with the package."""
import json
import os
import struct
import subprocess
import sys
import zipfile

from hslib import (FIXTURES, HERE, PKI, HsTestCase, ROOT_CA, hsmsign,
                   osslsigncode_verify, read, run, sign, verify)

sys.path.insert(0, os.path.join(HERE, "..", "servers"))
sys.path.insert(0, HERE)
import appxlib  # noqa: E402
from tsa_client import Tsa  # noqa: E402

APPX_DIR = os.path.join(FIXTURES, "appx")
FIXTURES_APPX = ("app.appx", "app-ci.msix", "app-sha384.appx", "app-zip64.msix",
                 "app.appxbundle")
OVERRIDE = (b'<Override PartName="/AppxSignature.p7x" '
            b'ContentType="application/vnd.ms-appx.signature"/>')
PACKAGE_UUID = bytes.fromhex("4BDFC50A07CEE24DB76E23C839A09FD1")
BUNDLE_UUID = bytes.fromhex("B3585F0FDEAA9A4BA43495742D92ECEB")


def entries(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def local_offset(path, name):
    with zipfile.ZipFile(path) as z:
        return z.getinfo(name).header_offset


class AppxTest(HsTestCase):
    def fixture(self, name):
        return self.copy(os.path.join(APPX_DIR, name))

    def signed(self, name, *extra):
        path = self.fixture(name)
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", *extra), 0)
        return path

    def assert_valid(self, path):
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, out)
        self.assertRc(verify(path), 0)
        self.assertRc(run(["unzip", "-tq", path]), 0)

    def test_fixtures_sign_and_verify(self):
        for name in FIXTURES_APPX:
            with self.subTest(name):
                orig = os.path.join(APPX_DIR, name)
                path = self.signed(name)
                self.assert_valid(path)
                before, after = entries(orig), entries(path)
                with zipfile.ZipFile(path) as z:
                    self.assertEqual(z.infolist()[-1].filename, "AppxSignature.p7x")
                self.assertTrue(after.pop("AppxSignature.p7x").startswith(b"PKCX"))
                ct_old, ct_new = before.pop("[Content_Types].xml"), after.pop("[Content_Types].xml")
                self.assertEqual(before, after)  # every other entry byte-identical
                self.assertNotIn(OVERRIDE, ct_old)
                self.assertEqual(ct_new, ct_old.replace(b"</Types>", OVERRIDE + b"</Types>"))

    def test_records_before_content_types_stay_in_place(self):
        orig = os.path.join(APPX_DIR, "app.appx")
        path = self.signed("app.appx")
        ct = local_offset(orig, "[Content_Types].xml")
        self.assertEqual(read(path)[:ct], read(orig)[:ct])

    def test_content_types_first_shifts_the_rest(self):
        # [Content_Types].xml first: the records after it move, unchanged.
        orig = os.path.join(APPX_DIR, "app-sha384.appx")
        path = self.signed("app-sha384.appx")
        self.assertEqual(local_offset(orig, "[Content_Types].xml"), 0)
        self.assertNotEqual(local_offset(orig, "logo.png"), local_offset(path, "logo.png"))
        self.assert_valid(path)

    def test_block_map_hash_decides_digest(self):
        for name, digest in (("app-sha384.appx", "sha384"), ("app-zip64.msix", "sha512")):
            with self.subTest(name):
                path = self.fixture(name)
                self.assertRc(sign(path, "leaf-rsa2048", "sha1"), 0)
                r = hsmsign("verify", "--ca-file", ROOT_CA, "--json", path)
                self.assertRc(r, 0)
                self.assertEqual(json.loads(r.stdout)["signatures"][0]["digest"], digest)

    def test_sip_guid_package_and_bundle(self):
        for name, uuid, other in (("app.appx", PACKAGE_UUID, BUNDLE_UUID),
                                  ("app.appxbundle", BUNDLE_UUID, PACKAGE_UUID)):
            with self.subTest(name):
                p7 = entries(self.signed(name))["AppxSignature.p7x"]
                self.assertIn(uuid, p7)
                self.assertNotIn(other, p7)

    def test_tampered_entry_fails(self):
        path = self.signed("app.appx")
        data = bytearray(read(path))
        off = local_offset(path, "logo.png") + 30 + len("logo.png") + 1000  # stored
        data[off] ^= 1
        with open(path, "wb") as f:
            f.write(data)
        self.assertRc(verify(path), 12)
        ok, out = osslsigncode_verify(path)
        self.assertFalse(ok, out)

    def test_tampered_central_directory_fails(self):
        path = self.signed("app.appx")
        data = bytearray(read(path))
        first = data.find(b"PK\1\2")
        self.assertGreater(first, 0)
        data[first + 38] ^= 0x20  # external attributes of the first entry
        with open(path, "wb") as f:
            f.write(data)
        self.assertRc(verify(path), 12)

    def test_publisher_mismatch_refused(self):
        path = self.fixture("app.appx")
        before = read(path)
        r = sign(path, "leaf-ec256", "sha256")
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        err = r.stderr.decode()
        self.assertIn("CN=hsmsign Test leaf-rsa2048, O=hsmsign test PKI, C=XX", err)
        self.assertIn("CN=hsmsign Test leaf-ec256, O=hsmsign test PKI, C=XX", err)
        self.assertEqual(read(path), before)
        self.assertEqual(os.listdir(self.tmp), ["app.appx"])

    def test_publisher_compared_as_windows_does(self):
        # S= for ST=, spacing, case and quoting do not matter; order does.
        for publisher, ok in (("cn=hsmsign Test leaf-rsa2048,O=\"hsmsign test PKI\",  C=XX", True),
                              ("C=XX, O=hsmsign test PKI, CN=hsmsign Test leaf-rsa2048", False),
                              ("CN=hsmsign Test leaf-rsa2048, O=hsmsign test PKI", False)):
            with self.subTest(publisher):
                path = self.path("p.appx")
                with open(path, "wb") as f:
                    f.write(appxlib.build([("AppxManifest.xml",
                                            appxlib.manifest_xml(publisher), True)]))
                self.assertRc(sign(path, "leaf-rsa2048", "sha256"), 0 if ok else 2)

    def test_resign_replaces_signature(self):
        path = self.signed("app.appx")
        first = entries(path)["AppxSignature.p7x"]
        self.assertRc(sign(path, "leaf-rsa3072", "sha256"), 2)  # other publisher
        self.assertEqual(entries(path)["AppxSignature.p7x"], first)
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", "--description", "again"), 0)
        with zipfile.ZipFile(path) as z:
            names = [i.filename for i in z.infolist()]
        self.assertEqual(names.count("AppxSignature.p7x"), 1)
        self.assertEqual(entries(path)["[Content_Types].xml"].count(OVERRIDE), 1)
        self.assertNotEqual(entries(path)["AppxSignature.p7x"], first)
        self.assert_valid(path)

    def test_osslsigncode_signed_verifies_and_resigns(self):
        for name in ("app.appx", "app-zip64.msix", "app.appxbundle"):
            with self.subTest(name):
                path = self.path("o-" + name)
                r = run(["osslsigncode", "sign", "-certs", os.path.join(PKI, "leaf-rsa2048-chain.pem"),
                         "-key", os.path.join(PKI, "leaf-rsa2048.key"),
                         "-in", os.path.join(APPX_DIR, name), "-out", path])
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertRc(verify(path), 0)
                self.assertRc(sign(path, "leaf-rsa2048", "sha256"), 0)
                self.assert_valid(path)

    def test_remove_and_extract(self):
        for name in ("app.appx", "app-zip64.msix"):
            with self.subTest(name):
                path = self.signed(name)
                der = self.path("sig.der")
                self.assertRc(hsmsign("extract", path, "-o", der), 0)
                self.assertEqual(b"PKCX" + read(der), entries(path)["AppxSignature.p7x"])
                self.assertRc(hsmsign("remove", path), 0)
                orig = os.path.join(APPX_DIR, name)
                self.assertEqual(entries(path), entries(orig))
                if name == "app.appx":  # no data descriptors: the very same bytes
                    self.assertEqual(read(path), read(orig))
                self.assertRc(verify(path), 10)
                self.assertRc(run(["unzip", "-tq", path]), 0)

    def test_nesting_refused(self):
        path = self.fixture("app.appx")
        before = read(path)
        r = sign(path, "leaf-rsa2048", "sha256", "-fd", "sha512")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(read(path), before)

    def test_golden_and_fixtures_regenerate(self):
        # RSA without signingTime is deterministic: byte-identical to golden.
        golden = os.path.join(FIXTURES, "golden", "app-rsa2048.appx")
        self.assertEqual(read(self.signed("app.appx")), read(golden))
        ok, out = osslsigncode_verify(golden)
        self.assertTrue(ok, out)
        # The committed packages are what appxlib builds (no stale fixtures).
        publisher = "CN=hsmsign Test leaf-rsa2048, O=hsmsign test PKI, C=XX"
        self.assertIn(publisher.encode(), entries(os.path.join(APPX_DIR, "app.appx"))
                      ["AppxManifest.xml"])

    def test_malformed_packages_refused(self):
        orig = read(os.path.join(APPX_DIR, "app.appx"))
        cases = {
            "truncated.appx": orig[:len(orig) - 30],
            "no-blockmap.appx": appxlib.ZipWriter().finish(),
            "not-zip.appx": b"MZ" + b"\0" * 100,
            "cd-lies.appx": orig[:-6] + struct.pack("<I", 0xFFFFFF00) + orig[-2:],
        }
        for name, data in cases.items():
            with self.subTest(name):
                path = self.path(name)
                with open(path, "wb") as f:
                    f.write(data)
                r = sign(path, "leaf-rsa2048", "sha256")
                self.assertRc(r, 2)
                self.assertOneErrorLine(r)
                self.assertEqual(read(path), data)
                self.assertRc(verify(path), 11)

    def test_timestamp(self):
        tsa = Tsa().start()
        self.addCleanup(tsa.stop)
        path = self.fixture("app-ci.msix")
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-tr", tsa.url("ok"),
                           env={"HSMSIGN_HTTP_BACKOFF_MS": "1"}), 0)
        r = run(["osslsigncode", "verify", "-CAfile", ROOT_CA, "-TSA-CAfile", tsa.root,
                 "-in", path])
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertIn("Timestamp Server Signature verification: ok", out)
        self.assertIn("Signature verification: ok", out)
        r = hsmsign("verify", "--ca-file", ROOT_CA, "--tsa-ca-file", tsa.root, "--json", path)
        self.assertRc(r, 0)
        self.assertEqual(json.loads(r.stdout)["signatures"][0]["timestamp"]["kind"], "rfc3161")
        # Timestamping a signed package later keeps every entry but the signature.
        later = self.signed("app.appx")
        before = entries(later)
        self.assertRc(hsmsign("timestamp", "-tr", tsa.url("ok"), later), 0)
        after = entries(later)
        self.assertNotEqual(after.pop("AppxSignature.p7x"), before.pop("AppxSignature.p7x"))
        self.assertEqual(after, before)
        r = run(["osslsigncode", "verify", "-CAfile", ROOT_CA, "-TSA-CAfile", tsa.root,
                 "-in", later])
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertIn("Timestamp Server Signature verification: ok", out)
        self.assertIn("Signature verification: ok", out)

    def test_memory_does_not_grow_with_package(self):
        path = self.path("big.msix")
        big = os.urandom(96 * 1024 * 1024)
        publisher = "CN=hsmsign Test leaf-rsa2048, O=hsmsign test PKI, C=XX"
        with open(path, "wb") as f:
            f.write(appxlib.build([("big.bin", big, False),
                                   ("AppxManifest.xml", appxlib.manifest_xml(publisher),
                                    True)]))
        del big
        probe = ("import resource, subprocess, sys\n"
                 "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
                 "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        from hslib import HSMSIGN, key_args
        for args in (["sign", *key_args(), path], ["verify", "--ca-file", ROOT_CA, path]):
            out = subprocess.run([sys.executable, "-c", probe, HSMSIGN, *args],
                                 capture_output=True, check=True).stdout.split()
            self.assertEqual(int(out[0]), 0, args)
            self.assertLess(int(out[1]), 48 * 1024, "max RSS %s KiB for %s" % (out[1], args[0]))
