"""Signing PE files: every fixture verifies with hsmsign AND independent
verifiers (osslsigncode, sbverify, a pure-Python digest), plus the sign
options, key sources, determinism and the `digest` command."""
import hashlib
import os
import stat

from hslib import (DIGESTS, GOLDEN_DIR, KEYS, OID_HEX, PE_DIR, PE_FIXTURES,
                   UNSIGNED_PE, HsTestCase, PeLayout, authenticode_digest,
                   cert_table_entries, hsmsign, lines, opus_info,
                   osslsigncode_verify, p12_password, pe_checksum_ok,
                   pesign_hash, pki, read, sbverify, sha256_file, sign,
                   signature_count, signed_data, signer_info, spc_digest,
                   verify)

GOLDEN = os.path.join(GOLDEN_DIR, "hello64-rsa2048-sha256.exe")


def matrix():
    """Every PE fixture x digest x key: 160 signatures, ~10 s (~30 s with
    ASan). Trim here if a slower key provider ever makes this too long."""
    for fixture in PE_FIXTURES:
        for digest in DIGESTS:
            for key in KEYS:
                yield fixture, digest, key


class TestSignMatrix(HsTestCase):

    def check_signed(self, path, digest, key):
        r = verify(path)
        self.assertRc(r, 0, "hsmsign verify")
        self.assertTrue(lines(r.stdout)[0].startswith(path + ": OK"),
                        r.stdout)
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, "osslsigncode verify:\n" + out)
        if digest == "sha256":  # sbverify: SHA-256 only, RSA and ECDSA ok
            ok, out = sbverify(path)
            self.assertTrue(ok, "sbverify:\n" + out)
        data = read(path)
        self.check_profile(data, digest)
        # independent structure checks: one signature, digest of the right
        # algorithm over the right bytes, messageDigest per §2.3, checksum
        self.assertEqual(signature_count(data), 1)
        oid, file_digest, spc = spc_digest(data)
        self.assertEqual(oid, OID_HEX[digest])
        self.assertEqual(file_digest.hex(), authenticode_digest(data, digest))
        md = [a["values"][0].native for a in signer_info(data)["signed_attrs"]
              if a["type"].native == "message_digest"]
        self.assertEqual(md, [hashlib.new(digest, spc).digest()])
        self.assertTrue(pe_checksum_ok(data), "stale PE CheckSum")
        layout = PeLayout(data)
        self.assertEqual(layout.cert_off % 8, 0)
        self.assertEqual(layout.cert_off + layout.cert_size, len(data))

    def check_profile(self, data, digest):
        """The PKCS#7 profile of authenticode.md §2 and §10.1-3."""
        (_, der), = cert_table_entries(data)
        sd = signed_data(der)
        self.assertEqual(sd["version"].native, "v1")
        self.assertEqual([a["algorithm"].native for a in
                          sd["digest_algorithms"]], [digest])
        si, = sd["signer_infos"]
        self.assertEqual(si["version"].native, "v1")
        self.assertEqual(si["sid"].name, "issuer_and_serial_number")
        self.assertEqual(si["digest_algorithm"]["algorithm"].native, digest)
        attrs = [a.dump() for a in si["signed_attrs"]]
        self.assertEqual(attrs, sorted(attrs), "signed attributes not DER")
        certs = [c.dump() for c in sd["certificates"]]
        self.assertEqual(certs, sorted(set(certs)),
                         "certificates not DER-sorted/unique (§2.5)")

    def test_matrix(self):
        for fixture, digest, key in matrix():
            with self.subTest(fixture=fixture, digest=digest, key=key):
                path = self.copy(fixture, "%s-%s-%s" % (digest, key, fixture))
                unsigned = authenticode_digest(read(path), digest)
                self.assertRc(sign(path, key, digest), 0, "sign")
                self.check_signed(path, digest, key)
                if fixture in UNSIGNED_PE:  # signing must not change content
                    self.assertEqual(authenticode_digest(read(path), digest),
                                     unsigned)


