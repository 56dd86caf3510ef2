"""AWS KMS provider end to end against tests/servers/aws_emu.py: every key
type, every credential source, the errors and throttling. Each signature
is checked by hsmsign verify, osslsigncode and (SHA-256) sbverify; the
emulator checks SigV4 on every KMS call independently of the product."""
import os
import unittest

from cloudlib import EmulatorCase
from hslib import HSMSIGN, ROOT_CA, osslsigncode_verify, pki, read, run
from aws_emu import AwsEmulator  # via cloudlib

REGION = "us-east-2"
ACCOUNT = "111122223333"
AKID = "AKIAEMULATOREXAMPLE1"
SECRET = "emulator/secret/KEY+example0000000000000"
ROLE = "arn:aws:iam::%s:role/codesign" % ACCOUNT
KEYS = {
    "rsa2048": "11111111-2222-3333-4444-000000002048",
    "rsa3072": "11111111-2222-3333-4444-000000003072",
    "ec256": "11111111-2222-3333-4444-000000000256",
    "ec384": "11111111-2222-3333-4444-000000000384",
}


def emu_config():
    keys = [{"id": kid, "alias": "alias/codesign-" + name,
             "key_file": pki("leaf-%s.key" % name)}
            for name, kid in KEYS.items()]
    keys.append({"id": "11111111-2222-3333-4444-00000000dead",
                 "alias": "alias/disabled", "state": "Disabled",
                 "key_file": pki("leaf-rsa2048.key")})
    return {"region": REGION, "account": ACCOUNT,
            "credentials": {AKID: SECRET}, "keys": keys, "role_arn": ROLE,
            "web_identity_tokens": ["eks-projected-token"],
            "github_request_token": "gh-request-bearer",
            "ecs_token": "ecs-auth-token"}


class AwsCase(EmulatorCase):
    emulator_class = AwsEmulator
    emu_config = staticmethod(emu_config)

    def env(self, creds=True, **extra):
        """A clean AWS environment: nothing from the real machine."""
        env = {k: "" for k in os.environ if k.startswith(("AWS_", "ACTIONS_"))}
        env.update({"HOME": self.tmp, "AWS_ENDPOINT_URL_KMS": self.emu.url,
                    "AWS_ENDPOINT_URL_STS": self.emu.url + "/sts/",
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "HSMSIGN_HTTP_BACKOFF_MS": "5"})
        if creds:
            env.update({"AWS_ACCESS_KEY_ID": AKID,
                        "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_REGION": REGION})
        env.update(extra)
        return env

    def sign(self, path, *args, key="alias/codesign-rsa2048",
             leaf="leaf-rsa2048", digest="sha256", env=None):
        return run([HSMSIGN, "sign", "--aws-kms-key", key, "--cert",
                    pki(leaf + "-chain.pem"), "-fd", digest, *args, path],
                   env=env if env is not None else self.env())

    def signed_with(self, env, *args):
        path = self.copy("hello64.exe")
        r = self.sign(path, *args, env=env)
        self.assertRc(r, 0)
        self.assertVerifies(path)
        signs = self.emu.calls("Sign", 200)
        self.assertEqual(len(signs), 1)
        return signs[0]["access_key"]


class TestKeys(AwsCase):
    def test_rsa_alias_two_files_one_public_key_call(self):
        a, b = self.copy("hello64.exe"), self.copy("lib32.dll")
        r = run([HSMSIGN, "sign", "--aws-kms-key", "alias/codesign-rsa2048",
                 "--cert", pki("leaf-rsa2048-chain.pem"), a, b],
                env=self.env())
        self.assertRc(r, 0)
        for p in (a, b):
            self.assertVerifies(p)
        self.assertEqual(len(self.emu.calls("GetPublicKey", 200)), 1)
        self.assertEqual(len(self.emu.calls("Sign", 200)), 2)

    def test_key_types_and_digests(self):
        cases = [("ec256", "sha256", KEYS["ec256"]),
                 ("ec384", "sha384", "alias/codesign-ec384"),
                 ("rsa3072", "sha512", "arn:aws:kms:%s:%s:key/%s" % (
                     REGION, ACCOUNT, KEYS["rsa3072"])),
                 ("rsa2048", "sha384", KEYS["rsa2048"])]
        for name, digest, key in cases:
            with self.subTest(key=name, digest=digest):
                path = self.copy("hello32.exe", "%s-%s.exe" % (name, digest))
                r = self.sign(path, key=key, leaf="leaf-" + name,
                              digest=digest)
                self.assertRc(r, 0)
                self.assertVerifies(path, sha256=digest == "sha256")

    def test_bare_name_is_an_alias(self):
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path, key="codesign-rsa2048"), 0)
        self.assertVerifies(path)

    def test_region_comes_from_the_arn(self):
        path = self.copy("hello64.exe")
        env = self.env()
        env["AWS_REGION"] = ""
        r = self.sign(path, key="arn:aws:kms:%s:%s:alias/codesign-rsa2048" % (
            REGION, ACCOUNT), env=env)
        self.assertRc(r, 0)
        self.assertVerifies(path)

    def test_msi_cab_and_script_formats(self):
        for src in ("msi/small.msi", "cab/stored.cab",
                    "scripts/ps1-utf8-crlf.ps1"):
            with self.subTest(src=src):
                path = self.copy(src)
                self.assertRc(self.sign(path), 0)
                self.assertRc(run([HSMSIGN, "verify", "--ca-file", ROOT_CA,
                                   path]), 0)
                if not src.endswith(".ps1"):  # osslsigncode: no scripts
                    ok, out = osslsigncode_verify(path)
                    self.assertTrue(ok, out)


