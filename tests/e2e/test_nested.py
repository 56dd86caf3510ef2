"""Nested signatures (authenticode.md §4): dual signing in one command
(-fd sha1,sha256), -as onto our own and foreign (osslsigncode) signatures,
each signature with its own timestamp and page hashes, remove/extract
--index, re-timestamping a nested signature, and the formats that refuse
nesting (catalogs; MSI with MsiDigitalSignatureEx and another hash)."""
import json
import os
import sys
import unittest

from asn1crypto import cms

from hslib import (FIXTURES, HERE, HsTestCase, OID_SPC_NESTED_SIGNATURE, ROOT_CA,
                   cert_table_entries, hsmsign, key_args, osslsigncode_verify, pki, read,
                   run, sbverify, sha256_file, sign, signature_count, signer_info)

sys.path.insert(0, os.path.join(HERE, "..", "servers"))
from tsa_client import Tsa  # noqa: E402

OID_RFC3161 = "1.3.6.1.4.1.311.3.3.1"
ENV = {"HSMSIGN_HTTP_BACKOFF_MS": "1"}


def nested_infos(data):
    """ContentInfos nested in the primary SignerInfo of a signed PE."""
    out = []
    for attr in signer_info(data)["unsigned_attrs"] or []:
        if attr["type"].dotted == OID_SPC_NESTED_SIGNATURE:
            out += [cms.ContentInfo.load(v.dump()) for v in attr["values"]]
    return out


def digest_of(content_info_or_si):
    si = content_info_or_si
    if isinstance(si, cms.ContentInfo):
        si = si["content"]["signer_infos"][0]
    return si["digest_algorithm"]["algorithm"].native


def unsigned_types(si):
    return [a["type"].dotted for a in (si["unsigned_attrs"] or [])]


