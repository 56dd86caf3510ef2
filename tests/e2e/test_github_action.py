"""The composite GitHub Action (action.yml), run here as a runner would run
its Sign step: bash, the step's env with the ${{ }} expressions evaluated,
and the job's OIDC variables pointing at the local emulator's GitHub token
endpoint. The build steps are not run (they install packages); the binary
under test stands in for the one the Build step makes.
"""
import os
import re
import subprocess
import sys

import yaml

from hslib import HSMSIGN, HsTestCase, osslsigncode_verify, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "servers"))
from emu_client import SharedEmulator  # noqa: E402

ACTION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "action.yml")
FEDERATED_ID = "33333333-3333-3333-3333-333333333333"
EXPR = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")


def load_action():
    with open(ACTION, encoding="utf-8") as f:
        return yaml.safe_load(f)


class ActionTest(SharedEmulator, HsTestCase):
    CONFIG = {"keys": ["codesign-rsa2048"]}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.action = load_action()

    def step(self, name):
        for s in self.action["runs"]["steps"]:
            if s.get("name") == name:
                return s
        self.fail("no step %r" % name)

    def evaluate(self, text, inputs):
        def value(m):
            expr = m.group(1)
            if expr.startswith("inputs."):
                return str(inputs[expr[7:]])
            if expr == "steps.build.outputs.hsmsign":
                return HSMSIGN
            self.fail("unexpected expression %r" % expr)
        return EXPR.sub(value, text)

    def run_sign_step(self, oidc=True, **given):
        inputs = {k: v.get("default", "") for k, v in self.action["inputs"].items()}
        inputs.update(given)
        step = self.step("Sign")
        self.assertNotIn("${{", step["run"], "inputs must not be spliced into the script")
        env = {k: "" for k in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                               "ACTIONS_ID_TOKEN_REQUEST_URL",
                               "ACTIONS_ID_TOKEN_REQUEST_TOKEN")}
        env.update({k: self.evaluate(str(v), inputs) for k, v in step["env"].items()})
        env.update({"PATH": os.environ["PATH"], "HOME": self.tmp,
                    "AZURE_AUTHORITY_HOST": self.info["https"],
                    "SSL_CERT_FILE": self.info["tls_ca"],
                    "XDG_CACHE_HOME": self.path("cache")})
        if oidc:
            with open(self.info["github_request_token_file"]) as f:
                env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = f.read().strip()
            env["ACTIONS_ID_TOKEN_REQUEST_URL"] = self.info["github_token_url"]
        return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=self.tmp, env=env,
                              capture_output=True, timeout=120)

    def inputs(self, files):
        return {"files": files, "azure-key-vault-url": self.info["https"],
                "azure-key-vault-certificate": "codesign-rsa2048",
                "azure-client-id": FEDERATED_ID, "azure-tenant-id": self.info["tenant"],
                "timestamp-rfc3161": ""}

    def test_shape(self):
        a = self.action
        self.assertEqual(a["runs"]["using"], "composite")
        uses = [s.get("uses", "") for s in a["runs"]["steps"]]
        self.assertFalse([u for u in uses if "azure/login" in u or "azure/cli" in u], uses)
        for s in a["runs"]["steps"]:
            self.assertNotIn("az login", s.get("run", ""))
        for name in ("files", "azure-key-vault-url", "azure-key-vault-certificate",
                     "azure-client-id", "azure-tenant-id", "timestamp-rfc3161",
                     "file-digest", "description", "skip-signed"):
            self.assertIn(name, a["inputs"])
        oses = {s["if"] for s in a["runs"]["steps"] if "if" in s}
        self.assertEqual(oses, {"runner.os == 'Linux'", "runner.os == 'macOS'",
                                "runner.os == 'Windows'"})

    def test_signs_globbed_files_with_github_oidc(self):
        os.makedirs(self.path("dist/sub"))
        a = self.copy("hello64.exe", "dist/app.exe")
        b = self.copy("lib64.dll", "dist/sub/my lib.dll")
        r = self.run_sign_step(**self.inputs("dist/**/*.exe\n  dist/sub/*.dll  \n"),
                               description="Contoso App", verbose="true")
        self.assertRc(r, 0, "Sign step")
        self.assertIn("github-oidc", r.stderr.decode())
        for path in (a, b):
            self.assertRc(run([HSMSIGN, "verify", "--ca-file", self.info["root"], path]), 0)
            ok, out = osslsigncode_verify(path, self.info["root"])
            self.assertTrue(ok, out)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 2)

    def test_without_id_token_permission(self):
        self.copy("hello64.exe", "app.exe")
        r = self.run_sign_step(oidc=False, **self.inputs("app.exe"))
        self.assertRc(r, 1)
        self.assertIn("id-token: write", r.stdout.decode())

    def test_unmatched_pattern_fails(self):
        r = self.run_sign_step(**self.inputs("nothing-here/*.exe"))
        self.assertRc(r, 1)
        self.assertIn("no file matches", r.stdout.decode())

    def test_hostile_file_name_is_not_code(self):
        name = "$(touch pwned).exe"
        self.copy("hello64.exe", name)
        r = self.run_sign_step(**self.inputs(name))
        self.assertRc(r, 0)
        self.assertFalse(os.path.exists(self.path("pwned")))
