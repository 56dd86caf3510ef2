"""HashiCorp Vault transit provider end to end against
tests/servers/vault_emu.py: RSA (pkcs1v15, every digest) and ECDSA keys,
key versions, token / AppRole / JWT (GitHub OIDC) / ~/.vault-token auth,
errors, throttling and a sealed Vault. Signatures are checked by hsmsign
verify, osslsigncode and (SHA-256) sbverify."""
import os
import unittest

from cloudlib import EmulatorCase
from hslib import HSMSIGN, pki, read, run
from vault_emu import VaultEmulator  # via cloudlib

TOKEN = "hvs.static-test-token"


def emu_config():
    return {
        "tokens": [TOKEN],
        "keys": [
            # version 1 is an older key, version 2 the current one
            {"name": "codesign", "versions": [pki("leaf-rsa3072.key"),
                                              pki("leaf-rsa2048.key")]},
            {"name": "codesign-ec", "versions": [pki("leaf-ec256.key")]},
            {"name": "codesign-ec384", "versions": [pki("leaf-ec384.key")]},
        ],
        "approle": {"role_id": "role-1234", "secret_id": "secret-5678"},
        "jwt": {"role": "github-codesign", "audience": "https://vault.example"},
        "github_request_token": "gh-bearer",
    }


class VaultCase(EmulatorCase):
    emulator_class = VaultEmulator
    emu_config = staticmethod(emu_config)

    def env(self, token=True, **extra):
        env = {k: "" for k in os.environ
               if k.startswith(("VAULT_", "ACTIONS_"))}
        env.update({"HOME": self.tmp, "VAULT_ADDR": self.emu.url,
                    "HSMSIGN_HTTP_BACKOFF_MS": "5"})
        if token:
            env["VAULT_TOKEN"] = TOKEN
        env.update(extra)
        return env

    def sign(self, path, *args, key="codesign", leaf="leaf-rsa2048",
             digest="sha256", env=None):
        return run([HSMSIGN, "sign", "--vault-transit-key", key, "--cert",
                    pki(leaf + "-chain.pem"), "-fd", digest, *args, path],
                   env=env if env is not None else self.env())


class TestKeys(VaultCase):
    def test_rsa_every_digest_pins_the_latest_version(self):
        for digest in ("sha1", "sha256", "sha384", "sha512"):
            with self.subTest(digest=digest):
                self.emu.state.log.clear()
                path = self.copy("hello64.exe", digest + ".exe")
                self.assertRc(self.sign(path, digest=digest), 0)
                self.assertVerifies(path, sha256=digest == "sha256")
                req = self.emu.calls("sign", 200)[0]["request"]
                self.assertEqual(req["signature_algorithm"], "pkcs1v15")
                self.assertTrue(req["prehashed"])
                self.assertEqual(req["key_version"], 2)

    def test_older_version(self):
        path = self.copy("hello64.exe")
        r = self.sign(path, "--vault-key-version", "1", leaf="leaf-rsa3072")
        self.assertRc(r, 0)
        self.assertVerifies(path)

    def test_ecdsa_keys(self):
        for key, leaf, digest in (("codesign-ec", "leaf-ec256", "sha256"),
                                  ("codesign-ec384", "leaf-ec384", "sha384")):
            with self.subTest(key=key):
                path = self.copy("hello32.exe", key + ".exe")
                self.assertRc(self.sign(path, key=key, leaf=leaf,
                                        digest=digest), 0)
                self.assertVerifies(path, sha256=digest == "sha256")

    def test_two_files_one_key_read(self):
        a, b = self.copy("hello64.exe"), self.copy("lib64.dll")
        r = run([HSMSIGN, "sign", "--vault-transit-key", "codesign", "--cert",
                 pki("leaf-rsa2048-chain.pem"), a, b], env=self.env())
        self.assertRc(r, 0)
        self.assertEqual(len(self.emu.calls("read", 200)), 1)
        self.assertEqual(len(self.emu.calls("sign", 200)), 2)

    def test_custom_mount(self):
        self.emu.state.mount = "pki-sign"
        self.addCleanup(setattr, self.emu.state, "mount", "transit")
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path, "--vault-transit-mount", "pki-sign"), 0)
        self.assertVerifies(path)

    def test_certificate_of_another_version_is_refused(self):
        r = self.sign(self.copy("hello64.exe"), leaf="leaf-rsa3072")
        self.assertFailsCleanly(r, 87, "does not belong", "version 2")