class TestSignOptions(HsTestCase):

    def test_in_place_keeps_mode(self):
        path = self.copy("hello64.exe")
        os.chmod(path, 0o751)
        self.assertRc(sign(path), 0)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o751)
        self.assertRc(verify(path), 0)

    def test_symlink_signs_target_and_keeps_link(self):
        target = self.copy("hello64.exe", "target.exe")
        link = self.path("link.exe")
        os.symlink("target.exe", link)
        self.assertRc(sign(link), 0)
        self.assertTrue(os.path.islink(link), "the link must stay a link")
        self.assertRc(verify(target), 0)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["link.exe", "target.exe"])

    def test_warns_when_certificate_cannot_sign_code(self):
        for leaf, word in (("leaf-expired", "expired"), ("leaf-noeku", "codeSigning")):
            with self.subTest(leaf=leaf):
                path = self.copy("hello64.exe", leaf + ".exe")
                res = sign(path, leaf)
                self.assertRc(res, 0)
                self.assertIn(word, res.stderr.decode())
                self.assertIn("warning", res.stderr.decode())

    def test_output_leaves_input_unchanged(self):
        src = self.copy("overlay32.exe")
        before = sha256_file(src)
        out = self.path("signed.exe")
        self.assertRc(sign(src, "leaf-rsa2048", "sha256", "-o", out), 0)
        self.assertEqual(sha256_file(src), before)
        self.assertRc(verify(out), 0)
        self.assertRc(verify(src), 10, "input must still be unsigned")
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         ["overlay32.exe", "signed.exe"])

    def test_resign_replaces_foreign_signature(self):
        path = self.copy("presigned64.exe")  # signed by osslsigncode
        self.assertRc(sign(path, "leaf-ec256", "sha384"), 0)
        r = verify(path)
        self.assertRc(r, 0)
        self.assertIn("leaf-ec256", r.stdout.decode())
        self.assertNotIn("leaf-rsa2048", r.stdout.decode())
        data = read(path)
        self.assertEqual(signature_count(data), 1)
        # the new table starts where the old one did (= unsigned size)
        self.assertEqual(PeLayout(data).cert_off,
                         os.path.getsize(os.path.join(PE_DIR, "hello64.exe")))
        ok, out = osslsigncode_verify(path)
        self.assertTrue(ok, out)

    def test_resign_own_signature_is_idempotent(self):
        path = self.copy("odd64.exe")
        self.assertRc(sign(path), 0)
        first = read(path)
        self.assertRc(sign(path), 0)
        self.assertEqual(read(path), first,
                         "re-signing with the same key must replace, not grow")

    def test_skip_signed(self):
        path = self.copy("hello32.exe")
        self.assertRc(sign(path), 0)
        before = sha256_file(path)
        self.assertRc(sign(path, "leaf-ec384", "sha512", "-s"), 0)
        self.assertEqual(sha256_file(path), before)
        unsigned = self.copy("lib32.dll")
        self.assertRc(sign(unsigned, "leaf-ec384", "sha512", "--skip-signed"),
                      0)
        self.assertRc(verify(unsigned), 0, "-s must still sign unsigned files")

    def test_description_and_url(self):
        text, url = "hsmsign Test App \u2013 Zo\u00eb", "https://example.test/hs"
        for opts in (["-d", text, "-du", url],
                     ["--description", text, "--description-url", url]):
            with self.subTest(opts=opts[0]):
                path = self.copy("hello64.exe", "d%s.exe" % opts[0])
                self.assertRc(sign(path, "leaf-rsa2048", "sha256", *opts), 0)
                # programName as the unicode (BMPString, UTF-16BE) choice
                self.assertEqual(opus_info(read(path)), (text, "unicode", url))
                self.assertIn(text.encode("utf-16-be"), read(path))
                ok, out = osslsigncode_verify(path)
                self.assertTrue(ok, out)
                self.assertIn("URL description: " + url, out)
                self.assertIn("Text description: ", out)

    def test_no_description_no_url(self):
        path = self.signed_copy()
        info = opus_info(read(path))
        self.assertIn(info, (None, (None, None, None)))

    def test_page_hashes(self):
        for fixture in UNSIGNED_PE:
            for digest in ("sha1", "sha256"):
                for opt in ("-ph", "--page-hashes"):
                    with self.subTest(fixture=fixture, digest=digest, opt=opt):
                        path = self.copy(fixture, digest + opt + fixture)
                        self.assertRc(sign(path, "leaf-rsa2048", digest, opt),
                                      0)
                        r = verify(path)
                        self.assertRc(r, 0)
                        self.assertIn("page hashes: ok", r.stdout.decode())
                        ok, out = osslsigncode_verify(path)
                        self.assertTrue(ok, out)
                        self.assertIn("Page hash algorithm", out)
                        self.assertNotIn("MISMATCH", out)

    def test_no_page_hashes_by_default(self):
        path = self.signed_copy()
        r = verify(path)
        self.assertIn("page hashes: none", r.stdout.decode())
        self.assertNotIn("Page hash algorithm",
                         osslsigncode_verify(path)[1])

    def test_several_files_one_call(self):
        a, b = self.copy("hello32.exe"), self.copy("lib64.dll")
        r = hsmsign("sign", "--key", pki("leaf-ec256.key"), "--cert",
                    pki("leaf-ec256-chain.pem"), a, b)
        self.assertRc(r, 0)
        self.assertRc(hsmsign("verify", "--ca-file", pki("root.pem"), a, b), 0)


