"""Two-step signing: `digest -o FILE.req --cert` writes a signing request,
`openssl pkeyutl -sign` signs its digest with the fixture key (standing in
for an HSM console or another machine), `attach` finishes the file. With
RSA the result is byte-identical to one-step signing. A wrong signature, a
changed file or a PKCS#7 made for other content is refused with the input
untouched; a PKCS#7 moves between files with identical content."""
import json
import os
import sys
import unittest

from hslib import (FIXTURES, HERE, HsTestCase, ROOT_CA, hsmsign, key_args,
                   osslsigncode_verify, pki, read, run, sbverify, sha256_file, sign,
                   signer_info)

sys.path.insert(0, os.path.join(HERE, "..", "servers"))
from tsa_client import Tsa  # noqa: E402

OID_RFC3161 = "1.3.6.1.4.1.311.3.3.1"


class DetachedTest(HsTestCase):
    def request(self, path, leaf="leaf-rsa2048", *extra):
        req = path + ".req"
        r = hsmsign("digest", path, "-o", req, "--cert", pki(leaf + "-chain.pem"), *extra)
        self.assertRc(r, 0)
        with open(req) as f:
            return req, json.load(f)

    def external_sign(self, req_json, leaf="leaf-rsa2048", name="sig.bin"):
        """Signs the request's digest outside hsmsign, as an HSM would."""
        tbs, sig = self.path(name + ".tbs"), self.path(name)
        with open(tbs, "wb") as f:
            f.write(bytes.fromhex(req_json["to_be_signed"]))
        r = run(["openssl", "pkeyutl", "-sign", "-inkey", pki(leaf + ".key"), "-in", tbs,
                 "-out", sig, "-pkeyopt", "digest:" + req_json["digest"]])
        self.assertRc(r, 0)
        return sig

    def attach(self, path, sig, req=None, *extra):
        args = ["attach", path, "--signature", sig, *extra]
        if req is not None:
            args += ["--request", req]
        return hsmsign(*args)

    def test_round_trip_is_byte_identical_to_one_step(self):
        cases = [("hello64.exe", "sha256", ["-ph", "-d", "Demo app", "-du",
                                            "https://example.test/"]),
                 ("hello32.exe", "sha1", []),
                 (os.path.join(FIXTURES, "msi", "small.msi"), "sha384", ["--msi-dse"]),
                 (os.path.join(FIXTURES, "cab", "stored.cab"), "sha256", []),
                 (os.path.join(FIXTURES, "scripts", "ps1-utf8-crlf.ps1"), "sha512", [])]
        for src, digest, extra in cases:
            with self.subTest(src=os.path.basename(src), digest=digest):
                name = os.path.basename(src)
                one = self.copy(src, "one-" + name)
                two = self.copy(src, "two-" + name)
                self.assertRc(sign(one, "leaf-rsa2048", digest, "-q", *extra), 0)
                req, doc = self.request(two, "leaf-rsa2048", "-fd", digest, *extra)
                self.assertEqual(doc["format"], "hsmsign-signing-request")
                self.assertEqual(doc["digest"], digest)
                r = hsmsign("digest", "-fd", digest, two)  # the file digest it names
                self.assertEqual(r.stdout.split()[0].decode(), doc["file_digest"])
                sig = self.external_sign(doc, name=name + ".sig")
                self.assertRc(self.attach(two, sig, req, "-q"), 0)
                self.assertEqual(read(two), read(one))
                ok, out = osslsigncode_verify(two)
                self.assertTrue(ok, out)

    def test_ec_key_round_trip_verifies(self):
        path = self.copy("hello64.exe")
        req, doc = self.request(path, "leaf-ec256")
        sig = self.external_sign(doc, "leaf-ec256")
        self.assertRc(self.attach(path, sig, req, "-q"), 0)
        self.assertRc(hsmsign("verify", "--ca-file", ROOT_CA, path), 0)
        self.assertTrue(osslsigncode_verify(path)[0])
        self.assertTrue(sbverify(path)[0])

    def test_wrong_signature_is_refused(self):
        path = self.copy("hello64.exe")
        req, doc = self.request(path)
        before = sha256_file(path)
        other_key = self.external_sign(doc, "leaf-rsa3072", "other.bin")
        garbage = self.path("garbage.bin")
        with open(garbage, "wb") as f:
            f.write(os.urandom(256))
        for sig in (other_key, garbage):
            r = self.attach(path, sig, req)
            self.assertRc(r, 13)
            self.assertOneErrorLine(r)
            self.assertIn(b"does not verify with the certificate", r.stderr)
            self.assertEqual(sha256_file(path), before)
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         sorted(["hello64.exe", "hello64.exe.req", "other.bin",
                                 "other.bin.tbs", "garbage.bin"]))

    def test_changed_file_or_options_are_refused(self):
        path = self.copy("hello64.exe")
        req, doc = self.request(path)
        sig = self.external_sign(doc)
        # Another file (same size) ...
        other = self.copy("hello64.exe", "other.exe")
        data = bytearray(read(other))
        data[0x200] ^= 1
        with open(other, "wb") as f:
            f.write(data)
        before = sha256_file(other)
        r = self.attach(other, sig, req)
        self.assertRc(r, 12)
        self.assertOneErrorLine(r)
        self.assertIn(b"changed since the signing request", r.stderr)
        self.assertEqual(sha256_file(other), before)
        # ... or the request edited to ask for other options.
        doc["description"] = "Something else"
        edited = self.path("edited.req")
        with open(edited, "w") as f:
            json.dump(doc, f)
        before = sha256_file(path)
        self.assertRc(self.attach(path, sig, edited), 12)
        self.assertEqual(sha256_file(path), before)
        # A request that is not one.
        with open(edited, "w") as f:
            f.write('{"format": "something"}')
        r = self.attach(path, sig, edited)
        self.assertRc(r, 11)
        self.assertOneErrorLine(r)
        self.assertEqual(sha256_file(path), before)

    def test_pkcs7_moves_between_identical_files(self):
        a = self.copy("hello64.exe", "a.exe")
        b = self.copy("hello64.exe", "b.exe")
        self.assertRc(sign(a, "leaf-rsa2048", "sha256,sha1", "-q", "-ph"), 0)
        p7 = self.path("a.p7")
        self.assertRc(hsmsign("extract", "-o", p7, a), 0)
        self.assertRc(self.attach(b, p7, None, "-q"), 0)
        self.assertEqual(read(b), read(a))
        # Different content: refused, untouched.
        c = self.copy("hello32.exe", "c.exe")
        before = sha256_file(c)
        r = self.attach(c, p7)
        self.assertRc(r, 12)
        self.assertOneErrorLine(r)
        self.assertIn(b"different content", r.stderr)
        self.assertEqual(sha256_file(c), before)
        # Not a PKCS#7 at all.
        junk = self.path("junk.p7")
        with open(junk, "wb") as f:
            f.write(b"\x30\x03\x02\x01\x01")
        self.assertRc(self.attach(c, junk), 11)
        # A SignedData over plain data (no SpcIndirectDataContent).
        smime = self.path("smime.p7")
        r = run(["openssl", "smime", "-sign", "-binary", "-nodetach", "-outform", "DER",
                 "-in", c, "-signer", pki("leaf-rsa2048.pem"), "-inkey",
                 pki("leaf-rsa2048.key"), "-out", smime])
        self.assertRc(r, 0)
        r = self.attach(c, smime)
        self.assertRc(r, 11)
        self.assertOneErrorLine(r)
        self.assertEqual(sha256_file(c), before)

    def test_request_refuses_nesting_and_needs_a_chain(self):
        path = self.copy("hello64.exe")
        r = hsmsign("digest", path, "-o", self.path("x.req"))
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        r = hsmsign("digest", path, "-o", self.path("x.req"), "--cert",
                    pki("no-such.pem"))
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertFalse(os.path.exists(self.path("x.req")))
        r = hsmsign("attach", path)
        self.assertRc(r, 87)

    def test_any_key_signs_a_request(self):
        """sign --sign-request: a key hsmsign can open (here PKCS#12) signs
        the request; a key with another certificate is refused."""
        one, two = self.copy("hello64.exe", "one.exe"), self.copy("hello64.exe", "two.exe")
        self.assertRc(sign(one, "leaf-rsa2048", "sha256", "-q"), 0)
        req, _ = self.request(two)
        sig = self.path("two.sig")
        pass_file = "file:" + pki("leaf-rsa2048.p12.pass")
        r = hsmsign("sign", "--pfx", pki("leaf-rsa2048.p12"), "--pfx-pass", pass_file,
                    "--sign-request", req, "-o", sig, "-q")
        self.assertRc(r, 0)
        self.assertRc(self.attach(two, sig, req, "-q"), 0)
        self.assertEqual(read(two), read(one))
        r = hsmsign("sign", *key_args("leaf-ec256"), "--sign-request", req, "-o",
                    self.path("ec.sig"))
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertIn(b"not the request's signer", r.stderr)
        self.assertFalse(os.path.exists(self.path("ec.sig")))
        r = hsmsign("sign", *key_args(), "--sign-request", req, two)
        self.assertRc(r, 87)

    def test_attach_with_timestamp(self):
        with Tsa() as tsa:
            path = self.copy("hello64.exe")
            req, doc = self.request(path)
            sig = self.external_sign(doc)
            r = self.attach(path, sig, req, "-q", "-tr", tsa.url("ok"))
            self.assertRc(r, 0)
            types = [a["type"].dotted for a in signer_info(read(path))["unsigned_attrs"]]
            self.assertEqual(types, [OID_RFC3161])
            r = hsmsign("verify", "--ca-file", ROOT_CA, "--tsa-ca-file", tsa.root, path)
            self.assertRc(r, 0)
            # The signature value is the external one.
            with open(sig, "rb") as f:
                self.assertEqual(signer_info(read(path))["signature"].native, f.read())


if __name__ == "__main__":
    unittest.main()
