"""RFC 3161 and legacy Authenticode timestamps against the local TSA
(tests/servers/tsa.py): every fault mode fails (input untouched) or fails
over, timestamped files verify with hsmsign and osslsigncode -TSA-CAfile,
an expired signer is valid with a timestamp taken while it was valid, and
re-timestamping keeps the signature value."""
import datetime
import json
import os
import sys
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hslib import (HERE, HsTestCase, ROOT_CA, hsmsign, key_args, read, run,
                   sha256_file, sign, signer_info)

sys.path.insert(0, os.path.join(HERE, "..", "servers"))
from tsa_client import Tsa  # noqa: E402

OID_RFC3161 = "1.3.6.1.4.1.311.3.3.1"
OID_COUNTER_SIGNATURE = "1.2.840.113549.1.9.6"
ENV = {"HSMSIGN_HTTP_BACKOFF_MS": "1"}
BACKDATED = "2020-06-01T00:00:00Z"  # inside the short-lived PKI below


def unsigned_attr_types(data):
    si = signer_info(data)
    if not si["unsigned_attrs"]:
        return []
    return [a["type"].dotted for a in si["unsigned_attrs"]]


def signature_value(data):
    return signer_info(data)["signature"].native


def make_short_lived_pki(dirname):
    """Root/leaf valid only in 2020 (with a codeSigning EKU), so that a
    signature can only verify through a timestamp from 2020."""
    start = datetime.datetime(2019, 12, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc)
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rname = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ts-test root")])
    lname = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ts-test 2020 signer")])
    root = (x509.CertificateBuilder().subject_name(rname).issuer_name(rname)
            .public_key(root_key.public_key()).serial_number(1)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(True, None), critical=True)
            .sign(root_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(lname).issuer_name(rname)
            .public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {n: os.path.join(dirname, n) for n in ("root.pem", "leaf.pem", "leaf.key")}
    with open(paths["root.pem"], "wb") as f:
        f.write(root.public_bytes(pem))
    with open(paths["leaf.pem"], "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(paths["leaf.key"], "wb") as f:
        f.write(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


class TimestampTest(HsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tsa = Tsa().start()

    @classmethod
    def tearDownClass(cls):
        cls.tsa.stop()

    def sign_ts(self, path, *extra, leaf="leaf-rsa2048"):
        return sign(path, leaf, "sha256", *extra, env=ENV)

    def verify_ts(self, path, *extra, tsa_root=None):
        return hsmsign("verify", "--ca-file", ROOT_CA, "--tsa-ca-file",
                       tsa_root or self.tsa.root, *extra, path)

    def osslsigncode_ts(self, path, ca=ROOT_CA):
        r = run(["osslsigncode", "verify", "-CAfile", ca, "-TSA-CAfile",
                 self.tsa.root, "-in", path])
        return (r.stdout + r.stderr).decode(errors="replace")

    def assert_timestamped_ok(self, path, ca=ROOT_CA, kind=OID_RFC3161):
        data = read(path)
        self.assertIn(kind, unsigned_attr_types(data))
        out = self.osslsigncode_ts(path, ca)
        # osslsigncode's exit code ignores timestamp failures: read the line.
        self.assertIn("Timestamp Server Signature verification: ok", out)
        self.assertIn("Signature verification: ok", out)
        r = hsmsign("verify", "--ca-file", ca, "--tsa-ca-file", self.tsa.root,
                    "--json", path)
        self.assertRc(r, 0)
        rep = json.loads(r.stdout)
        self.assertTrue(rep["valid"])
        ts = rep["signatures"][0]["timestamp"]
        self.assertEqual(ts["kind"], "rfc3161" if kind == OID_RFC3161 else "authenticode")
        self.assertIn("hsmsign Test TSA", ts["tsa"])
        return ts

    def test_rfc3161_signs_and_verifies(self):
        path = self.copy("hello64.exe")
        r = self.sign_ts(path, "-tr", self.tsa.url("ok"))
        self.assertRc(r, 0)
        self.assertNotIn(b"will not be timestamped", r.stderr)
        ts = self.assert_timestamped_ok(path)
        self.assertEqual(ts["digest"], "sha256")
        # The imprint the TSA saw is the hash of the signature value bytes.
        entry = [e for e in self.tsa.log() if e.get("imprint")][-1]
        import hashlib
        self.assertEqual(entry["imprint"],
                         hashlib.sha256(signature_value(read(path))).hexdigest())
        self.assertTrue(entry["cert_req"])
        self.assertIsNotNone(entry["nonce"])

    def test_every_format_is_timestamped(self):
        """Timestamps are format-independent: sign with -tr, then re-timestamp
        with the keyless command; osslsigncode checks both (it reads MSI, CAB,
        catalogs and PowerShell)."""
        for fixture in ("msi/small.msi", "cab/stored.cab", "cat/files.cat",
                        "scripts/ps1-utf8-crlf.ps1"):
            with self.subTest(fixture=fixture):
                path = self.copy(fixture)
                self.assertRc(self.sign_ts(path, "-tr", self.tsa.url("ok")), 0)
                self.assert_format_timestamped(path)
                r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), path, env=ENV)
                self.assertRc(r, 0)
                self.assert_format_timestamped(path)

    def assert_format_timestamped(self, path):
        out = self.osslsigncode_ts(path)
        self.assertIn("Timestamp Server Signature verification: ok", out)
        self.assertIn("Signature verification: ok", out)
        r = hsmsign("verify", "--ca-file", ROOT_CA, "--tsa-ca-file", self.tsa.root,
                    "--json", path)
        self.assertRc(r, 0)
        rep = json.loads(r.stdout)
        self.assertEqual(rep["signatures"][0]["timestamp"]["kind"], "rfc3161")

    def test_timestamp_digest_sha384(self):
        path = self.copy("hello32.exe")
        self.assertRc(self.sign_ts(path, "-tr", self.tsa.url("ok"), "-td", "sha384"), 0)
        self.assertEqual(self.assert_timestamped_ok(path)["digest"], "sha384")

    def test_fault_modes_fail_and_leave_input(self):
        cases = {"404": "HTTP 404", "429": "429", "500": "HTTP 500",
                 "502": "HTTP 502", "bad-imprint": "imprint does not match",
                 "bad-nonce": "nonce does not match",
                 "bad-signature": "signature does not verify",
                 "bad-status": "rejected", "garbage": "not an RFC 3161",
                 "no-certs": "no certificates", "legacy-only": "HTTP 400"}
        for mode, reason in cases.items():
            with self.subTest(mode=mode):
                path = self.copy("hello64.exe", mode + ".exe")
                before = sha256_file(path)
                r = self.sign_ts(path, "-tr", self.tsa.url(mode),
                                 "--timestamp-retries", "1")
                self.assertRc(r, 2)
                self.assertOneErrorLine(r)
                err = r.stderr.decode()
                self.assertIn(reason, err)
                self.assertIn(self.tsa.url(mode), err) if mode not in ("429",) \
                    else self.assertIn("127.0.0.1", err)
                self.assertEqual(sha256_file(path), before)

    def test_slow_server_times_out(self):
        path = self.copy("hello64.exe")
        before = sha256_file(path)
        r = self.sign_ts(path, "-tr", self.tsa.url("slow", delay="3"),
                         "--timestamp-timeout", "1", "--timestamp-retries", "0")
        self.assertRc(r, 2)
        self.assertIn("timestamping failed", r.stderr.decode())
        self.assertEqual(sha256_file(path), before)

    def test_failover_in_order(self):
        path = self.copy("hello64.exe")
        start = len(self.tsa.log())
        urls = [self.tsa.url("500"), self.tsa.url("bad-nonce"), self.tsa.url("ok")]
        r = self.sign_ts(path, "-tr", ",".join(urls[:2]), "-tr", urls[2],
                         "--timestamp-retries", "1")
        self.assertRc(r, 0)
        self.assert_timestamped_ok(path)
        modes = [e["mode"] for e in self.tsa.log()[start:]]
        self.assertEqual(modes, ["500", "500", "bad-nonce", "ok"])
        self.assertIn(b"trying the next timestamp server", r.stderr)

    def test_retries_recover_a_flaky_server(self):
        path = self.copy("hello64.exe")
        url = self.tsa.url("flaky", fail="2", id=self.id())
        r = self.sign_ts(path, "-tr", url, "--timestamp-retries", "2")
        self.assertRc(r, 0)
        self.assert_timestamped_ok(path)
        hits = [e for e in self.tsa.log() if e["mode"] == "flaky"]
        self.assertEqual([e["status"] for e in hits][-3:], [503, 503, 200])

    def test_timestamp_optional_signs_without(self):
        path = self.copy("hello64.exe")
        r = self.sign_ts(path, "-tr", self.tsa.url("500"), "--timestamp-optional",
                         "--timestamp-retries", "1")
        self.assertRc(r, 0)
        self.assertIn(b"without a timestamp", r.stderr)
        self.assertEqual(unsigned_attr_types(read(path)), [])
        self.assertRc(self.verify_ts(path), 0)

    def test_warning_without_timestamp(self):
        path = self.copy("hello64.exe")
        r = self.sign_ts(path)
        self.assertRc(r, 0)
        self.assertIn(b"Signatures will not be timestamped. Signatures will become "
                      b"invalid when the signing certificate expires.", r.stderr)

    def test_legacy_authenticode_timestamp(self):
        path = self.copy("hello32.exe")
        r = self.sign_ts(path, "-t", self.tsa.url("ok"))
        self.assertRc(r, 0)
        self.assertIn(b"compatibility", r.stderr)
        self.assert_timestamped_ok(path, kind=OID_COUNTER_SIGNATURE)
        bad = self.copy("hello32.exe", "bad.exe")
        r = self.sign_ts(bad, "-t", self.tsa.url("rfc3161-only"))
        self.assertRc(r, 2)
        self.assertIn("HTTP 400", r.stderr.decode())
        r = self.sign_ts(bad, "-t", self.tsa.url("bad-signature"))
        self.assertRc(r, 2)
        self.assertIn("does not verify", r.stderr.decode())

    def test_expired_signer_valid_with_timestamp_from_then(self):
        pki = make_short_lived_pki(self.tmp)
        args = ["--key", pki["leaf.key"], "--cert", pki["leaf.pem"]]
        stamped = self.copy("hello64.exe", "stamped.exe")
        self.assertRc(hsmsign("sign", *args, "-tr", self.tsa.url("ok", time=BACKDATED),
                              stamped, env=ENV), 0)
        plain = self.copy("hello64.exe", "plain.exe")
        self.assertRc(hsmsign("sign", *args, plain, env=ENV), 0)
        late = self.copy("hello64.exe", "late.exe")
        self.assertRc(hsmsign("sign", *args, "-tr", self.tsa.url("ok"), late, env=ENV), 0)
        r = hsmsign("verify", "--ca-file", pki["root.pem"], "--tsa-ca-file",
                    self.tsa.root, "-v", stamped)
        self.assertRc(r, 0)
        self.assertIn(b"timestamp: 2020-06-01T00:00:00Z", r.stdout)
        out = self.osslsigncode_ts(stamped, pki["root.pem"])
        self.assertIn("Timestamp Server Signature verification: ok", out)
        self.assertIn("Signature verification: ok", out)
        for path in (plain, late):
            r = hsmsign("verify", "--ca-file", pki["root.pem"], "--tsa-ca-file",
                        self.tsa.root, path)
            self.assertRc(r, 15, path)

    def test_untrusted_or_broken_timestamp_fails_verify(self):
        path = self.copy("hello64.exe")
        self.assertRc(self.sign_ts(path, "-tr", self.tsa.url("ok")), 0)
        r = self.verify_ts(path, tsa_root=ROOT_CA)  # not the TSA's root
        self.assertRc(r, 17)
        self.assertIn(b"bad timestamp", r.stdout)

    def test_retimestamp_keeps_signature(self):
        path = self.copy("hello64.exe")
        self.assertRc(self.sign_ts(path, "-q"), 0)
        sig = signature_value(read(path))
        r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), path, env=ENV)
        self.assertRc(r, 0)
        self.assertEqual(signature_value(read(path)), sig)
        self.assert_timestamped_ok(path)
        r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), "-td", "sha512", path, env=ENV)
        self.assertRc(r, 0)
        self.assertEqual(signature_value(read(path)), sig)
        self.assertEqual(unsigned_attr_types(read(path)), [OID_RFC3161])
        self.assertEqual(self.assert_timestamped_ok(path)["digest"], "sha512")
        before = sha256_file(path)
        r = hsmsign("timestamp", "-tr", self.tsa.url("bad-imprint"), path, env=ENV)
        self.assertRc(r, 2)
        self.assertOneErrorLine(r)
        self.assertEqual(sha256_file(path), before)

    def test_timestamp_command_errors(self):
        unsigned = self.copy("hello64.exe")
        r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), unsigned)
        self.assertRc(r, 10)
        r = hsmsign("timestamp", unsigned)
        self.assertRc(r, 87)
        path = self.copy("hello32.exe")
        self.assertRc(self.sign_ts(path, "-q"), 0)
        r = hsmsign("timestamp", "-tr", self.tsa.url("ok"), "--index", "1", path)
        self.assertRc(r, 2)
        self.assertIn(b"no signature with index 1", r.stderr)


if __name__ == "__main__":
    unittest.main()
