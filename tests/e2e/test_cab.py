"""Cabinet files: sign, verify, remove, extract, malformed inputs.

Signatures are checked by `osslsigncode verify` and hsmsign; the digest is
compared with cab_digest() below, written from authenticode.md section 6
(the jsign model), and the signed cabinets must still list and extract with
gcab, proving every shifted offset.
"""
import hashlib
import os
import shutil
import struct
import subprocess

from hslib import (FIXTURES, HsTestCase, der_children, der_total_length,
                   hsmsign, lines, osslsigncode_verify, read, run, sign,
                   verify)

CAB = os.path.join(FIXTURES, "cab")
GOOD = ("stored.cab", "compressed.cab", "multifolder.cab")
OID_CAB_DATA = bytes.fromhex("2b060104018237020119")


def signed_layout(data):
    """The unsigned cabinet with the 24-byte signature reserve inserted
    after offset 36 and cbCabinet, coffFiles and coffCabStart moved by 24
    (authenticode.md 6); a signed one is returned without its signature."""
    flags = struct.unpack_from("<H", data, 30)[0]
    if flags & 4:
        return data[:struct.unpack_from("<I", data, 8)[0]]
    nfold = struct.unpack_from("<H", data, 26)[0]
    hdr = bytearray(data[:36])
    struct.pack_into("<I", hdr, 8, struct.unpack_from("<I", data, 8)[0] + 24)
    struct.pack_into("<I", hdr, 16, struct.unpack_from("<I", data, 16)[0] + 24)
    struct.pack_into("<H", hdr, 30, flags | 4)
    reserve = struct.pack("<HBBHH", 20, 0, 0, 0, 16) + bytes(16)
    folders = bytearray(data[36:36 + 8 * nfold])
    for i in range(nfold):
        struct.pack_into("<I", folders, 8 * i,
                         struct.unpack_from("<I", folders, 8 * i)[0] + 24)
    return bytes(hdr) + reserve + bytes(folders) + data[36 + 8 * nfold:]


def cab_digest(data, alg="sha256"):
    """MSCF, bytes 8..35, the length of reserve structure 1 and its bytes,
    then everything after the reserve (folders, files, data) up to
    cbCabinet. Skipped: reserved1 and the signature's offset and size."""
    s = signed_layout(data)
    len1 = struct.unpack_from("<H", s, 40)[0]
    h = hashlib.new(alg)
    h.update(s[:4] + s[8:36] + s[40:42 + len1] + s[60:])
    return h.hexdigest()


def cab_signature(data):
    off, size = struct.unpack_from("<II", data, 44)
    assert off == struct.unpack_from("<I", data, 8)[0] and off + size == len(data)
    der = data[off:off + der_total_length(data, off)]
    assert size == len(der) + (-len(der) % 8)
    return der


def spc_of(der):
    (_, ci), = der_children(der)
    _, (_, sd_explicit) = der_children(ci)
    (_, sd), = der_children(sd_explicit)
    _, (_, spc_explicit) = der_children(der_children(sd)[2][1])
    (_, spc), = der_children(spc_explicit)
    (_, data), (_, digest_info) = der_children(spc)
    return der_children(data)[0][1], der_children(digest_info)[1][1]


def gcab_extract(path, dest):
    os.makedirs(dest)
    r = run(["gcab", "-x", "-C", dest, path])
    assert r.returncode == 0, r.stderr
    return {n: read(os.path.join(dest, n)) for n in sorted(os.listdir(dest))}


class CabTest(HsTestCase):

    def test_sign_verify_with_osslsigncode_and_gcab(self):
        for name, leaf, alg in (("stored.cab", "leaf-rsa2048", "sha256"),
                                ("compressed.cab", "leaf-ec256", "sha384"),
                                ("multifolder.cab", "leaf-rsa3072", "sha1")):
            with self.subTest(name=name):
                orig = read(os.path.join(CAB, name))
                path = self.copy(os.path.join(CAB, name))
                r = hsmsign("digest", "-fd", alg, path)
                self.assertEqual(r.stdout.split()[0].decode(), cab_digest(orig, alg))
                self.assertRc(sign(path, leaf, alg, "-q"), 0)
                signed = read(path)
                oid, digest = spc_of(cab_signature(signed))
                self.assertEqual(oid, OID_CAB_DATA)
                self.assertEqual(digest.hex(), cab_digest(orig, alg))
                self.assertEqual(cab_digest(signed, alg), cab_digest(orig, alg))
                self.assertRc(verify(path), 0)
                ok, out = osslsigncode_verify(path)
                self.assertTrue(ok, out)
                before = gcab_extract(os.path.join(CAB, name), self.path(name + ".a"))
                after = gcab_extract(path, self.path(name + ".b"))
                self.assertEqual(before, after)
                self.assertGreater(len(after), 0)

    def test_remove_restores_the_input_and_resign_is_identical(self):
        for name in GOOD:
            with self.subTest(name=name):
                orig = read(os.path.join(CAB, name))
                path = self.copy(os.path.join(CAB, name))
                self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-q"), 0)
                once = read(path)
                self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-q"), 0)
                self.assertEqual(read(path), once)  # reserve reused, same bytes
                r = hsmsign("extract", path)
                self.assertRc(r, 0)
                self.assertEqual(r.stdout, cab_signature(once))
                self.assertRc(hsmsign("remove", path), 0)
                self.assertEqual(read(path), orig)
                self.assertRc(verify(path), 10)

    def test_tampering_fails_both_verifiers(self):
        path = self.copy(os.path.join(CAB, "multifolder.cab"))
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-q"), 0)
        data = bytearray(read(path))
        i = data.index(b"fourth folder")
        data[i] ^= 0x01
        with open(path, "wb") as f:
            f.write(data)
        self.assertRc(verify(path), 12)
        ok, out = osslsigncode_verify(path)
        self.assertFalse(ok, out)

    def test_malformed_inputs(self):
        bad = os.path.join(CAB, "malformed")
        expect = {"multi-cabinet.cab": b"multi-cabinet set",
                  "truncated.cab": b"truncated",
                  "trailing-data.cab": b"does not match the file size",
                  "cbcabinet-past-eof.cab": b"outside the file",
                  "folder-offset.cab": b"outside the data area"}
        self.assertEqual(sorted(os.listdir(bad)), sorted(expect))
        for name, msg in expect.items():
            with self.subTest(name=name):
                path = self.copy(os.path.join(bad, name))
                orig = read(path)
                r = sign(path, "leaf-rsa2048", "sha256", "-q")
                self.assertRc(r, 2)
                self.assertOneErrorLine(r)
                self.assertIn(msg, r.stderr)
                self.assertEqual(read(path), orig)
                r = verify(path)
                self.assertRc(r, 11)
        self.assertEqual([n for n in os.listdir(self.tmp) if ".hsmsign-" in n], [])
