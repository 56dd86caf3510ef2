"""Shared base of the cloud-provider end-to-end tests (AWS KMS, Cloud KMS,
Vault transit, Trusted Signing): one in-process emulator from tests/servers
per test class, its log and knobs cleared before each test, and the checks
those tests make. Importing this module puts tests/servers on sys.path."""
import os
import sys

from hslib import (HSMSIGN, HsTestCase, ROOT_CA, osslsigncode_verify, read,
                   run, sbverify)

SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "servers")
if SERVERS not in sys.path:
    sys.path.insert(0, SERVERS)


class EmulatorCase(HsTestCase):
    """Subclasses set emulator_class and emu_config (a staticmethod)."""

    emulator_class = None
    emu_config = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu = cls.emulator_class(cls.emu_config()).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.emu.__exit__(None, None, None)

    def setUp(self):
        super().setUp()
        with self.emu.state.lock:
            self.emu.state.log.clear()
            self.emu.state.knobs.clear()

    def assertVerifies(self, path, sha256=True):
        """hsmsign verify, osslsigncode and (sha256) sbverify accept path."""
        r = run([HSMSIGN, "verify", "--ca-file", ROOT_CA, path])
        self.assertRc(r, 0, "hsmsign verify")
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, out)
        if sha256:
            ok, out = sbverify(path)
            self.assertTrue(ok, out)

    def assertFailsCleanly(self, r, rc, *words, path=None, before=None):
        """Exit code rc, one error line naming words, path left as before."""
        self.assertRc(r, rc)
        self.assertOneErrorLine(r)
        for w in words:
            self.assertIn(w, r.stderr.decode())
        if path is not None:
            self.assertEqual(read(path), before)