class TestCredentials(AwsCase):
    def test_environment(self):
        self.assertEqual(self.signed_with(self.env()), AKID)

    def test_shared_credentials_file_and_profile(self):
        os.makedirs(os.path.join(self.tmp, ".aws"))
        with open(os.path.join(self.tmp, ".aws", "credentials"), "w") as f:
            f.write("[default]\naws_access_key_id = WRONG\n"
                    "aws_secret_access_key = wrong\n\n[codesign]\n"
                    "aws_access_key_id = %s\naws_secret_access_key = %s\n"
                    % (AKID, SECRET))
        with open(os.path.join(self.tmp, ".aws", "config"), "w") as f:
            f.write("[profile codesign]\nregion = %s\n" % REGION)
        env = self.env(creds=False)
        self.assertEqual(self.signed_with(env, "--aws-profile", "codesign"),
                         AKID)
        self.emu.state.log.clear()
        env["AWS_PROFILE"] = "codesign"
        self.assertEqual(self.signed_with(env), AKID)

    def test_config_file_profile_with_keys(self):
        cfg = os.path.join(self.tmp, "aws-config")
        with open(cfg, "w") as f:
            f.write("[default]\nregion = %s\naws_access_key_id = %s\n"
                    "aws_secret_access_key = %s\n" % (REGION, AKID, SECRET))
        env = self.env(creds=False, AWS_CONFIG_FILE=cfg,
                       AWS_SHARED_CREDENTIALS_FILE=self.path("none"))
        self.assertEqual(self.signed_with(env), AKID)

    def test_web_identity_token_file(self):
        tok = self.path("token")
        with open(tok, "w") as f:
            f.write("eks-projected-token\n")
        env = self.env(creds=False, AWS_REGION=REGION, AWS_ROLE_ARN=ROLE,
                       AWS_WEB_IDENTITY_TOKEN_FILE=tok)
        self.assertTrue(self.signed_with(env).startswith("ASIA"))
        self.assertEqual(len(self.emu.calls("AssumeRoleWithWebIdentity",
                                            200)), 1)

    def test_github_actions_oidc(self):
        env = self.env(creds=False, AWS_REGION=REGION, AWS_ROLE_ARN=ROLE,
                       ACTIONS_ID_TOKEN_REQUEST_URL=self.emu.url +
                       "/github/token?api-version=2.0",
                       ACTIONS_ID_TOKEN_REQUEST_TOKEN="gh-request-bearer")
        self.assertTrue(self.signed_with(env).startswith("ASIA"))
        self.assertEqual(len(self.emu.calls("github", 200)), 1)

    def test_wrong_role_is_an_sts_error(self):
        tok = self.path("token")
        with open(tok, "w") as f:
            f.write("eks-projected-token")
        path = self.copy("hello64.exe")
        before = read(path)
        r = self.sign(path, env=self.env(
            creds=False, AWS_REGION=REGION, AWS_WEB_IDENTITY_TOKEN_FILE=tok,
            AWS_ROLE_ARN="arn:aws:iam::1:role/other"))
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertIn("AccessDenied", r.stderr.decode())
        self.assertEqual(read(path), before)

    def test_ecs_container_endpoint(self):
        env = self.env(creds=False, AWS_REGION=REGION,
                       AWS_CONTAINER_CREDENTIALS_FULL_URI=self.emu.url +
                       "/ecs/creds",
                       AWS_CONTAINER_AUTHORIZATION_TOKEN="ecs-auth-token")
        self.assertTrue(self.signed_with(env).startswith("ASIA"))

    def test_imds_v2(self):
        env = self.env(creds=False, AWS_REGION=REGION,
                       AWS_EC2_METADATA_DISABLED="",
                       AWS_EC2_METADATA_SERVICE_ENDPOINT=self.emu.url)
        self.assertTrue(self.signed_with(env).startswith("ASIA"))
        self.assertEqual(len(self.emu.calls("imds-token", 200)), 1)

    def test_expiring_credentials_are_renewed(self):
        # Credentials valid for less than the 5-minute margin are fetched
        # again before each KMS call: GetPublicKey + 2 Sign = 3 fetches.
        self.emu.knobs(short_expiry=True)
        env = self.env(creds=False, AWS_REGION=REGION,
                       AWS_EC2_METADATA_DISABLED="",
                       AWS_EC2_METADATA_SERVICE_ENDPOINT=self.emu.url)
        a, b = self.copy("hello64.exe"), self.copy("lib64.dll")
        r = run([HSMSIGN, "sign", "--aws-kms-key", "alias/codesign-rsa2048",
                 "--cert", pki("leaf-rsa2048-chain.pem"), a, b], env=env)
        self.assertRc(r, 0)
        self.assertEqual(len(self.emu.calls("imds-token", 200)), 3)
        keys = {c["access_key"] for c in self.emu.calls(status=200)
                if c["target"] in ("Sign", "GetPublicKey")}
        self.assertEqual(len(keys), 3)

    def test_nothing_configured_fails_clearly(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, env=self.env(creds=False, AWS_REGION=REGION))
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertIn("no AWS credentials", r.stderr.decode())


