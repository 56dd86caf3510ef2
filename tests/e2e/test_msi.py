"""MSI/MSP/MST signing (authenticode.md §5): hsmsign's output is checked with
osslsigncode verify, an independent Python digest over the streams read by
python3-olefile (tests/e2e/cfblib.py), and msiinfo (the package still opens
and its tables are unchanged)."""
import os
import re
import shutil
import struct
import unittest

import cfblib
from hslib import (FIXTURES, HsTestCase, hsmsign, osslsigncode_verify, read, run, sign,
                   verify)

MSI_DIR = os.path.join(FIXTURES, "msi")
UNSIGNED = ("small.msi", "extra.msi", "many.msi", "many-v4.msi")
# SpcSipInfo of the MSI SIP as DER (authenticode.md §5.5)
SIP_MSI = bytes.fromhex("3024020101" "0410f1100c0000000000c0000000000000" "46"
                        + "020100" * 5)


def msi(name):
    return os.path.join("msi", name)


def osslsigncode_digests(path):
    """(current, calculated) DigitalSignature digests osslsigncode prints."""
    r = run(["osslsigncode", "verify", "-in", path])
    out = (r.stdout + r.stderr).decode(errors="replace")
    cur = re.search(r"Current DigitalSignature\s*:\s*([0-9A-F]+)", out)
    calc = re.search(r"Calculated DigitalSignature\s*:\s*([0-9A-F]+)", out)
    return (cur.group(1).lower() if cur else None, calc.group(1).lower() if calc else None)


def msiinfo(*args):
    r = run(["msiinfo", *args])
    return r.returncode, r.stdout


