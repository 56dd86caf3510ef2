"""Proves tests/servers/aws_emu.py against the official AWS SDK for
JavaScript (@aws-sdk/client-kms, pinned in tests/servers/sdk-check-aws):
the SDK's own SigV4 signatures must pass the emulator's check (and a wrong
secret must fail it), and its KMS JSON shapes, errors and throttling
retries must work. hsmsign's SigV4 is tested against the same emulator
check (test_aws.py) and AWS's published vectors (unit test_aws)."""
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
SDK_DIR = os.path.join(HERE, "..", "servers", "sdk-check-aws")
sys.path.insert(0, os.path.join(HERE, "..", "servers"))
from aws_emu import AwsEmulator  # noqa: E402


class TestAwsSdkAgainstEmulator(unittest.TestCase):
    def test_sdk_round_trip(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node (>= 20) is required for the SDK check")
        self.assertTrue(os.path.isdir(os.path.join(SDK_DIR, "node_modules")),
                        "run scripts/bootstrap (npm ci in %s)" % SDK_DIR)
        digest = hashlib.sha256(b"hsmsign sdk check").digest()
        config = {"region": "eu-west-3", "credentials": {"AKIASDK": "sdk/secret"},
                  "keys": [{"alias": "alias/sdk",
                            "key_file": pki("leaf-rsa2048.key")}]}
        with AwsEmulator(config) as emu:
            emu.knobs(throttle_next=1)
            env = {k: "" for k in os.environ if k.startswith("AWS_")}
            r = run([node, os.path.join(SDK_DIR, "check.mjs"), emu.url,
                     "eu-west-3", "AKIASDK", "sdk/secret", "alias/sdk",
                     base64.b64encode(digest).decode()], env=env, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr.decode())
            out = json.loads(r.stdout.decode().strip().splitlines()[-1])
            # Every call the SDK signed passed the emulator's SigV4 check.
            self.assertEqual(emu.calls("GetPublicKey", 200)[0]["access_key"],
                             "AKIASDK")
        self.assertEqual(out["keySpec"], "RSA_2048")
        self.assertEqual(out["keyUsage"], "SIGN_VERIFY")
        self.assertEqual(out["keyState"], "Enabled")
        self.assertEqual(out["attempts"], 2)  # ThrottlingException retried
        self.assertEqual(out["notFound"]["name"], "NotFoundException")
        self.assertEqual(out["notFound"]["status"], 400)
        self.assertEqual(out["badSecret"], "InvalidSignatureException")
        with open(pki("leaf-rsa2048.key"), "rb") as f:
            pub = serialization.load_pem_private_key(f.read(), None).public_key()
        self.assertEqual(base64.b64decode(out["publicKey"]), pub.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo))
        pub.verify(base64.b64decode(out["signature"]), digest,
                   padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


if __name__ == "__main__":
    unittest.main()
