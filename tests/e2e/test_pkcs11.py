"""PKCS#11 signing against SoftHSM2, a real PKCS#11 implementation.

The test initialises its own tokens in a private directory (SOFTHSM2_CONF),
generates RSA 2048/3072 and EC P-256/P-384 keys ON the token with
pkcs11-tool (opensc), issues their certificates from the test PKI's
intermediate CA with python3-cryptography, and stores them on the token.
Every signature is checked by osslsigncode (and sbverify for SHA-256) as
well as by hsmsign. Failures SoftHSM cannot produce (a locked PIN, a
removed token, a missing mechanism) and the login count of a batch come
from p11shim.c, a forwarding module compiled here that logs C_Login,
C_OpenSession and C_Sign calls to a file outside hsmsign.
"""
import datetime
import os
import pty
import select
import shutil
import subprocess
import tempfile
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import hslib
from hslib import HsTestCase, hsmsign, lines, read, run

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "1234"
SO_PIN = "56789012"
TOKEN = "hs-test"
# A CloudHSM-style "user:password" PIN on a second token: passed unchanged.
OTHER_TOKEN, OTHER_PIN = "hs-other", "cu_signer:S3cret!pass"
# (label, CKA_ID hex, pkcs11-tool key type, digest to use)
KEYS = (("rsa2048", "01", "rsa:2048", "sha256"),
        ("rsa3072", "02", "rsa:3072", "sha384"),
        ("ec256", "03", "EC:secp256r1", "sha256"),
        ("ec384", "04", "EC:secp384r1", "sha384"))
HERE = os.path.dirname(os.path.abspath(__file__))