class MsiSignTest(HsTestCase):

    def check_signed(self, path, digest="sha256", dse=False):
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, out)
        self.assertRc(verify(path), 0, "hsmsign verify")
        tree = cfblib.read_tree(path)
        ds = cfblib.find(tree, cfblib.DS_NAME)
        self.assertIsNotNone(ds)
        self.assertIn(SIP_MSI, ds.data, "SpcSipInfo of the MSI SIP")
        dse_node = cfblib.find(tree, cfblib.DSE_NAME)
        self.assertEqual(dse_node is not None, dse)
        pre = None
        if dse:
            pre = cfblib.msi_prehash(tree, digest)
            self.assertEqual(dse_node.data, pre)
        # the digest osslsigncode found signed is our independent digest
        cur, calc = osslsigncode_digests(path)
        self.assertEqual(cur, cfblib.msi_digest(tree, digest, pre))
        self.assertEqual(cur, calc)

    def test_sign_keys_and_digests(self):
        cases = [("small.msi", "leaf-rsa2048", "sha256"), ("small.msi", "leaf-ec256", "sha1"),
                 ("extra.msi", "leaf-ec384", "sha384"), ("many.msi", "leaf-rsa3072", "sha512"),
                 ("many-v4.msi", "leaf-ec256", "sha256"), ("many.msi", "leaf-ec256", "sha256")]
        for name, leaf, digest in cases:
            with self.subTest(name=name, leaf=leaf, digest=digest):
                path = self.copy(msi(name), "%s-%s-%s" % (leaf, digest, name))
                before = cfblib.read_tree(path)
                self.assertRc(sign(path, leaf, digest), 0, "signing")
                self.check_signed(path, digest)
                after = cfblib.read_tree(path)
                self.assertEqual(cfblib.msi_digest(before, digest),
                                 cfblib.msi_digest(after, digest))
                # sector size kept
                self.assertEqual(read(path)[0x1E], 12 if name.endswith("v4.msi") else 9)

    def test_digest_command_matches_independent_digest(self):
        for name in UNSIGNED + ("presigned.msi",):
            for digest in ("sha1", "sha256", "sha512"):
                r = hsmsign("digest", "-fd", digest, os.path.join(MSI_DIR, name))
                self.assertRc(r, 0)
                tree = cfblib.read_tree(os.path.join(MSI_DIR, name))
                self.assertEqual(r.stdout.split()[0].decode(), cfblib.msi_digest(tree, digest))

    def test_digest_matches_osslsigncode_signed_fixtures(self):
        for name in ("presigned.msi", "presigned-dse.msi"):
            path = os.path.join(MSI_DIR, name)
            cur, calc = osslsigncode_digests(path)
            self.assertIsNotNone(cur)
            r = hsmsign("digest", path)
            self.assertRc(r, 0)
            self.assertEqual(r.stdout.split()[0].decode(), cur, name)
            self.assertRc(verify(path), 0, "hsmsign verifies osslsigncode's " + name)

    def test_msi_dse(self):
        for name, digest in (("small.msi", "sha256"), ("many.msi", "sha384"),
                             ("many-v4.msi", "sha1")):
            with self.subTest(name=name):
                path = self.copy(msi(name), digest + name)
                self.assertRc(sign(path, "leaf-rsa2048", digest, "--msi-dse"), 0)
                self.check_signed(path, digest, dse=True)

    def test_replace_keeps_dse_mode(self):
        path = self.copy(msi("presigned-dse.msi"))
        self.assertRc(sign(path, "leaf-ec256", "sha512"), 0)
        self.check_signed(path, "sha512", dse=True)
        path = self.copy(msi("presigned.msi"))
        old = cfblib.find(cfblib.read_tree(path), cfblib.DS_NAME).data
        self.assertRc(sign(path, "leaf-ec384", "sha256"), 0)
        self.check_signed(path)
        self.assertNotEqual(cfblib.find(cfblib.read_tree(path), cfblib.DS_NAME).data, old)

    def test_msiinfo_unchanged(self):
        for name in ("small.msi", "extra.msi", "many.msi"):
            src = os.path.join(MSI_DIR, name)
            path = self.copy(msi(name))
            self.assertRc(sign(path, "leaf-rsa2048", "sha256", "--msi-dse"), 0)
            for args in (["tables"], ["suminfo"]):
                a, b = msiinfo(*args, src), msiinfo(*args, path)
                self.assertEqual(a[0], 0)
                self.assertEqual(a, b, args)
            a, b = msiinfo("streams", src), msiinfo("streams", path)
            self.assertEqual(set(b[1].split()) - set(a[1].split()),
                             {b"\x05DigitalSignature", b"\x05MsiDigitalSignatureEx"})
            self.assertEqual(len(b[1].split()), len(a[1].split()) + 2)
            tables = msiinfo("tables", src)[1].decode().split()
            self.assertIn("File", tables)
            for t in tables:
                self.assertEqual(msiinfo("export", src, t), msiinfo("export", path, t), t)

    def test_tamper_one_content_byte(self):
        path = self.copy(msi("small.msi"))
        self.assertRc(sign(path), 0)
        tree = cfblib.read_tree(path)
        for target in ("\x05SummaryInformation", None):
            with self.subTest(target=target or "big stream"):
                data = bytearray(read(path))
                node = (cfblib.find(tree, target) if target else
                        max(tree.children, key=lambda c: len(c.data or b"")))
                chunk = node.data[100:140]
                pos = data.find(chunk)
                self.assertGreater(pos, 0)
                self.assertEqual(data.count(chunk), 1)
                data[pos] ^= 0x01
                bad = self.path("tampered.msi")
                with open(bad, "wb") as f:
                    f.write(data)
                ok, out = osslsigncode_verify(bad)
                self.assertFalse(ok, out)
                self.assertRc(verify(bad), 12, "hsmsign: digest mismatch")

    def test_remove_and_extract(self):
        path = self.copy(msi("presigned-dse.msi"))
        ext = self.path("sig.p7")
        self.assertRc(hsmsign("extract", path, "-o", ext), 0)
        ds = cfblib.find(cfblib.read_tree(path), cfblib.DS_NAME).data
        self.assertEqual(read(ext), ds)
        out = self.path("removed.msi")
        self.assertRc(hsmsign("remove", "-o", out, path), 0)
        tree = cfblib.read_tree(out)
        self.assertIsNone(cfblib.find(tree, cfblib.DS_NAME))
        self.assertIsNone(cfblib.find(tree, cfblib.DSE_NAME))
        self.assertEqual(cfblib.msi_digest(tree), cfblib.msi_digest(
            cfblib.read_tree(os.path.join(MSI_DIR, "extra.msi"))))
        r = verify(out)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(msiinfo("tables", out), msiinfo("tables", path))
        r = hsmsign("remove", out)
        self.assertNotEqual(r.returncode, 0)
        self.assertOneErrorLine(r)

    def test_difat_large_file(self):
        """More than 109 FAT sectors: the header's DIFAT overflows into DIFAT
        sectors, in the input (cfblib) and in hsmsign's output."""
        base = cfblib.read_tree(os.path.join(MSI_DIR, "small.msi"))
        kids = list(base.children) + [
            cfblib.Node("huge", data=bytes((i * 13) & 0xFF for i in range(7_500_000)))]
        path = self.path("difat.msi")
        with open(path, "wb") as f:
            f.write(cfblib.write(kids, 512, root_clsid=base.clsid, seed=3))
        self.assertGreater(struct.unpack_from("<I", read(path), 0x48)[0], 0)
        self.assertRc(sign(path), 0)
        self.assertGreater(struct.unpack_from("<I", read(path), 0x48)[0], 0)
        self.check_signed(path)

    def test_failure_leaves_input_intact(self):
        path = self.copy(msi("many.msi"))
        before = read(path)
        r = hsmsign("sign", "--key", "/nonexistent", "--cert", "/nonexistent", path)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(read(path), before)
        self.assertEqual([n for n in os.listdir(self.tmp)], ["many.msi"])


