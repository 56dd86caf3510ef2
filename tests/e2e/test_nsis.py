"""NSIS integration, for real: makensis runs hsmsign from !finalize (the
installer) and !uninstfinalize (the uninstaller it embeds), as docs/guide.md
tells users to do. Both must come out signed and verify with hsmsign,
osslsigncode and sbverify; a failing hsmsign must fail the NSIS build.

The installer is built with `SetCompress off`, so the signed uninstaller is
stored byte for byte inside the installer: the test cuts it out of the
installer (it does not trust the copy the finalize command makes) and
verifies that.
"""
import os
import shutil
import struct
import unittest

from hslib import (HSMSIGN, HsTestCase, ROOT_CA, osslsigncode_verify, pki, read,
                   run, sbverify, verify)

MAKENSIS = shutil.which("makensis")


def sign_command(key="leaf-rsa2048", extra=""):
    """The hsmsign command line NSIS runs, %1 being the file to sign."""
    return '"%s" sign -q --key "%s" --cert "%s"%s "%%1"' % (
        HSMSIGN, pki(key + ".key"), pki(key + "-chain.pem"), extra)


def embedded_pe_images(data):
    """Every signed PE image found after offset 0 in data: (offset, bytes).
    An image ends where its certificate table ends (signers append it)."""
    found = []
    pos = data.find(b"MZ", 1)
    while pos > 0:
        image = pe_signed_extent(data, pos)
        if image is not None:
            found.append((pos, data[pos:pos + image]))
        pos = data.find(b"MZ", pos + 1)
    return found


def pe_signed_extent(data, base):
    """Length of the signed PE image at data[base:], or None."""
    if base + 0x40 > len(data):
        return None
    pe = base + struct.unpack_from("<I", data, base + 0x3C)[0]
    if pe + 24 > len(data) or data[pe:pe + 4] != b"PE\0\0":
        return None
    opt = pe + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    dirs = opt + (96 if magic == 0x10B else 112 if magic == 0x20B else -1)
    if dirs < opt or dirs + 5 * 8 > len(data):
        return None
    cert_off, cert_size = struct.unpack_from("<II", data, dirs + 4 * 8)
    end = base + cert_off + cert_size
    if cert_off == 0 or cert_size == 0 or end > len(data):
        return None
    return cert_off + cert_size


@unittest.skipUnless(MAKENSIS, "makensis not installed")
class NsisTest(HsTestCase):
    def script(self, finalize, uninst_finalize):
        """Writes a minimal installer script with an uninstaller."""
        nsi = self.path("setup.nsi")
        with open(nsi, "w", encoding="utf-8") as f:
            f.write("Unicode true\n"
                    "SetCompress off\n"
                    'OutFile "%s"\n'
                    'Name "hsmsign NSIS test"\n'
                    "RequestExecutionLevel user\n"
                    "!finalize '%s' = 0\n"
                    "!uninstfinalize '%s' = 0\n"
                    "Section\n"
                    '  WriteUninstaller "$INSTDIR\\uninstall.exe"\n'
                    "SectionEnd\n"
                    'Section "Uninstall"\n'
                    '  Delete "$INSTDIR\\uninstall.exe"\n'
                    "SectionEnd\n" % (self.path("setup-app.exe"), finalize,
                                      uninst_finalize))
        return nsi

    def makensis(self, nsi):
        return run([MAKENSIS, "-V2", "-NOCD", nsi], timeout=120)

    def assertVerifies(self, path, what):
        self.assertRc(verify(path), 0, what + ": hsmsign verify")
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, what + ": osslsigncode verify\n" + out)
        ok, out = sbverify(path)
        self.assertTrue(ok, what + ": sbverify\n" + out)

    def test_installer_and_uninstaller_signed(self):
        copy = self.path("uninstaller-as-signed.exe")
        nsi = self.script(sign_command(),
                          '%s && cp "%%1" "%s"' % (sign_command(), copy))
        self.assertRc(self.makensis(nsi), 0, "makensis")
        installer = self.path("setup-app.exe")
        self.assertVerifies(installer, "installer")
        data = read(installer)
        images = embedded_pe_images(data)
        self.assertEqual(len(images), 1, "one signed uninstaller inside")
        uninst = self.path("uninstall-extracted.exe")
        with open(uninst, "wb") as f:
            f.write(images[0][1])
        self.assertVerifies(uninst, "embedded uninstaller")
        self.assertEqual(images[0][1], read(copy),
                         "the embedded uninstaller is the one hsmsign signed")

    def test_failed_signing_fails_the_build(self):
        # A key that does not match the certificate: hsmsign refuses, and
        # `= 0` makes makensis stop instead of shipping an unsigned file.
        bad = '"%s" sign -q --key "%s" --cert "%s" "%%1"' % (
            HSMSIGN, pki("leaf-ec256.key"), pki("leaf-rsa2048-chain.pem"))
        nsi = self.script(bad, sign_command())
        r = self.makensis(nsi)
        self.assertNotEqual(r.returncode, 0, "makensis must fail")
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertIn("hsmsign:", out)

    def test_uninstaller_signing_failure_fails_the_build(self):
        bad = '"%s" sign -q --key "%s" --cert "%s" "%%1"' % (
            HSMSIGN, pki("leaf-ec256.key"), pki("leaf-rsa2048-chain.pem"))
        nsi = self.script(sign_command(), bad)
        r = self.makensis(nsi)
        self.assertNotEqual(r.returncode, 0, "makensis must fail")
        self.assertFalse(os.path.exists(self.path("setup-app.exe")) and
                         verify(self.path("setup-app.exe")).returncode == 0,
                         "no verified installer may come out of a failed build")


if __name__ == "__main__":
    unittest.main()
