"""`hsmsign verify` must reject tampered, untrusted, expired and wrongly
issued signatures with the documented exit code and status name, and
osslsigncode must agree wherever it can judge.

osslsigncode 2.9 blind spots: it calls any data after the certificate table
"No signature found" and exits 0 for that and for a broken nested signature
(hslib.osslsigncode_verify reads its output, not just the exit code); it does
not distinguish failure kinds. sbverify judges only the first signature and
never trust (see hslib.sbverify)."""
import os
import re
import struct
import subprocess

from hslib import (PE_DIR, HsTestCase, PeLayout, authenticode_digest,
                   cert_table_entries, hsmsign, lines,
                   message_digest_attr_offset, osslsigncode_verify, pki, read,
                   sbverify, sign, signature_count, signature_value_offset,
                   signed_data, spc_digest, verify)

STATUS = {
    10: "no signature",
    11: "malformed",
    12: "digest mismatch",
    13: "bad signature",
    14: "untrusted",
    15: "expired",
    16: "missing codeSigning EKU",
}


def flip(path, offset, mask=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


def code_offset(path):
    """A file offset inside .text."""
    _, raw_ptr, _ = next(s for s in PeLayout(read(path)).sections
                         if s[0] == ".text")
    return raw_ptr + 0x10


class TestVerifyFailures(HsTestCase):

    def assertVerifyFails(self, path, rc, ca=pki("root.pem"), oracle=True):
        r = verify(path, ca)
        self.assertRc(r, rc)
        first = lines(r.stdout)[0] if r.stdout else ""
        expected = "%s: FAILED (%s)" % (path, STATUS[rc])
        self.assertTrue(first.startswith(expected), r.stdout)
        if oracle:
            ok, out = osslsigncode_verify(path, ca)
            self.assertFalse(ok, "osslsigncode accepted it:\n" + out)

    def test_valid_baseline(self):
        path = self.signed_copy()
        r = verify(path)
        self.assertRc(r, 0)
        self.assertTrue(lines(r.stdout)[0].startswith(path + ": OK"))
        sig_line = lines(r.stdout)[1]
        self.assertTrue(sig_line[:1].isspace(), "signature line not indented")
        for word in ("sha256", "leaf-rsa2048", "Intermediate CA",
                     "page hashes: none"):
            self.assertIn(word, sig_line)

    def test_unsigned(self):
        path = self.copy("hello64.exe")
        self.assertVerifyFails(path, 10)

    def test_code_byte_tampered(self):
        path = self.signed_copy()
        flip(path, code_offset(path))
        self.assertVerifyFails(path, 12)
        self.assertFalse(sbverify(path)[0])

    def test_header_byte_tampered(self):
        path = self.signed_copy()
        flip(path, 0x4E)  # DOS stub message
        self.assertVerifyFails(path, 12)

    def test_overlay_byte_tampered(self):
        """Overlays are part of the digest (authenticode.md §1.2 step 5)."""
        path = self.signed_copy("overlay32.exe")
        flip(path, os.path.getsize(os.path.join(PE_DIR, "hello32.exe")) + 100)
        self.assertVerifyFails(path, 12)

    def test_signature_value_tampered(self):
        for key in ("leaf-rsa2048", "leaf-ec256"):
            with self.subTest(key=key):
                path = self.signed_copy("hello64.exe", key)
                flip(path, signature_value_offset(read(path)))
                self.assertVerifyFails(path, 13)

    def test_signed_attribute_tampered(self):
        """A messageDigest byte: the attributes no longer match the
        signature value (and messageDigest no longer matches the content)."""
        path = self.signed_copy()
        flip(path, message_digest_attr_offset(read(path)))
        self.assertVerifyFails(path, 13)

    def test_forged_file_digest(self):
        """Attacker patches code AND rewrites the file digest inside
        SpcIndirectDataContent to match: messageDigest no longer matches the
        content (§2.3), so the signature is bad (not OK, not 12)."""
        path = self.signed_copy()
        flip(path, code_offset(path))
        data = read(path)
        _, old_digest, _ = spc_digest(data)
        new_digest = bytes.fromhex(authenticode_digest(data))
        self.assertEqual(data.count(old_digest), 1)
        with open(path, "wb") as f:
            f.write(data.replace(old_digest, new_digest))
        self.assertVerifyFails(path, 13)

    def test_transplanted_signature(self):
        """A valid signature table copied onto another file."""
        donor = read(self.signed_copy("hello64.exe"))
        target = self.copy("lib64.dll")
        donor_layout = PeLayout(donor)
        data = bytearray(read(target))
        data += b"\0" * (-len(data) % 8)
        off = len(data)
        data += donor[donor_layout.cert_off:]
        layout = PeLayout(data)
        struct.pack_into("<II", data, layout.certdir_off, off,
                         donor_layout.cert_size)
        with open(target, "wb") as f:
            f.write(data)
        self.assertVerifyFails(target, 12)

    def test_system_store_does_not_trust_test_root(self):
        path = self.signed_copy()
        r = hsmsign("verify", path)
        self.assertRc(r, 14)

    def test_page_hash_mismatch(self):
        """Correct file digest, one wrong page hash: built with osslsigncode
        extract-data / sign / attach-signature after flipping a byte of the
        first section's page hash in the unsigned content. Expect 12 and
        "page hashes: MISMATCH"."""
        src = self.copy("hello64.exe")
        data_p7 = self.path("data.p7")
        osc = ["osslsigncode"]
        subprocess.run(osc + ["extract-data", "-ph", "-h", "sha256", "-in",
                              src, "-out", data_p7], check=True,
                       capture_output=True)
        content = bytearray(read(data_p7))
        first = PeLayout(read(src)).sections[0][1]  # PointerToRawData
        # entry 0 {offset 0, hash}, then entry 1 {first section, hash}
        m = re.search(rb"\0\0\0\0.{32}" + re.escape(struct.pack("<I", first)),
                      bytes(content), re.S)
        content[m.end()] ^= 0x01
        with open(data_p7, "wb") as f:
            f.write(content)
        sig_p7 = self.path("sig.p7")
        subprocess.run(osc + ["sign", "-h", "sha256", "-certs",
                              pki("leaf-rsa2048-chain.pem"), "-key",
                              pki("leaf-rsa2048.key"), "-in", data_p7, "-out",
                              sig_p7], check=True, capture_output=True)
        path = self.path("ph.exe")
        # attach-signature verifies, says MISMATCH, exits 1 but writes -out
        subprocess.run(osc + ["attach-signature", "-sigin", sig_p7, "-CAfile",
                              pki("root.pem"), "-in", src, "-out", path],
                       capture_output=True)
        self.assertEqual(spc_digest(read(path))[1].hex(),
                         authenticode_digest(read(path)))
        self.assertVerifyFails(path, 12)
        self.assertIn("page hashes: MISMATCH", verify(path).stdout.decode())

    def test_pkcs7_garbage(self):
        path = self.signed_copy()
        flip(path, PeLayout(read(path)).cert_off + 8, 0xFF)  # ContentInfo tag
        self.assertVerifyFails(path, 11)

    def test_junk_after_cert_table(self):
        """Data after the table breaks the "table is last" rule (§10.4), so
        the file is malformed (11). (12 would also be defensible for a
        verifier that hashes trailing bytes like jsign; hsmsign chose 11.)
        osslsigncode says "No signature found" and still exits 0."""
        path = self.signed_copy()
        with open(path, "ab") as f:
            f.write(b"JUNKJUNK")
        self.assertVerifyFails(path, 11)

    def test_win_certificate_header_lies(self):
        cases = {"dwLength": (0, "<I", 0x7FFFFFFF),
                 "wRevision": (4, "<H", 0x0100),
                 "wCertificateType": (6, "<H", 0x0001)}
        for field, (rel, fmt, value) in cases.items():
            with self.subTest(field=field):
                path = self.signed_copy("hello64.exe")
                data = bytearray(read(path))
                struct.pack_into(fmt, data, PeLayout(data).cert_off + rel,
                                 value)
                with open(path, "wb") as f:
                    f.write(data)
                self.assertVerifyFails(path, 11)

    def test_data_smuggled_in_win_certificate(self):
        """CVE-2013-3900 / MS13-098: bytes after the PKCS#7 inside the
        WIN_CERTIFICATE (dwLength and the directory Size grown to cover them)
        are not signed, so an attacker can append a payload to a signed
        installer. authenticode.md §10.4 allows only <= 7 zero pad bytes;
        Windows with EnableCertPaddingCheck calls such a file unsigned. We
        expect "malformed". osslsigncode 2.9 accepts it (blind spot)."""
        path = self.signed_copy("overlay32.exe")
        data = bytearray(read(path))
        layout = PeLayout(data)
        length = struct.unpack_from("<I", data, layout.cert_off)[0]
        padded = (length + 7) & ~7
        struct.pack_into("<I", data, layout.cert_off, padded + 16)
        struct.pack_into("<II", data, layout.certdir_off, layout.cert_off,
                         layout.cert_size + 16)
        data += b"SMUGGLED PAYLOAD"
        with open(path, "wb") as f:
            f.write(data)
        self.assertVerifyFails(path, 11, oracle=False)

    def test_wrong_root(self):
        path = self.signed_copy()
        self.assertVerifyFails(path, 14, ca=pki("other-root.pem"))

    def test_unrelated_leaf_as_trust_anchor(self):
        """A certificate that is not on the signer's chain trusts nothing."""
        path = self.signed_copy()
        self.assertVerifyFails(path, 14, ca=pki("leaf-ec256.pem"))

    def osslsigncode_signed(self, leaf):
        """Signed by osslsigncode with signingTime inside the leaf's validity
        period (2020-06-01): signingTime is unauthenticated and must not make
        an expired certificate acceptable."""
        path = self.path(leaf + ".exe")
        subprocess.run(["osslsigncode", "sign", "-h", "sha256", "-certs",
                        pki(leaf + "-chain.pem"), "-key", pki(leaf + ".key"),
                        "-time", "1590969600", "-in",
                        os.path.join(PE_DIR, "hello64.exe"), "-out", path],
                       check=True, capture_output=True)
        return path

    def hsmsign_signed(self, leaf):
        """hsmsign may refuse to sign with an expired / non-codeSigning
        certificate (the contract leaves signing policy open). If it signs,
        the result must fail verification the same way."""
        path = self.copy("hello64.exe", leaf + "-hs.exe")
        r = sign(path, leaf)
        if r.returncode != 0:
            self.assertOneErrorLine(r)
            return None
        return path

    def test_expired(self):
        self.assertVerifyFails(self.osslsigncode_signed("leaf-expired"), 15)
        path = self.hsmsign_signed("leaf-expired")
        if path:
            self.assertVerifyFails(path, 15)

    def test_no_codesigning_eku(self):
        self.assertVerifyFails(self.osslsigncode_signed("leaf-noeku"), 16)
        path = self.hsmsign_signed("leaf-noeku")
        if path:
            self.assertVerifyFails(path, 16)

    def test_first_failure_decides_exit_code(self):
        good = self.signed_copy("hello32.exe")
        unsigned = self.copy("lib64.dll")
        tampered = self.signed_copy("hello64.exe")
        flip(tampered, signature_value_offset(read(tampered)))
        r = hsmsign("verify", "--ca-file", pki("root.pem"), good, unsigned,
                    tampered)
        self.assertRc(r, 10)
        out = [ln for ln in lines(r.stdout) if not ln[:1].isspace()]
        expected = [good + ": OK", unsigned + ": FAILED (no signature)",
                    tampered + ": FAILED (bad signature)"]
        self.assertEqual(len(out), 3, out)
        for line, start in zip(out, expected):
            self.assertTrue(line.startswith(start), (line, start))
        r = hsmsign("verify", "--ca-file", pki("root.pem"), tampered, unsigned)
        self.assertRc(r, 13)

    def test_missing_file(self):
        r = verify(self.path("does-not-exist.exe"))
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)


