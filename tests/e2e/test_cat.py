"""Catalogs: `catalog create`, signing a catalog's CTL byte for byte,
`verify --catalog`, remove, malformed catalogs.

Signed catalogs are checked by `osslsigncode verify` and hsmsign; member
lookups by `osslsigncode verify -catalog` (PE, CAB, PowerShell) and by an
independent reading of the CTL below (member tag = upper-case hex of the
digest; PE members carry the Authenticode digest from hslib, the others
the hash of the file as osslsigncode computes it).
"""
import hashlib
import os

from hslib import (FIXTURES, ROOT_CA, HsTestCase, authenticode_digest,
                   der_children, hsmsign, lines, read, run, sign, verify)

CAT = os.path.join(FIXTURES, "cat")
OID_CTL = bytes.fromhex("2b060104018237" "0a01")
OID_INDIRECT = bytes.fromhex("2b060104018237020104")
OID_NAME_VALUE = bytes.fromhex("2b0601040182370c0201")
EPOCH = "1700000000"  # scripts/gen-fixtures-formats


def members_list():
    with open(os.path.join(CAT, "members.txt")) as f:
        return [os.path.join(FIXTURES, l.strip()) for l in f if l.strip()]


def ctl_of(cat):
    """(full CTL TLV, its contents) inside a catalog ContentInfo."""
    (_, ci), = der_children(cat)
    _, (_, sd_explicit) = der_children(ci)
    (_, sd), = der_children(sd_explicit)
    oid, (_, explicit) = der_children(der_children(sd)[2][1])
    assert oid[1] == OID_CTL
    (tag, contents), = der_children(explicit)
    assert tag == 0x30
    return explicit, contents


def members(cat):
    """{name: (tag text, digest algorithm OID hex, digest)} of a CTL."""
    _, ctl = ctl_of(cat)
    out = {}
    for _, member in der_children(der_children(ctl)[4][1]):
        (_, tag), (_, attrs) = der_children(member)
        name = digest = alg = None
        for _, attr in der_children(attrs):
            (_, oid), (_, values) = der_children(attr)
            (_, value), = der_children(values)
            if oid == OID_NAME_VALUE:
                name = der_children(value)[2][1][:-2].decode("utf-16-le")
            elif oid == OID_INDIRECT:
                _, (_, digest_info) = der_children(value)
                (_, algid), (_, digest) = der_children(digest_info)
                alg = der_children(algid)[0][1].hex()
        out[name] = (tag[:-2].decode("utf-16-le"), alg, digest)
    return out


def expected_digest(path, alg):
    """What a catalog lists for a file, computed independently."""
    data = read(path)
    if data[:2] == b"MZ":
        return authenticode_digest(data, alg)
    if data[:4] == b"MSCF":  # unsigned cabinet as it stands: no reserved1
        return hashlib.new(alg, data[:4] + data[8:]).hexdigest()
    return hashlib.new(alg, data).hexdigest()  # scripts and flat files


