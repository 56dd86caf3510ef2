"""`remove` and `extract`: checked against our own parse of the certificate
table and against osslsigncode's view of the result."""
import base64
import os
import re

from hslib import (HsTestCase, PeLayout, authenticode_digest,
                   cert_table_entries, hsmsign, osslsigncode_verify,
                   pe_checksum_ok, read, sha256_file, signed_data, verify)


class TestExtract(HsTestCase):

    def test_der_to_file_and_stdout(self):
        for fixture in ("presigned64.exe", "odd64.exe"):
            with self.subTest(fixture=fixture):
                path = (self.copy(fixture) if fixture == "presigned64.exe"
                        else self.signed_copy(fixture, "leaf-ec384"))
                (_, der), = cert_table_entries(read(path))
                out = self.path(fixture + ".p7")
                self.assertRc(hsmsign("extract", "-o", out, path), 0)
                self.assertEqual(read(out), der)
                signed_data(read(out))  # parses as PKCS#7 SignedData
                r = hsmsign("extract", path)
                self.assertRc(r, 0)
                self.assertEqual(r.stdout, der)

    def test_pem(self):
        path = self.copy("presigned64.exe")
        (_, der), = cert_table_entries(read(path))
        r = hsmsign("extract", "--pem", path)
        self.assertRc(r, 0)
        m = re.fullmatch(rb"-----BEGIN PKCS7-----\n(.*)-----END PKCS7-----\n",
                         r.stdout, re.S)
        self.assertTrue(m, r.stdout[:80])
        self.assertEqual(base64.b64decode(m.group(1)), der)

    def test_unsigned(self):
        r = hsmsign("extract", "-o", self.path("x.p7"), self.copy("lib32.dll"))
        self.assertRc(r, 10)
        self.assertOneErrorLine(r)
        self.assertFalse(os.path.exists(self.path("x.p7")))


class TestRemove(HsTestCase):

    def check_removed(self, path, original):
        data = read(path)
        self.assertFalse(PeLayout(data).signed)
        self.assertEqual(authenticode_digest(data),
                         authenticode_digest(read(original)))
        self.assertTrue(pe_checksum_ok(data), "stale PE CheckSum")
        self.assertRc(verify(path), 10)
        self.assertFalse(osslsigncode_verify(path)[0])

    def test_remove_in_place(self):
        for fixture in ("hello64.exe", "odd64.exe", "overlay32.exe"):
            with self.subTest(fixture=fixture):
                path = self.signed_copy(fixture)
                self.assertRc(hsmsign("remove", path), 0)
                self.check_removed(path, self.copy(fixture, "orig-" + fixture))
                # the table started at the old EOF padded to 8
                size = os.path.getsize(self.path("orig-" + fixture))
                self.assertEqual(os.path.getsize(path), size + (-size % 8))

    def test_remove_foreign_signature_to_output(self):
        path = self.copy("presigned64.exe")
        before = sha256_file(path)
        out = self.path("clean.exe")
        self.assertRc(hsmsign("remove", "-o", out, path), 0)
        self.assertEqual(sha256_file(path), before)
        self.check_removed(out, self.copy("hello64.exe"))

    def test_remove_unsigned(self):
        path = self.copy("hello32.exe")
        before = sha256_file(path)
        r = hsmsign("remove", path)
        self.assertRc(r, 10)
        self.assertOneErrorLine(r)
        self.assertEqual(sha256_file(path), before)
