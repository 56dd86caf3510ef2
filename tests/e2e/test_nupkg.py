"""NuGet author signatures (tests/fixtures/nupkg): no NuGet verifier runs here,
so the CMS is checked independently: `openssl cms -verify` on the extracted
.signature.p7s, its content against the package hash computed here (the
SHA-256/384/512 of the unsigned package file, which signing only appends
to), its attributes with asn1crypto (commitment type proofOfOrigin,
signing-certificate-v2 naming the signer, RFC 3161 token in the standard
attribute checked by `openssl ts -verify`). hsmsign verify accepts it and
rejects tampering; re-signing needs --replace."""
import base64
import hashlib
import json
import os
import sys
import zipfile

from asn1crypto import cms, x509 as ax509, pem

from hslib import (FIXTURES, HERE, HsTestCase, PKI, ROOT_CA, hsmsign, read, run, sign,
                   verify)

sys.path.insert(0, os.path.join(HERE, "..", "servers"))
from tsa_client import Tsa  # noqa: E402

NUPKG = os.path.join(FIXTURES, "nupkg", "Hsmsign.Test.1.0.0.nupkg")
HASH_OIDS = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
             "sha512": "2.16.840.1.101.3.4.2.3"}
OID_TS_TOKEN = "1.2.840.113549.1.9.16.2.14"
OID_COMMITMENT = "1.2.840.113549.1.9.16.2.16"
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
PROOF_OF_ORIGIN = "1.2.840.113549.1.9.16.6.1"


def p7s(path):
    with zipfile.ZipFile(path) as z:
        names = [i.filename for i in z.infolist()]
        info = z.getinfo(".signature.p7s")
        assert names[-1] == ".signature.p7s" and info.compress_type == zipfile.ZIP_STORED
        return z.read(info)


def expected_content(unsigned, digest="sha256"):
    h = base64.b64encode(hashlib.new(digest, unsigned).digest()).decode()
    return ("Version:1\n\n%s-Hash:%s\n\n" % (HASH_OIDS[digest], h)).encode()


def attrs(signer, which):
    return {a["type"].dotted: a["values"] for a in signer[which] or []}