class MsiMalformedTest(HsTestCase):
    """Broken compound files: one error line, exit code for bad input, no
    crash, no hang, input untouched."""

    def variants(self):
        good = read(os.path.join(MSI_DIR, "small.msi"))
        ss = 512
        hdr = lambda off, val: good[:off] + struct.pack("<I", val) + good[off + 4:]
        first_dir = struct.unpack_from("<I", good, 0x30)[0]
        fat0 = struct.unpack_from("<I", good, 0x4C)[0]
        fat_off = (fat0 + 1) * ss
        loop = bytearray(good)
        # make the directory chain point at itself
        struct.pack_into("<I", loop, fat_off + 4 * first_dir, first_dir)
        yield "dir-loop", bytes(loop)
        yield "dir-out-of-range", hdr(0x30, 0x00FFFFFF)
        yield "fat-count-huge", hdr(0x2C, 0x7FFFFFFF)
        yield "fat-sector-past-eof", hdr(0x4C, 0x00FFFFF0)
        yield "truncated", good[:len(good) // 2]
        yield "header-only", good[:512]
        yield "bad-version", good[:0x1A] + b"\x05\x00" + good[0x1C:]
        d = bytearray(good)
        root = (first_dir + 1) * ss
        struct.pack_into("<I", d, root + 0x4C, 0x7FFFFFF0)  # child id huge
        yield "child-id-huge", bytes(d)
        d = bytearray(good)
        struct.pack_into("<I", d, root + 0x4C, 0)  # root is its own child
        yield "root-self-child", bytes(d)
        d = bytearray(good)
        struct.pack_into("<H", d, root + 0x40, 200)  # name length
        yield "name-too-long", bytes(d)
        deep = cfblib.Node("leaf", data=b"x")
        for i in range(40):  # storages nested 40 deep (limit 32)
            deep = cfblib.Node("s%d" % i, children=[deep])
        yield "nested-too-deep", cfblib.write([deep], 512)

    def test_malformed(self):
        for name, data in self.variants():
            with self.subTest(name=name):
                path = self.path(name + ".msi")
                with open(path, "wb") as f:
                    f.write(data)
                r = sign(path)
                self.assertRc(r, 2)
                self.assertOneErrorLine(r)
                self.assertEqual(read(path), data)
                self.assertEqual(os.listdir(self.tmp), [name + ".msi"])
                self.assertRc(verify(path), 11)
                os.unlink(path)


if __name__ == "__main__":
    unittest.main()