class TestKeySources(HsTestCase):

    def pfx_sign(self, secret, **kw):
        path = self.copy("hello64.exe")
        r = hsmsign("sign", "--pfx", pki("leaf-rsa2048.p12"), "--pfx-pass",
                    secret, "-fd", "sha256", path, **kw)
        self.assertRc(r, 0)
        self.assertRc(verify(path), 0)
        return path

    def test_pfx_password_file(self):
        self.pfx_sign("file:" + pki("leaf-rsa2048.p12.pass"))

    def test_pfx_password_env(self):
        self.pfx_sign("env:HS_TEST_PFX_PASS",
                      env={"HS_TEST_PFX_PASS": p12_password()})

    def test_pfx_password_stdin(self):
        self.pfx_sign("stdin", stdin=p12_password().encode() + b"\n")

    def test_pfx_equals_pem(self):
        """Same key and chain from PKCS#12 or PEM: identical signature."""
        via_pfx = self.pfx_sign("file:" + pki("leaf-rsa2048.p12.pass"))
        via_pem = self.copy("hello64.exe", "pem.exe")
        self.assertRc(sign(via_pem), 0)
        self.assertEqual(read(via_pfx), read(via_pem))

    def test_encrypted_pem_key(self):
        path = self.copy("hello64.exe")
        r = hsmsign("sign", "--key", pki("leaf-rsa2048-enc.key"), "--cert",
                    pki("leaf-rsa2048-chain.pem"), "--key-pass",
                    "env:HS_TEST_KEY_PASS", path,
                    env={"HS_TEST_KEY_PASS": p12_password()})
        self.assertRc(r, 0)
        self.assertRc(verify(path), 0)


class TestDeterminism(HsTestCase):

    def test_golden(self):
        a = self.copy("hello64.exe", "a.exe")
        b = self.copy("hello64.exe", "b.exe")
        self.assertRc(sign(a, "leaf-rsa2048", "sha256"), 0)
        self.assertRc(sign(b, "leaf-rsa2048", "sha256"), 0)
        self.assertEqual(read(a), read(b), "RSA signing is not deterministic")
        self.assertTrue(os.path.exists(GOLDEN),
                        "missing %s: run scripts/gen-fixtures --golden "
                        "build/hsmsign" % GOLDEN)
        self.assertEqual(read(a), read(GOLDEN),
                         "output differs from the golden file")


class TestDigestCommand(HsTestCase):

    def digest(self, path, alg=None):
        args = ["digest"] + (["-fd", alg] if alg else []) + [path]
        r = hsmsign(*args)
        self.assertRc(r, 0)
        out = r.stdout.decode().split()
        self.assertTrue(out, "digest printed nothing")
        self.assertRegex(out[0], "^[0-9a-f]+$")
        return out[0]

    def test_default_is_sha256(self):
        path = os.path.join(PE_DIR, "hello64.exe")
        self.assertEqual(self.digest(path),
                         authenticode_digest(read(path), "sha256"))

    def test_matches_pesign(self):
        """pesign agrees only for sizes that are a multiple of 8 (it does not
        add the pad signers hash, test-oracles.md)."""
        for fixture in PE_FIXTURES:
            path = self.copy(fixture)
            if os.path.getsize(path) % 8:
                continue
            for alg in ("sha256", "sha1"):
                with self.subTest(fixture=fixture, alg=alg):
                    self.assertEqual(self.digest(path, alg),
                                     pesign_hash(path, alg))

    def test_matches_python(self):
        for fixture in PE_FIXTURES:
            path = self.copy(fixture)
            for alg in DIGESTS:
                with self.subTest(fixture=fixture, alg=alg):
                    self.assertEqual(self.digest(path, alg),
                                     authenticode_digest(read(path), alg))

    def test_signed_odd_sizes_match_pesign(self):
        """Once signed, the pad is physically in the file, so pesign agrees
        for odd-sized inputs too."""
        for fixture in ("odd64.exe", "overlay32.exe"):
            with self.subTest(fixture=fixture):
                path = self.signed_copy(fixture, "leaf-rsa2048", "sha1")
                for alg in ("sha256", "sha1"):
                    self.assertEqual(self.digest(path, alg),
                                     pesign_hash(path, alg))

    def test_signed_equals_unsigned(self):
        for fixture in ("odd64.exe", "overlay32.exe", "symtab64.exe"):
            with self.subTest(fixture=fixture):
                path = self.copy(fixture)
                before = self.digest(path, "sha384")
                self.assertRc(sign(path), 0)
                self.assertEqual(self.digest(path, "sha384"), before)