class NupkgTest(HsTestCase):
    def signed(self, *extra, digest="sha256", leaf="leaf-rsa2048"):
        path = self.copy(NUPKG)
        self.assertRc(sign(path, leaf, digest, *extra), 0)
        return path

    def openssl_verify(self, path, ca=ROOT_CA):
        sig, out = self.path("sig.p7s"), self.path("content.txt")
        with open(sig, "wb") as f:
            f.write(p7s(path))
        r = run(["openssl", "cms", "-verify", "-inform", "DER", "-in", sig, "-binary",
                 "-CAfile", ca, "-purpose", "any", "-out", out])
        return r.returncode == 0 and read(out)

    def test_sign_verify_and_openssl_cms(self):
        for digest in ("sha256", "sha384", "sha512"):
            with self.subTest(digest):
                path = self.signed(digest=digest)
                self.assertRc(verify(path), 0)
                self.assertEqual(self.openssl_verify(path), expected_content(read(NUPKG), digest))
                r = hsmsign("verify", "--ca-file", ROOT_CA, "--json", path)
                self.assertEqual(json.loads(r.stdout)["signatures"][0]["digest"], digest)

    def test_package_bytes_kept_and_entries_identical(self):
        path = self.signed()
        orig = read(NUPKG)
        with zipfile.ZipFile(NUPKG) as z:
            before = {i.filename: z.read(i) for i in z.infolist()}
        first_cd = orig.find(b"PK\1\2")
        self.assertGreater(first_cd, 0)
        self.assertEqual(read(path)[:first_cd], orig[:first_cd])  # local records in place
        with zipfile.ZipFile(path) as z:
            after = {i.filename: z.read(i) for i in z.infolist()}
        self.assertEqual(after.pop(".signature.p7s"), p7s(path))
        self.assertEqual(after, before)
        self.assertRc(run(["unzip", "-tq", path]), 0)

    def test_signed_attributes(self):
        path = self.signed()
        sd = cms.ContentInfo.load(p7s(path))["content"]
        self.assertEqual(sd["encap_content_info"]["content_type"].dotted, "1.2.840.113549.1.7.1")
        signer = sd["signer_infos"][0]
        signed = attrs(signer, "signed_attrs")
        self.assertIn("1.2.840.113549.1.9.5", signed)  # signingTime
        commitment = signed[OID_COMMITMENT][0].dump()
        self.assertIn(cms.ObjectIdentifier(PROOF_OF_ORIGIN).dump(), commitment)
        leaf = pem.unarmor(read(os.path.join(PKI, "leaf-rsa2048.pem")))[2]
        sc_der = signed[OID_SIGNING_CERT_V2][0].dump()
        self.assertIn(hashlib.sha256(leaf).digest(), sc_der)
        serial = ax509.Certificate.load(leaf).serial_number
        self.assertEqual(signer["sid"].chosen["serial_number"].native, serial)

    def test_timestamp_standard_attribute(self):
        tsa = Tsa().start()
        self.addCleanup(tsa.stop)
        path = self.signed("-tr", tsa.url("ok"))
        signer = cms.ContentInfo.load(p7s(path))["content"]["signer_infos"][0]
        unsigned = attrs(signer, "unsigned_attrs")
        self.assertEqual(list(unsigned), [OID_TS_TOKEN])
        token = self.path("token.der")
        with open(token, "wb") as f:
            f.write(unsigned[OID_TS_TOKEN][0].dump())
        data = self.path("sigvalue.bin")
        with open(data, "wb") as f:
            f.write(signer["signature"].native)
        r = run(["openssl", "ts", "-verify", "-in", token, "-token_in", "-data", data,
                 "-CAfile", tsa.root])
        self.assertRc(r, 0)
        r = hsmsign("verify", "--ca-file", ROOT_CA, "--tsa-ca-file", tsa.root, "--json", path)
        self.assertRc(r, 0)
        self.assertEqual(json.loads(r.stdout)["signatures"][0]["timestamp"]["kind"], "rfc3161")
        # `timestamp` replaces it, in the same standard attribute.
        before = p7s(path)
        self.assertRc(hsmsign("timestamp", "-tr", tsa.url("ok"), path), 0)
        signer2 = cms.ContentInfo.load(p7s(path))["content"]["signer_infos"][0]
        self.assertEqual(list(attrs(signer2, "unsigned_attrs")), [OID_TS_TOKEN])
        self.assertEqual(signer2["signature"].native, signer["signature"].native)
        self.assertNotEqual(p7s(path), before)
        r = hsmsign("verify", "--ca-file", ROOT_CA, "--tsa-ca-file", tsa.root, path)
        self.assertRc(r, 0)
        legacy = self.copy(NUPKG, "legacy.nupkg")
        r = sign(legacy, "leaf-rsa2048", "sha256", "-t", tsa.url("ok"))
        self.assertRc(r, 2)
        self.assertIn(b"RFC 3161", r.stderr)
        self.assertEqual(read(legacy), read(NUPKG))

    def test_resign_needs_replace(self):
        path = self.signed()
        before = read(path)
        r = sign(path, "leaf-rsa2048", "sha256")
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn(b"--replace", r.stderr)
        self.assertEqual(read(path), before)
        r = sign(path, "leaf-ec256", "sha384", "--replace")  # NuGet: RSA only
        self.assertRc(r, 2)
        self.assertIn(b"RSA", r.stderr)
        self.assertEqual(read(path), before)
        self.assertRc(sign(path, "leaf-rsa3072", "sha384", "--replace"), 0)
        self.assertRc(verify(path), 0)
        self.assertEqual(self.openssl_verify(path), expected_content(read(NUPKG), "sha384"))

    def test_tampering_fails(self):
        path = self.signed()
        data = bytearray(read(path))
        off = data.find(b"lib/netstandard2.0/Hsmsign.Test.dll") + 40
        data[off] ^= 1
        with open(path, "wb") as f:
            f.write(data)
        self.assertRc(verify(path), 12)

    def test_signature_of_another_package_fails(self):
        other = self.path("other.nupkg")
        with zipfile.ZipFile(NUPKG) as src, zipfile.ZipFile(other, "w") as dst:
            for i in src.infolist():
                dst.writestr(i, src.read(i) + (b" " if i.filename.endswith(".nuspec") else b""))
        self.assertRc(sign(other, "leaf-rsa2048", "sha256"), 0)
        path = self.copy(NUPKG)
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(zipfile.ZipInfo(".signature.p7s", (1980, 1, 1, 0, 0, 0)), p7s(other))
        self.assertRc(verify(path), 12)

    def test_untrusted_and_sha1(self):
        path = self.signed()
        self.assertRc(verify(path, ca=os.path.join(PKI, "other-root.pem")), 14)
        p2 = self.copy(NUPKG, "sha1.nupkg")
        r = sign(p2, "leaf-rsa2048", "sha1")
        self.assertRc(r, 2)
        self.assertEqual(read(p2), read(NUPKG))

    def test_remove_and_extract(self):
        path = self.signed()
        der = self.path("sig.der")
        self.assertRc(hsmsign("extract", path, "-o", der), 0)
        self.assertEqual(read(der), p7s(path))
        self.assertRc(hsmsign("remove", path), 0)
        self.assertEqual(read(path), read(NUPKG))
        self.assertRc(verify(path), 10)