class NestedTest(HsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tsa = Tsa().start()

    @classmethod
    def tearDownClass(cls):
        cls.tsa.stop()

    def ossl(self, path, tsa=False):
        args = ["osslsigncode", "verify", "-CAfile", ROOT_CA, "-in", path]
        if tsa:
            args[4:4] = ["-TSA-CAfile", self.tsa.root]
        r = run(args)
        return (r.stdout + r.stderr).decode(errors="replace")

    def report(self, path, *extra):
        r = hsmsign("verify", "--ca-file", ROOT_CA, "--tsa-ca-file", self.tsa.root,
                    "--json", *extra, path)
        self.assertRc(r, 0)
        return json.loads(r.stdout)["signatures"]

    def test_dual_signing_with_timestamps_and_page_hashes(self):
        path = self.copy("hello64.exe")
        start = len(self.tsa.log())
        r = sign(path, "leaf-rsa2048", "sha1,sha256", "-ph", "-tr", self.tsa.url("ok"),
                 env=ENV)
        self.assertRc(r, 0)
        data = read(path)
        self.assertEqual(digest_of(signer_info(data)), "sha1")
        nested, = nested_infos(data)
        self.assertEqual(digest_of(nested), "sha256")
        # Each signature has its own RFC 3161 timestamp over its own value.
        self.assertIn(OID_RFC3161, unsigned_types(signer_info(data)))
        self.assertEqual(unsigned_types(nested["content"]["signer_infos"][0]),
                         [OID_RFC3161])
        self.assertEqual(len([e for e in self.tsa.log()[start:] if e.get("imprint")]), 2)
        out = self.ossl(path, tsa=True)
        self.assertIn("Number of verified signatures: 2", out)
        self.assertEqual(out.count("Timestamp Server Signature verification: ok"), 2, out)
        self.assertIn("Page hash algorithm  : SHA1", out)
        self.assertIn("Page hash algorithm  : SHA256", out)
        self.assertNotIn("failed", out)
        sigs = self.report(path)
        self.assertEqual([(s["index"], s["nested"], s["digest"], s["page_hashes"],
                           s["timestamp"]["kind"]) for s in sigs],
                         [(0, False, "sha1", "ok", "rfc3161"),
                          (1, True, "sha256", "ok", "rfc3161")])

    def test_repeated_fd_is_the_list(self):
        a, b = self.copy("hello32.exe", "a.exe"), self.copy("hello32.exe", "b.exe")
        self.assertRc(sign(a, "leaf-rsa2048", "sha1,sha256", "-q"), 0)
        self.assertRc(hsmsign("sign", *key_args(), "-fd", "sha1", "-fd", "sha256", "-q", b),
                      0)
        self.assertEqual(read(a), read(b))  # RSA signatures are deterministic
        self.assertEqual(signature_count(read(a)), 2)

    def test_append_onto_osslsigncode_signature(self):
        src = self.copy("hello64.exe", "src.exe")
        path = self.path("foreign.exe")
        r = run(["osslsigncode", "sign", "-certs", pki("leaf-ec256-chain.pem"), "-key",
                 pki("leaf-ec256.key"), "-h", "sha256", "-in", src, "-out", path])
        self.assertRc(r, 0)
        foreign = signer_info(read(path))
        self.assertRc(sign(path, "leaf-rsa2048", "sha384", "-as", "-q"), 0)
        data = read(path)
        primary = signer_info(data)
        # The foreign signature is kept as it was: same signed bytes.
        self.assertEqual(primary["signed_attrs"].dump(), foreign["signed_attrs"].dump())
        self.assertEqual(primary["signature"].native, foreign["signature"].native)
        self.assertEqual([digest_of(n) for n in nested_infos(data)], ["sha384"])
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, out)
        self.assertIn("Number of verified signatures: 2", out)
        self.assertTrue(sbverify(path)[0])
        self.assertEqual([s["digest"] for s in self.report(path)], ["sha256", "sha384"])
        # A second -as adds to the same attribute.
        self.assertRc(sign(path, "leaf-ec384", "sha512", "-as", "-q"), 0)
        attrs = [a for a in signer_info(read(path))["unsigned_attrs"]
                 if a["type"].dotted == OID_SPC_NESTED_SIGNATURE]
        self.assertEqual(len(attrs), 1)
        self.assertEqual(len(attrs[0]["values"]), 2)
        self.assertIn("Number of verified signatures: 3", osslsigncode_verify(path)[1])

    def test_append_to_unsigned_file_is_a_plain_signature(self):
        a, b = self.copy("hello64.exe", "a.exe"), self.copy("hello64.exe", "b.exe")
        self.assertRc(sign(a, "leaf-rsa2048", "sha256", "-q"), 0)
        self.assertRc(sign(b, "leaf-rsa2048", "sha256", "-q", "-as"), 0)
        self.assertEqual(read(a), read(b))

    def test_remove_and_extract_by_index(self):
        orig = self.copy("hello64.exe", "orig.exe")
        path = self.copy("hello64.exe")
        self.assertRc(sign(path, "leaf-rsa2048", "sha256,sha1,sha512", "-q"), 0)
        data = read(path)
        digests = [digest_of(n) for n in nested_infos(data)]
        self.assertEqual(sorted(digests), ["sha1", "sha512"])
        for i, d in enumerate(digests, 1):
            out = self.path("n%d.p7" % i)
            self.assertRc(hsmsign("extract", "--index", str(i), "-o", out, path), 0)
            self.assertEqual(digest_of(cms.ContentInfo.load(read(out))), d)
            self.assertEqual(read(out), nested_infos(data)[i - 1].dump())
        whole = self.path("whole.p7")
        self.assertRc(hsmsign("extract", "--index", "0", "-o", whole, path), 0)
        (_, der), = cert_table_entries(data)
        self.assertEqual(read(whole), der)
        # Out of range: one error line, nothing written or changed.
        before = sha256_file(path)
        for cmd in (["extract", "-o", self.path("x.p7")], ["remove"]):
            r = hsmsign(*cmd, "--index", "3", path)
            self.assertRc(r, 2)
            self.assertOneErrorLine(r)
            self.assertIn(b"no signature with index 3 (2 nested)", r.stderr)
        self.assertFalse(os.path.exists(self.path("x.p7")))
        self.assertEqual(sha256_file(path), before)
        # Removing nested signature 1 keeps the primary and the other one.
        self.assertRc(hsmsign("remove", "--index", "1", path), 0)
        left = read(path)
        self.assertEqual(signer_info(left)["signature"].native,
                         signer_info(data)["signature"].native)
        self.assertEqual([digest_of(n) for n in nested_infos(left)], digests[1:])
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, out)
        self.assertIn("Number of verified signatures: 2", out)
        # The last nested one: the attribute goes, the primary stays valid.
        self.assertRc(hsmsign("remove", "--index", "1", path), 0)
        self.assertEqual(signature_count(read(path)), 1)
        self.assertEqual(signer_info(read(path))["unsigned_attrs"].native, None)
        self.assertRc(hsmsign("verify", "--ca-file", ROOT_CA, path), 0)
        # Index 0 is the primary: everything goes.
        self.assertRc(sign(path, "leaf-rsa2048", "sha256,sha1", "-q"), 0)
        self.assertRc(hsmsign("remove", "--index", "0", path), 0)
        self.assertEqual(read(path), read(orig))

    def test_retimestamp_nested_keeps_signatures(self):
        path = self.copy("hello64.exe")
        self.assertRc(sign(path, "leaf-rsa2048", "sha1,sha256", "-q"), 0)
        before = read(path)
        r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), "--index", "1", path, env=ENV)
        self.assertRc(r, 0)
        after = read(path)
        primary_before, primary_after = signer_info(before), signer_info(after)
        # The primary is untouched apart from its nested attribute ...
        self.assertEqual(primary_after["signed_attrs"].dump(),
                         primary_before["signed_attrs"].dump())
        self.assertEqual(primary_after["signature"].native,
                         primary_before["signature"].native)
        self.assertNotIn(OID_RFC3161, unsigned_types(primary_after))
        # ... and the nested one kept its signature and got a timestamp.
        nb = nested_infos(before)[0]["content"]["signer_infos"][0]
        na = nested_infos(after)[0]["content"]["signer_infos"][0]
        self.assertEqual(na["signature"].native, nb["signature"].native)
        self.assertEqual(na["signed_attrs"].dump(), nb["signed_attrs"].dump())
        self.assertEqual(unsigned_types(na), [OID_RFC3161])
        out = self.ossl(path, tsa=True)
        self.assertIn("Number of verified signatures: 2", out)
        self.assertIn("Timestamp Server Signature verification: ok", out)
        sigs = self.report(path)
        self.assertEqual([s["timestamp"]["kind"] if s["timestamp"] else None for s in sigs],
                         [None, "rfc3161"])
        # Out of range: refused, input untouched.
        digest = sha256_file(path)
        r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), "--index", "2", path, env=ENV)
        self.assertRc(r, 2)
        self.assertEqual(sha256_file(path), digest)

    def test_retimestamp_keeps_a_sha1_msi_prehash(self):
        """Re-timestamping rewrites the package with the primary's digest,
        so a SHA-1 MsiDigitalSignatureEx stays a SHA-1 one."""
        path = self.copy(os.path.join(FIXTURES, "msi", "small.msi"))
        self.assertRc(sign(path, "leaf-rsa2048", "sha1", "--msi-dse", "-q"), 0)
        r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), path, env=ENV)
        self.assertRc(r, 0)
        self.assertEqual(self.report(path)[0]["timestamp"]["kind"], "rfc3161")
        out = self.ossl(path, tsa=True)
        self.assertIn("Timestamp Server Signature verification: ok", out)
        self.assertIn("Signature verification: ok", out)
        self.assertNotIn("MISMATCH", out)

    def test_other_formats_nest(self):
        cases = [("msi/small.msi", "sha1,sha256"), ("cab/stored.cab", "sha256,sha1"),
                 ("scripts/ps1-utf8-crlf.ps1", "sha256,sha512")]
        for src, digests in cases:
            with self.subTest(src=src):
                path = self.copy(os.path.join(FIXTURES, src))
                self.assertRc(sign(path, "leaf-rsa2048", digests, "-q"), 0)
                ok, out = osslsigncode_verify(path)
                self.assertTrue(ok, out)
                self.assertIn("Number of verified signatures: 2", out)
                self.assertRc(sign(path, "leaf-ec256", "sha384", "-q", "-as"), 0)
                self.assertIn("Number of verified signatures: 3",
                              osslsigncode_verify(path)[1])
                # Nested values are a DER SET OF: file order is sorted order.
                got = [s["digest"] for s in self.report(path)]
                want = digests.split(",") + ["sha384"]
                self.assertEqual((got[0], sorted(got[1:])), (want[0], sorted(want[1:])))

    def test_catalog_refuses_nesting(self):
        path = self.copy(os.path.join(FIXTURES, "cat", "files.cat"))
        before = sha256_file(path)
        r = sign(path, "leaf-rsa2048", "sha1,sha256")
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn(b"catalogs cannot carry nested signatures", r.stderr)
        self.assertEqual(sha256_file(path), before)
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-q"), 0)
        before = sha256_file(path)
        r = sign(path, "leaf-rsa2048", "sha256", "-as")
        self.assertRc(r, 2)
        self.assertEqual(sha256_file(path), before)

    def test_msi_with_dse_nests_only_the_same_hash(self):
        path = self.copy(os.path.join(FIXTURES, "msi", "presigned-dse.msi"))
        before = sha256_file(path)
        r = sign(path, "leaf-rsa2048", "sha1", "-as")
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn(b"MsiDigitalSignatureEx", r.stderr)
        self.assertEqual(sha256_file(path), before)
        self.assertRc(sign(path, "leaf-rsa2048", "sha256", "-as", "-q"), 0)
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, out)
        self.assertIn("Number of verified signatures: 2", out)
        fresh = self.copy(os.path.join(FIXTURES, "msi", "small.msi"))
        before = sha256_file(fresh)
        r = sign(fresh, "leaf-rsa2048", "sha256,sha1", "--msi-dse")
        self.assertRc(r, 2)
        self.assertIn(b"--msi-dse cannot be combined", r.stderr)
        self.assertEqual(sha256_file(fresh), before)


if __name__ == "__main__":
    unittest.main()