class CatTest(HsTestCase):

    def create(self, out, *files, alg="sha256"):
        return hsmsign("catalog", "create", "-fd", alg, "-o", out, *files,
                       env={"SOURCE_DATE_EPOCH": EPOCH})

    def test_create_is_reproducible_and_lists_the_right_digests(self):
        for alg, fixture in (("sha256", "files.cat"), ("sha1", "files-sha1.cat")):
            with self.subTest(alg=alg):
                out = self.path(fixture)
                self.assertRc(self.create(out, *members_list(), alg=alg), 0)
                self.assertEqual(read(out), read(os.path.join(CAT, fixture)))
                listed = members(read(out))
                self.assertEqual(sorted(listed), sorted(os.path.basename(m)
                                                        for m in members_list()))
                for m in members_list():
                    tag, _, digest = listed[os.path.basename(m)]
                    self.assertEqual(digest.hex(), expected_digest(m, alg), m)
                    self.assertEqual(tag, digest.hex().upper())
                self.assertRc(verify(out), 10)  # unsigned

    def test_sign_keeps_the_ctl_and_verifies(self):
        orig = read(os.path.join(CAT, "files.cat"))
        for leaf, alg in (("leaf-rsa2048", "sha256"), ("leaf-ec384", "sha384"),
                          ("leaf-rsa2048", "sha1")):
            with self.subTest(leaf=leaf, alg=alg):
                path = self.copy(os.path.join(CAT, "files.cat"))
                self.assertRc(sign(path, leaf, alg, "-q"), 0)
                signed = read(path)
                self.assertEqual(ctl_of(signed), ctl_of(orig))
                self.assertRc(verify(path), 0)
                r = run(["osslsigncode", "verify", "-CAfile", ROOT_CA, "-in", path])
                out = (r.stdout + r.stderr).decode(errors="replace")
                self.assertIn("Signature verification: ok", out)
                self.assertNotIn("failed", out.lower().replace(
                    "catalog verification: failed", ""))
                r = hsmsign("extract", path)
                self.assertEqual(r.stdout, signed)
                self.assertRc(hsmsign("remove", path), 0)
                self.assertEqual(read(path), orig)

    def test_verify_catalog_members(self):
        path = self.copy(os.path.join(CAT, "files.cat"))
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-q"), 0)
        files = members_list()
        r = hsmsign("verify", "--ca-file", ROOT_CA, "--catalog", path, *files)
        self.assertRc(r, 0)
        self.assertEqual(len([l for l in lines(r.stdout) if "OK (listed in" in l]),
                         len(files))
        for m in files:
            if m.endswith((".exe", ".cab", ".ps1")):
                r = run(["osslsigncode", "verify", "-CAfile", ROOT_CA,
                         "-catalog", path, "-in", m])
                self.assertIn(b"Succeeded", r.stdout, m)
        # a file that is not listed, and a listed one changed by one byte
        other = os.path.join(FIXTURES, "pe", "hello32.exe")
        changed = self.copy(files[-1], "changed.bat")
        with open(changed, "ab") as f:
            f.write(b"\r\n")
        for f in (other, changed):
            r = hsmsign("verify", "--ca-file", ROOT_CA, "--catalog", path, f)
            self.assertRc(r, 12)
            self.assertIn("not listed", lines(r.stdout)[-1])
        r = run(["osslsigncode", "verify", "-CAfile", ROOT_CA, "-catalog", path,
                 "-in", other])
        self.assertNotIn(b"Succeeded", r.stdout)

    def test_tampered_ctl_fails_both_verifiers(self):
        path = self.copy(os.path.join(CAT, "files.cat"))
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-q"), 0)
        data = bytearray(read(path))
        i = data.index("odd64".encode("utf-16-le"))
        data[i] = ord("e")
        with open(path, "wb") as f:
            f.write(data)
        r = verify(path)
        self.assertRc(r, 13)  # messageDigest no longer matches the CTL
        r = run(["osslsigncode", "verify", "-CAfile", ROOT_CA, "-in", path])
        self.assertNotIn(b"Signature verification: ok", r.stdout)
        # the catalog's own signature is checked before any lookup
        r = hsmsign("verify", "--ca-file", ROOT_CA, "--catalog", path,
                    members_list()[0])
        self.assertRc(r, 13)

    def test_bad_catalogs_and_arguments(self):
        path = self.copy(os.path.join(CAT, "truncated.cat"))
        orig = read(path)
        r = sign(path, "leaf-rsa2048", "sha256", "-q")
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn(b"not exactly one DER PKCS#7", r.stderr)
        self.assertEqual(read(path), orig)
        self.assertRc(verify(path), 11)
        for args in ((), ("-o", self.path("x.cat")), ("-fd", "sha384", "-o",
                                                        self.path("x.cat"), orig and path)):
            r = hsmsign("catalog", "create", *args)
            self.assertRc(r, 87)
            self.assertOneErrorLine(r)
        r = self.create(self.path("x.cat"), self.path("missing.exe"))
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        bad_cab = os.path.join(FIXTURES, "cab", "malformed", "truncated.cab")
        r = self.create(self.path("x.cat"), bad_cab)
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertFalse(os.path.exists(self.path("x.cat")))
        self.assertRc(hsmsign("catalog", "frobnicate"), 87)