class TestAuth(VaultCase):
    def signed_with(self, env, *args, kind):
        path = self.copy("hello64.exe")
        r = self.sign(path, *args, env=env)
        self.assertRc(r, 0)
        self.assertVerifies(path)
        self.assertEqual(self.emu.calls("sign", 200)[0]["token_kind"], kind)

    def test_token_option_and_env(self):
        self.signed_with(self.env(token=False, T=TOKEN), "--vault-token",
                         "env:T", kind="static")
        self.emu.state.log.clear()
        self.signed_with(self.env(), kind="static")

    def test_token_file(self):
        with open(os.path.join(self.tmp, ".vault-token"), "w") as f:
            f.write(TOKEN + "\n")
        self.signed_with(self.env(token=False), kind="static")

    def test_approle(self):
        self.signed_with(self.env(token=False, SID="secret-5678"),
                         "--vault-role-id", "role-1234", "--vault-secret-id",
                         "env:SID", kind="approle")

    def test_approle_wrong_secret(self):
        r = self.sign(self.copy("hello64.exe"), "--vault-role-id",
                      "role-1234", "--vault-secret-id", "env:SID",
                      env=self.env(token=False, SID="wrong-secret-id"))
        self.assertFailsCleanly(r, 87, "invalid role or secret ID")
        self.assertNotIn(b"wrong-secret-id", r.stdout + r.stderr)

    def test_github_jwt(self):
        env = self.env(token=False, ACTIONS_ID_TOKEN_REQUEST_URL=self.emu.url +
                       "/github/token?api-version=2.0",
                       ACTIONS_ID_TOKEN_REQUEST_TOKEN="gh-bearer")
        self.signed_with(env, "--vault-jwt-role", "github-codesign",
                         "--vault-jwt-audience", "https://vault.example",
                         kind="jwt")
        r = self.sign(self.copy("hello64.exe"), "--vault-jwt-role",
                      "github-codesign", env=env)
        self.assertFailsCleanly(r, 87, "invalid audience")

    def test_no_credentials(self):
        r = self.sign(self.copy("hello64.exe"), env=self.env(token=False))
        self.assertFailsCleanly(r, 87, "no Vault credentials")

    def test_plain_http_to_a_remote_vault_is_refused(self):
        r = self.sign(self.copy("hello64.exe"), env=self.env(
            VAULT_ADDR="http://vault.example.com:8200"))
        self.assertFailsCleanly(r, 87, "https://")


class TestErrors(VaultCase):
    def test_bad_token(self):
        r = self.sign(self.copy("hello64.exe"),
                      env=self.env(VAULT_TOKEN="hvs.bogus-token"))
        self.assertFailsCleanly(r, 87, "permission denied")
        self.assertNotIn(b"hvs.bogus-token", r.stdout + r.stderr)

    def test_denied_sign_leaves_file_intact(self):
        path = self.copy("hello64.exe")
        self.emu.knobs(deny=True)
        self.assertFailsCleanly(self.sign(path), 2, "permission denied",
                                path=path,
                                before=read(self.copy("hello64.exe", "o")))

    def test_unknown_key(self):
        r = self.sign(self.copy("hello64.exe"), key="nope")
        self.assertFailsCleanly(r, 87, "encryption key not found")

    def test_throttled_and_sealed_are_retried(self):
        self.emu.knobs(throttle_next=2, sealed_next=1)
        path = self.copy("hello64.exe")
        self.assertRc(self.sign(path), 0)
        self.assertVerifies(path)

    def test_corrupted_signature_is_caught(self):
        path = self.copy("hello64.exe")
        self.emu.knobs(corrupt_next=1)
        r = self.sign(path)
        self.assertRc(r, 2)
        self.assertEqual(read(path), read(self.copy("hello64.exe", "o")))

    def test_bad_key_names_are_refused_locally(self):
        for name in ("../sys/raw", "a/b", ""):
            with self.subTest(name=name):
                r = self.sign(self.copy("hello64.exe"), key=name)
                self.assertFailsCleanly(r, 87, "--vault-transit-key")
        self.assertEqual(self.emu.calls(), [])


if __name__ == "__main__":
    unittest.main()