class TestVerifyForeign(HsTestCase):
    """hsmsign verify accepts what an independent signer (osslsigncode)
    produces, including signingTime, page hashes and nested signatures."""

    def osslsigncode_sign(self, src, out, leaf, digest, *extra):
        subprocess.run(["osslsigncode", "sign", "-h", digest, "-certs",
                        pki(leaf + "-chain.pem"), "-key", pki(leaf + ".key"),
                        *extra, "-in", src, "-out", out],
                       check=True, capture_output=True)
        return out

    def test_osslsigncode_signatures(self):
        for leaf in ("leaf-rsa3072", "leaf-ec384"):
            for digest in ("sha1", "sha256", "sha512"):
                for extra in ([], ["-ph"]):
                    with self.subTest(leaf=leaf, digest=digest, extra=extra):
                        path = self.osslsigncode_sign(
                            os.path.join(PE_DIR, "overlay32.exe"),
                            self.path("%s-%s%s.exe" % (leaf, digest,
                                                       "".join(extra))),
                            leaf, digest, *extra)
                        r = verify(path)
                        self.assertRc(r, 0)
                        self.assertIn("page hashes: %s" %
                                      ("ok" if extra else "none"),
                                      r.stdout.decode())

    def test_nested_signature(self):
        primary = self.signed_copy("hello32.exe", "leaf-ec256", "sha384")
        nested = self.osslsigncode_sign(primary, self.path("nested.exe"),
                                        "leaf-rsa3072", "sha256", "-nest")
        self.assertEqual(signature_count(read(nested)), 2)
        r = verify(nested)
        self.assertRc(r, 0)
        sig_lines = [ln for ln in lines(r.stdout) if ln[:1].isspace()
                     and "leaf-" in ln]
        self.assertEqual(len(sig_lines), 2, r.stdout)
        self.assertIn("leaf-ec256", sig_lines[0])
        self.assertIn("leaf-rsa3072", sig_lines[1])
        # signing again replaces both with a single signature
        self.assertRc(sign(nested), 0)
        self.assertEqual(signature_count(read(nested)), 1)
        self.assertRc(verify(nested), 0)

    def test_nested_signature_tampered(self):
        """A broken nested signature fails the file even if the primary is
        fine (verify reports the first non-OK signature)."""
        primary = self.signed_copy("hello32.exe", "leaf-ec256", "sha384")
        nested = self.osslsigncode_sign(primary, self.path("nested.exe"),
                                        "leaf-rsa3072", "sha256", "-nest")
        data = read(nested)
        (der_off, der), = cert_table_entries(data)
        # last byte of the nested signer's signature value
        inner = signed_data(der)["signer_infos"][0]["unsigned_attrs"][0]
        inner_si = signed_data(inner["values"][0].dump())["signer_infos"][0]
        sig = inner_si["signature"].native
        self.assertEqual(der.count(sig), 1)
        flip(nested, der_off + der.find(sig) + len(sig) - 1)
        r = verify(nested)
        self.assertRc(r, 13)
        self.assertFalse(osslsigncode_verify(nested)[0])
