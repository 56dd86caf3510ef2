"""Proves tests/servers/gcp_emu.py against the official Google Cloud KMS
client for Node.js (@google-cloud/kms, pinned in
tests/servers/sdk-check-gcp) over its REST transport (fallback: true): the
client must list versions, read the public key and sign through the
emulator, with CRC32C fields in Google's encoding, and see Google's
NOT_FOUND error shape. The gRPC transport is not emulated."""
import base64
import hashlib
import json
import os
import shutil
import sys
import unittest

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils

from hslib import pki, run

HERE = os.path.dirname(os.path.abspath(__file__))
SDK_DIR = os.path.join(HERE, "..", "servers", "sdk-check-gcp")
sys.path.insert(0, os.path.join(HERE, "..", "servers"))
from gcp_emu import GcpEmulator, crc32c  # noqa: E402

KEY = "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k"


class TestGcpSdkAgainstEmulator(unittest.TestCase):
    def test_sdk_round_trip(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node (>= 20) is required for the SDK check")
        self.assertTrue(os.path.isdir(os.path.join(SDK_DIR, "node_modules")),
                        "run scripts/bootstrap (npm ci in %s)" % SDK_DIR)
        digest = hashlib.sha256(b"hsmsign sdk check").digest()
        config = {"access_tokens": ["ya29.sdk"], "keys": [{"name": KEY, "versions": [
            {"key_file": pki("leaf-rsa3072.key"), "state": "DISABLED",
             "algorithm": "RSA_SIGN_PKCS1_3072_SHA256"},
            {"key_file": pki("leaf-rsa2048.key"),
             "algorithm": "RSA_SIGN_PKCS1_2048_SHA256"}]}]}
        env = {k: "" for k in os.environ if k.startswith(("GOOGLE_", "GCE_"))}
        env["DIGEST_CRC"] = str(crc32c(digest))
        with GcpEmulator(config) as emu:
            port = emu.url.rsplit(":", 1)[1]
            r = run([node, os.path.join(SDK_DIR, "check.mjs"), "127.0.0.1", port,
                     "ya29.sdk", KEY, base64.b64encode(digest).decode()],
                    env=env, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr.decode())
            out = json.loads(r.stdout.decode().strip().splitlines()[-1])
            self.assertEqual([c["status"] for c in emu.calls("sign")], [200])
        self.assertEqual(out["versions"], [[KEY + "/cryptoKeyVersions/2",
                                            "ENABLED"]])
        self.assertEqual(out["algorithm"], "RSA_SIGN_PKCS1_2048_SHA256")
        self.assertEqual(out["pemCrc32c"], str(crc32c(out["pem"].encode())))
        self.assertTrue(out["verifiedDigestCrc32c"])
        sig = base64.b64decode(out["signature"])
        self.assertEqual(out["signatureCrc32c"], str(crc32c(sig)))
        self.assertEqual(out["notFound"]["code"], 5)  # gRPC NOT_FOUND
        with open(pki("leaf-rsa2048.key"), "rb") as f:
            pub = serialization.load_pem_private_key(f.read(), None).public_key()
        pub.verify(sig, digest, padding.PKCS1v15(),
                   utils.Prehashed(hashes.SHA256()))


if __name__ == "__main__":
    unittest.main()