class TestErrors(AwsCase):
    def unchanged_after(self, r, rc, *words, env=None):
        self.assertRc(r, rc)
        self.assertOneErrorLine(r)
        for w in words:
            self.assertIn(w, r.stderr.decode())

    def test_certificate_of_another_key_is_refused(self):
        path = self.copy("hello64.exe")
        before = read(path)
        r = self.sign(path, leaf="leaf-rsa3072")
        self.unchanged_after(r, 87, "does not belong")
        self.assertEqual(read(path), before)
        self.assertEqual(self.emu.calls("Sign"), [])

    def test_unknown_and_disabled_keys(self):
        for key, word in (("alias/nope", "NotFoundException"),
                          ("alias/disabled", "DisabledException")):
            with self.subTest(key=key):
                r = self.sign(self.copy("hello64.exe"), key=key)
                self.unchanged_after(r, 87, word, key)

    def test_wrong_secret_fails_sigv4(self):
        r = self.sign(self.copy("hello64.exe"),
                      env=self.env(AWS_SECRET_ACCESS_KEY="wrong"))
        self.unchanged_after(r, 87, "InvalidSignatureException")

    def test_temporary_key_without_session_token_is_rejected(self):
        c = self.emu.state.issue_temporary("test")
        r = self.sign(self.copy("hello64.exe"), env=self.env(
            AWS_ACCESS_KEY_ID=c["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=c["SecretAccessKey"]))
        self.unchanged_after(r, 87, "UnrecognizedClientException")
        self.emu.state.log.clear()
        self.assertEqual(self.signed_with(self.env(
            AWS_ACCESS_KEY_ID=c["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=c["SecretAccessKey"],
            AWS_SESSION_TOKEN=c["Token"])), c["AccessKeyId"])

    def test_throttling_then_success(self):
        self.emu.knobs(throttle_next=2, fail_next_500=1)
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path), 0)
        self.assertVerifies(path)
        self.assertEqual(len(self.emu.calls("GetPublicKey", 400)), 2)

    def test_persistent_throttling_is_bounded(self):
        path = self.copy("hello64.exe")
        before = read(path)
        self.emu.knobs(throttle_next=1000)
        r = self.sign(path, "--http-retries", "2")
        self.unchanged_after(r, 87, "ThrottlingException")
        self.assertEqual(len(self.emu.calls("GetPublicKey")), 3)
        self.assertEqual(read(path), before)

    def test_sign_denied_leaves_file_intact(self):
        path = self.copy("hello64.exe")
        before = read(path)
        self.emu.knobs(deny_sign=True)
        r = self.sign(path)
        self.unchanged_after(r, 2, "AccessDeniedException", "kms:Sign")
        self.assertEqual(read(path), before)

    def test_corrupted_signature_is_caught(self):
        path = self.copy("hello64.exe")
        before = read(path)
        self.emu.knobs(corrupt_next=1)
        r = self.sign(path)
        self.assertRc(r, 2)
        self.assertEqual(read(path), before)

    def test_unsupported_digest_combinations(self):
        r = self.sign(self.copy("hello64.exe"), digest="sha1")
        self.unchanged_after(r, 2, "SHA-1")
        r = self.sign(self.copy("hello64.exe"), key="alias/codesign-ec256",
                      leaf="leaf-ec256", digest="sha384")
        self.unchanged_after(r, 2, "sha256")
        self.assertEqual(self.emu.calls("Sign"), [])

    def test_plain_http_endpoint_refused_off_loopback(self):
        r = self.sign(self.copy("hello64.exe"), env=self.env(
            AWS_ENDPOINT_URL_KMS="http://kms.example.com"))
        self.unchanged_after(r, 87, "https://")

    def test_secrets_never_printed(self):
        r = self.sign(self.copy("hello64.exe"), "-v",
                      env=self.env(AWS_SECRET_ACCESS_KEY="s3cr3t-value-xyz"))
        self.assertNotIn(b"s3cr3t-value-xyz", r.stdout + r.stderr)
        c = self.emu.state.issue_temporary("test")
        r = self.sign(self.copy("hello64.exe"), "-v", env=self.env(
            AWS_ACCESS_KEY_ID=c["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=c["SecretAccessKey"],
            AWS_SESSION_TOKEN=c["Token"]))
        self.assertRc(r, 0)
        for s in (c["SecretAccessKey"], c["Token"]):
            self.assertNotIn(s.encode(), r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