class Token:
    """The SoftHSM state shared by the module's tests (built once)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hs-p11-")
        os.mkdir(os.path.join(self.dir, "tokens"))
        self.conf = os.path.join(self.dir, "softhsm2.conf")
        with open(self.conf, "w") as f:
            f.write("directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n" % self.dir)
        self.env = {"SOFTHSM2_CONF": self.conf}
        self.pin_file = self.path("pin")
        with open(self.pin_file, "w") as f:
            f.write(PIN + "\n")
        self.init_token(TOKEN, PIN)
        for label, key_id, key_type, _ in KEYS:
            self.tool("--login", "--pin", PIN, "--keypairgen", "--key-type", key_type,
                      "--id", key_id, "--label", label, "--usage-sign")
            self.issue_cert(label, key_id)
        self.tool("--login", "--pin", PIN, "--write-object", hslib.pki("intermediate.pem"),
                  "--type", "cert", "--id", "99", "--label", "intermediate")
        # A key that wants the PIN for every signature (YubiKey PIV 9c).
        self.tool("--login", "--pin", PIN, "--keypairgen", "--key-type", "EC:secp256r1",
                  "--id", "05", "--label", "always", "--usage-sign", "--always-auth")
        self.issue_cert("always", "05")
        self.init_token(OTHER_TOKEN, OTHER_PIN)
        self.tool("--token-label", OTHER_TOKEN, "--login", "--pin", OTHER_PIN, "--keypairgen",
                  "--key-type", "EC:secp256r1", "--id", "01", "--label", "cloud")
        self.issue_cert("cloud", "01", token=OTHER_TOKEN, pin=OTHER_PIN)
        self.shim = self.path("p11shim.so")
        r = run(["cc", "-shared", "-fPIC", "-O1", "-I/usr/include/p11-kit-1", "-o", self.shim,
                 os.path.join(HERE, "p11shim.c"), "-ldl"])
        if r.returncode != 0:
            raise AssertionError("building p11shim.so failed: %s" % r.stderr.decode())

    def path(self, name):
        return os.path.join(self.dir, name)

    def init_token(self, label, pin):
        r = run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                 "--so-pin", SO_PIN], env=self.env)
        if r.returncode != 0:
            raise AssertionError("softhsm2-util: %s" % (r.stdout + r.stderr).decode())

    def tool(self, *args):
        r = run(["pkcs11-tool", "--module", SOFTHSM, *args], env=self.env)
        if r.returncode != 0:
            raise AssertionError("pkcs11-tool %s: %s" % (" ".join(args),
                                                         (r.stdout + r.stderr).decode()))
        return r.stdout.decode()

    def public_key(self, token, key_id):
        """The token's public key with CKA_ID key_id. pkcs11-tool 0.23
        cannot export P-384 keys ("cannot create EVP_PKEY"), so EC points
        are read from its object listing instead."""
        listing = self.tool("--token-label", token, "--list-objects", "--type", "pubkey")
        for block in listing.split("Public Key Object;")[1:]:
            fields = dict(line.strip().split(":", 1) for line in block.splitlines()[1:]
                          if ":" in line)
            fields = {k.strip(): v.strip() for k, v in fields.items()}
            if fields.get("ID") != key_id:
                continue
            if "EC_POINT" not in fields:
                pub_der = self.path("pub-%s-%s.der" % (token, key_id))
                self.tool("--token-label", token, "--read-object", "--type", "pubkey", "--id",
                          key_id, "-o", pub_der)
                return serialization.load_der_public_key(read(pub_der))
            point = bytes.fromhex(fields["EC_POINT"])
            if point[0] == 0x04 and point[1] == len(point) - 2:
                point = point[2:]  # the DER OCTET STRING around the point
            curve = {"06082a8648ce3d030107": ec.SECP256R1(),
                     "06052b81040022": ec.SECP384R1()}[fields["EC_PARAMS"]]
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        raise AssertionError("no public key with id %s on %s:\n%s" % (key_id, token, listing))

    def issue_cert(self, label, key_id, token=TOKEN, pin=PIN):
        """Issues a code-signing leaf for the token key from the test
        intermediate; writes LABEL.der, LABEL-chain.pem; stores it on the
        token with the key's CKA_ID."""
        pub = self.public_key(token, key_id)
        ca_key = serialization.load_pem_private_key(read(hslib.pki("intermediate.key")), None)
        ca = x509.load_pem_x509_certificate(read(hslib.pki("intermediate.pem")))
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            "hsmsign token " + label)]))
                .issuer_name(ca.subject).public_key(pub)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                             False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        with open(self.path(label + ".der"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.DER))
        with open(self.path(label + "-chain.pem"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM) + read(hslib.pki(
                "intermediate.pem")))
        self.tool("--token-label", token, "--login", "--pin", pin, "--write-object",
                  self.path(label + ".der"), "--type", "cert", "--id", key_id, "--label", label)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Pkcs11Test(HsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.token = Token()

    @classmethod
    def tearDownClass(cls):
        cls.token.cleanup()

    def p11(self, *args, module=SOFTHSM, env=None, **kw):
        full_env = dict(self.token.env)
        full_env.update(env or {})
        return hsmsign(*args, "--pkcs11-module", module, env=full_env, **kw)

    def p11_sign(self, uri, *files_and_opts, pin="file", **kw):
        pin_args = ["--pin", "file:" + self.token.pin_file] if pin == "file" else []
        return self.p11("sign", "--key", uri, *pin_args, *files_and_opts, **kw)

    def shim_env(self, fault=""):
        log = self.path("shim.log")
        return log, {"P11SHIM_MODULE": SOFTHSM, "P11SHIM_LOG": log, "P11SHIM_FAULT": fault}

    def assertVerifies(self, path, digest="sha256"):
        self.assertRc(hslib.verify(path), 0, "hsmsign verify")
        ok, out = hslib.osslsigncode_verify(path)
        self.assertTrue(ok, out)
        if digest == "sha256":
            ok, out = hslib.sbverify(path)
            self.assertTrue(ok, out)

    def assertFailsCleanly(self, result, rc, fragment, *inputs):
        self.assertRc(result, rc)
        self.assertOneErrorLine(result)
        self.assertIn(fragment, result.stderr.decode())
        for path, digest in inputs:
            self.assertEqual(hslib.sha256_file(path), digest, "input changed: " + path)

    # ------------------------------------------------------------- signing

    def test_each_key_type_with_certificate_from_token(self):
        for label, _, _, digest in KEYS:
            with self.subTest(key=label):
                exe = self.copy("hello64.exe", label + ".exe")
                r = self.p11_sign("pkcs11:token=%s;object=%s" % (TOKEN, label), "-fd", digest,
                                  exe)
                self.assertRc(r, 0)
                self.assertVerifies(exe, digest)
                (_, der), = hslib.cert_table_entries(read(exe))
                subjects = [c.chosen.subject.native["common_name"]
                            for c in hslib.signed_data(der)["certificates"]]
                self.assertIn("hsmsign token " + label, subjects)

    def test_every_digest_and_page_hashes(self):
        for digest in hslib.DIGESTS:
            with self.subTest(digest=digest):
                exe = self.copy("hello32.exe", digest + ".exe")
                r = self.p11_sign("pkcs11:token=%s;id=%%01" % TOKEN, "-fd", digest, "-ph", exe)
                self.assertRc(r, 0)
                self.assertVerifies(exe, digest)

    def test_dual_signing_and_append_on_the_token(self):
        """-fd sha1,sha256 and -as go through the same engine with a token key."""
        exe = self.copy("hello64.exe")
        uri = "pkcs11:token=%s;id=%%01" % TOKEN
        self.assertRc(self.p11_sign(uri, "-fd", "sha1,sha256", "-ph", exe), 0)
        self.assertRc(self.p11_sign(uri, "-fd", "sha384", "-as", exe), 0)
        self.assertEqual(hslib.signature_count(read(exe)), 3)
        self.assertRc(hslib.verify(exe), 0)
        ok, out = hslib.osslsigncode_verify(exe)
        self.assertTrue(ok, out)
        self.assertIn("Number of verified signatures: 3", out)

    def test_certificate_file_and_every_pe_fixture(self):
        files = [self.copy(name) for name in hslib.UNSIGNED_PE]
        r = self.p11_sign("pkcs11:token=%s;object=ec384;type=private" % TOKEN, "--cert",
                          self.token.path("ec384-chain.pem"), "-fd", "sha384", *files)
        self.assertRc(r, 0)
        for path in files:
            with self.subTest(file=os.path.basename(path)):
                self.assertVerifies(path, "sha384")

    def test_other_formats(self):
        """MSI, CAB, catalog and PowerShell sign through the token too; all
        of them are formats osslsigncode verifies."""
        files = [self.copy(os.path.join(hslib.FIXTURES, rel)) for rel in
                 ("msi/small.msi", "cab/stored.cab", "cat/files.cat",
                  "scripts/ps1-utf8-crlf.ps1")]
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, *files)
        self.assertRc(r, 0)
        for path in files:
            with self.subTest(file=os.path.basename(path)):
                self.assertRc(hslib.verify(path), 0, "hsmsign verify")
                ok, out = hslib.osslsigncode_verify(path)
                self.assertTrue(ok, out)

    def test_chain_intermediate_comes_from_token(self):
        exe = self.copy("lib64.dll")
        self.assertRc(self.p11_sign("pkcs11:token=%s;object=rsa3072" % TOKEN, exe), 0)
        # Only the root is given to the verifiers: the intermediate must
        # have been found on the token and embedded.
        self.assertVerifies(exe)
        (_, der), = hslib.cert_table_entries(read(exe))
        subjects = [c.chosen.subject.native["common_name"]
                    for c in hslib.signed_data(der)["certificates"]]
        self.assertEqual(len(subjects), 2, subjects)

    def test_key_in_a_slot_named_by_id(self):
        out = self.p11("pkcs11", "list")
        self.assertRc(out, 0)
        slot = None
        for i, line in enumerate(lines(out.stdout)):
            if line.startswith("  Token '%s'" % TOKEN):
                slot = int(lines(out.stdout)[i - 1].split()[1].rstrip(":"))
        self.assertIsNotNone(slot, out.stdout)
        exe = self.copy("hello64.exe")
        r = self.p11_sign("pkcs11:slot-id=%d;object=ec256" % slot, exe)
        self.assertRc(r, 0)
        self.assertVerifies(exe)

    def test_cloudhsm_style_pin_passed_unchanged(self):
        exe = self.copy("hello64.exe")
        pin_env = {"HS_TEST_PIN": OTHER_PIN}
        r = self.p11_sign("pkcs11:token=%s;object=cloud" % OTHER_TOKEN, "--pin",
                          "env:HS_TEST_PIN", "-ac", hslib.pki("intermediate.pem"), exe, pin=None,
                          env=pin_env)
        self.assertRc(r, 0)
        self.assertVerifies(exe)

    def test_always_authenticate_key_logs_in_per_signature(self):
        log, env = self.shim_env()
        files = [self.copy("app.efi", "a%d.efi" % i) for i in range(3)]
        r = self.p11_sign("pkcs11:token=%s;object=always" % TOKEN, *files, module=self.token.shim,
                          env=env)
        self.assertRc(r, 0)
        for path in files:
            self.assertVerifies(path)
        calls = lines(read(log))
        self.assertEqual(calls.count("C_Login"), 1, calls)
        self.assertEqual(calls.count("C_Login context"), 3, calls)

    def test_pin_prompt_on_a_terminal(self):
        exe = self.copy("hello64.exe")
        env = dict(os.environ, **self.token.env)
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(hslib.HSMSIGN, [hslib.HSMSIGN, "sign", "--pkcs11-module", SOFTHSM,
                                      "--key", "pkcs11:token=%s;object=rsa2048" % TOKEN, exe],
                      env)
        seen = self.read_pty_until(fd, b"PIN for token 'hs-test': ")
        os.write(fd, PIN.encode() + b"\n")
        rest = self.read_pty_until(fd, None)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, seen + rest)
        self.assertNotIn(PIN.encode(), seen + rest, "the PIN was echoed")
        self.assertVerifies(exe)

    @staticmethod
    def read_pty_until(fd, marker, timeout=20):
        data = b""
        while marker is None or marker not in data:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise AssertionError("no prompt on the terminal: %r" % data)
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data

    # -------------------------------------------------------------- batch

    def test_batch_of_200_logs_in_once(self):
        log, env = self.shim_env()
        files = [self.copy("app.efi", "f%03d.efi" % i) for i in range(200)]
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, *files,
                          module=self.token.shim, env=env)
        self.assertRc(r, 0)
        calls = lines(read(log))
        self.assertEqual(calls.count("C_Login"), 1, "logins: %d" % calls.count("C_Login"))
        self.assertEqual(calls.count("C_Sign"), 200)
        self.assertEqual(calls.count("C_OpenSession"), 1)
        # Same input, same RSA key: every signature is the same bytes, so a
        # sample stands for all (verifying 200 is slow under ASan).
        self.assertRc(hsmsign("verify", "--ca-file", hslib.ROOT_CA, *files[::20]), 0)
        self.assertEqual(len(set(hslib.sha256_file(p) for p in files)), 1)
        for path in (files[0], files[199]):
            ok, out = hslib.osslsigncode_verify(path)
            self.assertTrue(ok, out)

    def test_sessions_option_bounds_and_signs(self):
        exe = self.copy("hello64.exe")
        r = self.p11_sign("pkcs11:token=%s;object=ec256" % TOKEN, "--pkcs11-sessions", "4", exe)
        self.assertRc(r, 0)
        self.assertVerifies(exe)
        r = self.p11_sign("pkcs11:token=%s;object=ec256" % TOKEN, "--pkcs11-sessions", "0", exe)
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)

    # ------------------------------------------------------------- errors

    def test_wrong_pin(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        bad = self.path("bad-pin")
        with open(bad, "w") as f:
            f.write("999999")
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, "--pin", "file:" + bad, exe,
                          pin=None)
        self.assertFailsCleanly(r, 87, "wrong PIN for PKCS#11 token 'hs-test'", (exe, before))
        self.assertIn("CKR_PIN_INCORRECT", r.stderr.decode())
        self.assertNotIn("999999", r.stderr.decode() + r.stdout.decode())

    def test_wrong_pin_final_try_is_reported(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        bad = self.path("bad-pin")
        with open(bad, "w") as f:
            f.write("999999")
        _, env = self.shim_env("final-try")
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, "--pin", "file:" + bad, exe,
                          pin=None, module=self.token.shim, env=env)
        self.assertFailsCleanly(r, 87, "one try left before the PIN locks", (exe, before))

    def test_locked_pin(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        _, env = self.shim_env("pin-locked")
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, exe,
                          module=self.token.shim, env=env)
        self.assertFailsCleanly(r, 87, "the PIN is locked", (exe, before))
        self.assertIn("CKR_PIN_LOCKED", r.stderr.decode())

    def test_missing_object(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        r = self.p11_sign("pkcs11:token=%s;object=nope" % TOKEN, exe)
        self.assertFailsCleanly(r, 87, "no private key on PKCS#11 token 'hs-test' matches",
                                (exe, before))

    def test_missing_token(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        r = self.p11_sign("pkcs11:token=absent;object=rsa2048", exe)
        self.assertFailsCleanly(r, 87, "no PKCS#11 token matches the URI", (exe, before))

    def test_uri_matching_two_tokens(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        r = self.p11_sign("pkcs11:object=rsa2048", exe)
        self.assertFailsCleanly(r, 87, "matches 2 tokens", (exe, before))

    def test_missing_module(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, exe,
                          module=self.path("no-such-module.so"))
        self.assertFailsCleanly(r, 87, "cannot load PKCS#11 module", (exe, before))

    def test_not_a_pkcs11_module(self):
        exe = self.copy("hello64.exe")
        libz = next(p for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/libz.so.1")
                    if os.path.exists(p))
        before = hslib.sha256_file(exe)
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, exe, module=libz)
        self.assertFailsCleanly(r, 87, "not a PKCS#11 module", (exe, before))

    def test_mechanism_not_supported(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        _, env = self.shim_env("no-mech")
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, exe,
                          module=self.token.shim, env=env)
        self.assertFailsCleanly(r, 87, "cannot sign with CKM_RSA_PKCS", (exe, before))

    def test_token_removed_while_signing(self):
        files = [self.copy("hello64.exe", "a.exe"), self.copy("hello32.exe", "b.exe")]
        before = [(p, hslib.sha256_file(p)) for p in files]
        _, env = self.shim_env("removed")
        r = self.p11_sign("pkcs11:token=%s;object=ec256" % TOKEN, "--continue-on-error", *files,
                          module=self.token.shim, env=env)
        self.assertRc(r, 2)
        err = lines(r.stderr)
        self.assertEqual(len(err), 2, err)
        for line in err:
            self.assertIn("the token was removed", line)
            self.assertIn("CKR_DEVICE_REMOVED", line)
        for path, digest in before:
            self.assertEqual(hslib.sha256_file(path), digest)
        # No temporary output left behind (shim.log is the test's own).
        self.assertEqual(sorted(os.listdir(self.tmp)), ["a.exe", "b.exe", "shim.log"])

    def test_pin_in_uri_refused_unless_allowed(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        uri = "pkcs11:token=%s;object=rsa2048?pin-value=%s" % (TOKEN, PIN)
        r = self.p11_sign(uri, exe, pin=None)
        self.assertFailsCleanly(r, 87, "--allow-pin-in-uri", (exe, before))
        self.assertNotIn("pin-value=" + PIN, r.stderr.decode())
        r = self.p11_sign(uri, "--allow-pin-in-uri", exe, pin=None)
        self.assertRc(r, 0)
        self.assertVerifies(exe)

    def test_literal_pin_refused(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, "--pin", "secret-4321", exe,
                          pin=None)
        self.assertFailsCleanly(r, 87, "--pin", (exe, before))
        self.assertNotIn("secret-4321", r.stderr.decode())

    def test_no_pin_without_a_terminal(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        r = self.p11_sign("pkcs11:token=%s;object=rsa2048" % TOKEN, exe, pin=None,
                          stdin=b"")
        self.assertFailsCleanly(r, 87, "needs a PIN", (exe, before))

    def test_bad_uris(self):
        exe = self.copy("hello64.exe")
        before = hslib.sha256_file(exe)
        for uri, fragment in (("pkcs11:token=%s;bogus=1" % TOKEN, "unknown attribute 'bogus'"),
                              ("pkcs11:token=%zz", "bad %-escape"),
                              ("pkcs11:token=a;token=b", "token given twice"),
                              ("pkcs11:token=%s;type=cert" % TOKEN, "type=private"),
                              ("pkcs11:slot-id=x", "slot-id must be a number")):
            with self.subTest(uri=uri):
                r = self.p11_sign(uri, exe)
                self.assertFailsCleanly(r, 87, fragment, (exe, before))

    def test_pkcs11_options_need_a_pkcs11_key(self):
        exe = self.copy("hello64.exe")
        r = self.p11("sign", *hslib.key_args(), exe)
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)

    # --------------------------------------------------------------- list

    def test_list_shows_tokens_keys_certificates_and_usable_uris(self):
        r = self.p11("pkcs11", "list", "--uri", "pkcs11:token=" + TOKEN, "--pin",
                     "file:" + self.token.pin_file)
        self.assertRc(r, 0)
        out = r.stdout.decode()
        self.assertIn("Token '%s'" % TOKEN, out)
        self.assertNotIn("Token '%s'" % OTHER_TOKEN, out)
        for label, key_id, key_type, _ in KEYS:
            self.assertIn("Private key '%s': %s" % (label, {
                "rsa:2048": "RSA 2048", "rsa:3072": "RSA 3072", "EC:secp256r1": "EC prime256v1",
                "EC:secp384r1": "EC secp384r1"}[key_type]), out)
            self.assertIn("Certificate '%s': /CN=hsmsign token %s" % (label, label), out)
        uris = [line.strip() for line in out.splitlines()
                if line.strip().startswith("pkcs11:") and "object=ec384;type=private" in line]
        self.assertEqual(len(uris), 1, out)
        self.assertIn("id=%04", uris[0])
        exe = self.copy("hello64.exe")
        self.assertRc(self.p11_sign(uris[0], "-fd", "sha384", exe), 0)
        self.assertVerifies(exe, "sha384")

    def test_list_without_pin_lists_every_token(self):
        r = self.p11("pkcs11", "list")
        self.assertRc(r, 0)
        out = r.stdout.decode()
        self.assertIn("Token '%s'" % TOKEN, out)
        self.assertIn("Token '%s'" % OTHER_TOKEN, out)
        self.assertIn("Certificate 'rsa2048'", out)  # public objects show
        self.assertNotIn("Private key", out)         # SoftHSM hides them

    def test_list_pin_needs_one_token(self):
        r = self.p11("pkcs11", "list", "--pin", "file:" + self.token.pin_file)
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertIn("a PIN logs in to one token, but 2 match", r.stderr.decode())


if __name__ == "__main__":
    unittest.main()
