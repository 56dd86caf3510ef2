"""The committed fixtures are what the other tests assume (no hsmsign
needed): sizes, PE shapes, the PKI's dates and extensions, key files."""
import datetime
import os
import unittest

import pefile
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key, pkcs12)
from cryptography.x509.oid import ExtendedKeyUsageOID

from hslib import (KEYS, PE_DIR, PE_FIXTURES, PeLayout, osslsigncode_verify,
                   p12_password, pki, read)

CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING


def cert(name):
    return x509.load_pem_x509_certificate(read(pki(name + ".pem")))


def utc(y, m=1, d=1):
    return datetime.datetime(y, m, d)  # cryptography 38: naive UTC


class TestPeFixtures(unittest.TestCase):

    def test_sizes(self):
        sizes = {n: os.path.getsize(os.path.join(PE_DIR, n))
                 for n in PE_FIXTURES}
        self.assertEqual(sizes["odd64.exe"] % 8, 3)
        self.assertEqual(sizes["overlay32.exe"] % 8, 5)
        self.assertEqual(sizes["hello64.exe"] % 8, 0)
        self.assertEqual(sizes["symtab64.exe"] % 8, 0)

    def test_shapes(self):
        expect = {"hello32.exe": 0x10B, "hello64.exe": 0x20B,
                  "lib32.dll": 0x10B, "lib64.dll": 0x20B, "app.efi": 0x20B,
                  "overlay32.exe": 0x10B, "nsis-stub.exe": 0x10B}
        for name, magic in expect.items():
            with self.subTest(name=name):
                self.assertEqual(PeLayout(read(os.path.join(PE_DIR, name)))
                                 .magic, magic)
        efi = pefile.PE(os.path.join(PE_DIR, "app.efi"), fast_load=True)
        self.assertEqual(efi.OPTIONAL_HEADER.Subsystem, 10)
        dll = pefile.PE(os.path.join(PE_DIR, "lib64.dll"), fast_load=True)
        self.assertTrue(dll.FILE_HEADER.Characteristics & 0x2000)  # DLL

    def test_symbol_table_at_eof(self):
        path = os.path.join(PE_DIR, "symtab64.exe")
        pe = pefile.PE(path, fast_load=True)
        ptr = pe.FILE_HEADER.PointerToSymbolTable
        end = max(s.PointerToRawData + s.SizeOfRawData for s in pe.sections)
        self.assertNotEqual(ptr, 0)
        self.assertGreaterEqual(ptr, end)
        self.assertGreater(pe.FILE_HEADER.NumberOfSymbols, 0)

    def test_overlays(self):
        hello32 = read(os.path.join(PE_DIR, "hello32.exe"))
        hello64 = read(os.path.join(PE_DIR, "hello64.exe"))
        self.assertTrue(read(os.path.join(PE_DIR, "overlay32.exe"))
                        .startswith(hello32 + b"HSOVERLAY"))
        self.assertEqual(read(os.path.join(PE_DIR, "odd64.exe")),
                         hello64 + b"ODD")

    def test_signed_state(self):
        for name in PE_FIXTURES:
            with self.subTest(name=name):
                layout = PeLayout(read(os.path.join(PE_DIR, name)))
                self.assertEqual(layout.signed, name == "presigned64.exe")
        ok, out = osslsigncode_verify(os.path.join(PE_DIR, "presigned64.exe"))
        self.assertTrue(ok, out)


class TestPki(unittest.TestCase):

    def test_validity(self):
        for name in ("root", "intermediate", "other-root"):
            c = cert(name)
            self.assertEqual((c.not_valid_before, c.not_valid_after),
                             (utc(2024), utc(2099, 12, 31)), name)
        for name in KEYS + ("leaf-noeku",):
            c = cert(name)
            self.assertEqual((c.not_valid_before, c.not_valid_after),
                             (utc(2024), utc(2090)), name)
        c = cert("leaf-expired")
        self.assertEqual((c.not_valid_before, c.not_valid_after),
                         (utc(2020), utc(2021)))

    def test_leaf_extensions_and_chain(self):
        inter = cert("intermediate")
        for name in KEYS + ("leaf-expired", "leaf-noeku"):
            with self.subTest(name=name):
                c = cert(name)
                eku = c.extensions.get_extension_for_class(
                    x509.ExtendedKeyUsage).value
                self.assertEqual(CODE_SIGNING in eku, name != "leaf-noeku")
                self.assertTrue(c.extensions.get_extension_for_class(
                    x509.KeyUsage).value.digital_signature)
                self.assertEqual(c.issuer, inter.subject)
                chain = [x509.load_pem_x509_certificate(b"-----BEGIN" + p)
                         for p in read(pki(name + "-chain.pem"))
                         .split(b"-----BEGIN")[1:]]
                self.assertEqual(chain, [c, inter])
                key = load_pem_private_key(read(pki(name + ".key")), None)
                self.assertEqual(key.public_key().public_numbers(),
                                 c.public_key().public_numbers())
        self.assertEqual(inter.issuer, cert("root").subject)
        self.assertNotEqual(cert("other-root").subject, cert("root").subject)

    def test_key_sizes(self):
        self.assertEqual(cert("leaf-rsa2048").public_key().key_size, 2048)
        self.assertEqual(cert("leaf-rsa3072").public_key().key_size, 3072)
        self.assertEqual(cert("leaf-ec256").public_key().curve.name,
                         "secp256r1")
        self.assertEqual(cert("leaf-ec384").public_key().curve.name,
                         "secp384r1")

    def test_password_protected(self):
        password = p12_password().encode()
        self.assertFalse(password.endswith(b"\n"))
        key, leaf, cas = pkcs12.load_key_and_certificates(
            read(pki("leaf-rsa2048.p12")), password)
        self.assertEqual(leaf, cert("leaf-rsa2048"))
        self.assertEqual(cas, [cert("intermediate")])
        with self.assertRaises((TypeError, ValueError)):
            load_pem_private_key(read(pki("leaf-rsa2048-enc.key")), None)
        enc = load_pem_private_key(read(pki("leaf-rsa2048-enc.key")), password)
        self.assertEqual(enc.public_key().public_numbers(),
                         key.public_key().public_numbers())
