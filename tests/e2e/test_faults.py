"""Fault injection against every remote service hsmsign talks to, one table:
service x fault. The faults are served by the shared mechanism in
tests/servers/emu_base.py (the "fault" knob every emulator honours) or by
an emulator's content knobs (a signature that is not base64 or does not
verify, a certificate of another key, a token that expires mid-batch).

Every case checks what issue 8 asks of a failure: it ends in bounded time
(short --http-max-time / --timestamp-timeout), with the documented exit
code (docs/cli.md), one error line that names the service, no secret in
any output, every input byte-identical and no temporary file left.
"""
import os
import re
import shutil
import sys
import time
import unittest

from cloudlib import EmulatorCase
from hslib import HSMSIGN, HsTestCase, PE_DIR, ROOT_CA, free_port, pki, run, sha256_file

SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "servers")
if SERVERS not in sys.path:
    sys.path.insert(0, SERVERS)

from emu_client import SharedEmulator  # noqa: E402
from tsa_client import Tsa  # noqa: E402
import test_aws  # noqa: E402  (emulator configs and credentials)
import test_gcp  # noqa: E402
import test_trusted_signing  # noqa: E402
import test_vault_transit  # noqa: E402
from aws_emu import AwsEmulator  # noqa: E402
from gcp_emu import GcpEmulator  # noqa: E402
from trusted_emu import TrustedEmulator  # noqa: E402
from vault_emu import VaultEmulator  # noqa: E402

# The slow faults stall far longer than the client may wait.
STALL = 30
# hsmsign's limits for these tests (seconds) and the bound every case must
# finish within, including process start and retries.
HTTP_MAX_TIME = "1"
BOUND = 12.0

# Transport faults (emu_base.FAULT_KINDS) and the plan each one sets.
# "refused" points the client at a closed port instead.
TRANSPORT = {
    "refused": None,
    "reset": {"kind": "reset"},
    "reset_mid_body": {"kind": "reset_body"},
    "slow_headers": {"kind": "slow_headers", "delay": STALL},
    "slow_body": {"kind": "slow_body", "delay": STALL},
    "truncated_json": {"kind": "truncated_json"},
    "invalid_json": {"kind": "invalid_json"},
    "wrong_content_type": {"kind": "wrong_type"},
    "oversized": {"kind": "oversized"},
    "throttled_no_retry_after": {"kind": "throttle"},
    "throttled_retry_after": {"kind": "throttle", "retry_after": 1},
    "persistent_503": {"kind": "status", "status": 503},
}
# The Retry-After case needs a budget that can wait out Retry-After: 1
# (a Retry-After beyond the remaining budget ends the retries at once).
MAX_TIME = {"throttled_retry_after": "3"}
# Faults the client must ride out: a short 429 storm, then service.
RECOVER = {
    "throttle_storm_recovers": {"kind": "throttle", "count": 2},
}
# An answer that is not what the service sends: the message says so.
UNREADABLE = ("JSON|no usable|unreadable|not a|invalid|malformed|no signature|"
              "no status")
# What the one error line must say happened, per fault.
WHAT = {
    "refused": "connect|refused",
    "reset": "empty reply|reset|closed|recv",
    "reset_mid_body": "transfer closed|reset|partial|recv",
    "slow_headers": "timed out|timeout",
    "slow_body": "timed out|timeout",
    "truncated_json": UNREADABLE,
    "invalid_json": UNREADABLE,
    "wrong_content_type": UNREADABLE,
    "oversized": "too large",
    "throttled_no_retry_after": "throttl|429|too many",
    "throttled_retry_after": "throttl|429|too many",
    "persistent_503": "503|unavailable",
}
BAD_BASE64 = "base64|no valid signature|malformed signature"
NO_VERIFY = "does not verify"
NOT_ITS_KEY = "does not verify|does not belong|differs"


class FaultCase(HsTestCase):
    """A subclass names its targets in TARGETS: {name: spec}, where spec
    has service (a regex the error must match), rc (exit code of a
    transport fault), paths (the fault plan's path prefixes) and whatever
    its command() needs. It implements set_fault(target, plan) and
    command(target, files, refused) -> (argv, env)."""

    TARGETS = {}

    def secrets(self):
        return []

    def set_fault(self, target, plan):
        raise NotImplementedError

    def fault_hits(self):
        """Faults served under the current plan (None: not observable)."""
        return None

    def command(self, target, files, refused=False):
        raise NotImplementedError

    def inputs(self, n=1):
        files = []
        for i in range(n):
            files.append(self.copy(os.path.join(PE_DIR, "hello64.exe"),
                                   "in%d.exe" % i))
        return files, {f: sha256_file(f) for f in files}

    def run_case(self, target, files, refused=False, fault=None):
        argv, env = self.command(target, files, refused)
        if fault in MAX_TIME:  # a longer budget, one retry
            argv = [MAX_TIME[fault] if a == HTTP_MAX_TIME and
                    argv[i - 1] in ("--http-max-time", "--timestamp-timeout")
                    else "1" if argv[i - 1] in ("--http-retries",
                                                "--timestamp-retries")
                    else a for i, a in enumerate(argv)]
        t0 = time.monotonic()
        r = run(argv, env=env, timeout=60)
        return r, time.monotonic() - t0

    def assertNoSecrets(self, r):
        out = r.stdout + r.stderr
        for s in self.secrets():
            if s:
                self.assertNotIn(s.encode(), out, "a secret leaked")
        # Any JWT (access tokens, OIDC and client assertions) starts so.
        self.assertNotIn(b"eyJ", out, "a token leaked")

    def assertUntouched(self, before):
        for f, h in before.items():
            self.assertEqual(sha256_file(f), h, "%s changed" % f)
        left = sorted(os.listdir(self.tmp))
        self.assertEqual(left, sorted(os.path.basename(f) for f in before),
                         "files left behind")

    def assertFault(self, name, fault, r, elapsed, before, rc=None,
                    what=None, batch=False):
        spec = self.TARGETS[name]
        err = r.stderr.decode(errors="replace")
        self.assertLess(elapsed, BOUND, "%s/%s took %.1f s: %s" % (
            name, fault, elapsed, err))
        if rc is None:
            rc = spec.get("rc_" + fault, spec["rc"])
        self.assertRc(r, rc, "%s/%s" % (name, fault))
        if batch:  # the failure, then "stopped after the first failure"
            err = err.splitlines()[0]
            self.assertTrue(all(line.startswith("hsmsign:")
                                for line in r.stderr.decode().splitlines()))
        else:
            self.assertOneErrorLine(r)
        self.assertRegex(err, re.compile(spec["service"], re.I),
                         "the error does not name the service")
        if what is not None:
            self.assertRegex(err, re.compile(what, re.I),
                             "the error does not say what happened")
        self.assertNoSecrets(r)
        self.assertUntouched(before)

    def check_transport(self, name, fault):
        plan = TRANSPORT[fault]
        files, before = self.inputs()
        if plan is not None:
            plan = dict(plan, paths=self.TARGETS[name]["paths"])
            self.set_fault(name, plan)
        try:
            r, elapsed = self.run_case(name, files, refused=plan is None,
                                       fault=fault)
        finally:
            self.set_fault(name, None)
        self.assertFault(name, fault, r, elapsed, before, what=WHAT[fault])
        if fault == "throttled_retry_after":
            # Retry-After: 1 was honoured at least once.
            self.assertGreaterEqual(elapsed, 1.0)

    def check_recover(self, name, fault):
        plan = dict(RECOVER[fault], paths=self.TARGETS[name]["paths"])
        files, _ = self.inputs()
        self.set_fault(name, plan)
        try:
            r, elapsed = self.run_case(name, files)
            hits = self.fault_hits()
        finally:
            self.set_fault(name, None)
        self.assertRc(r, 0, "%s/%s" % (name, fault))
        if hits is not None:  # the storm did happen
            self.assertEqual(hits, RECOVER[fault]["count"])
        self.assertLess(elapsed, BOUND)
        self.assertNoSecrets(r)
        v = run([HSMSIGN, "verify", "--ca-file", self.ca(), *self.verify_args(),
                 files[0]])
        self.assertRc(v, 0, "verify after %s" % fault)

    def ca(self):
        return ROOT_CA

    def verify_args(self):
        return []


def add_table(cls):
    """Adds test_<target>_<fault> for every target of cls and fault."""
    for name in cls.TARGETS:
        for fault in TRANSPORT:
            setattr(cls, "test_%s_%s" % (name, fault),
                    lambda self, n=name, f=fault: self.check_transport(n, f))
        for fault in RECOVER:
            setattr(cls, "test_%s_%s" % (name, fault),
                    lambda self, n=name, f=fault: self.check_recover(n, f))
    return cls


# --------------------------------------------------------------- Azure
AZURE_SCRUB = ("AZURE_", "ACTIONS_", "IDENTITY_", "IMDS_", "MSI_")


class AzureFaultCase(SharedEmulator, FaultCase):
    """One azure_emu.py (in MODE) for the class."""

    def ca(self):
        return self.info["root"]

    def secrets(self):
        return [self.emu.read("client-secret.txt"),
                self.emu.read("identity-header.txt"),
                self.emu.read("github-request-token.txt")]

    def set_fault(self, target, plan):
        if plan is not None:
            plan = dict(plan, paths=[p.replace("{tenant}", self.info["tenant"])
                                     for p in plan["paths"]])
        self.emu.config(fault=plan)

    def fault_hits(self):
        return (self.emu.config().get("fault") or {}).get("hits", 0)

    def command(self, target, files, refused=False, args=()):
        spec = self.TARGETS[target]
        env = {k: "" for k in os.environ if k.startswith(AZURE_SCRUB)}
        env.update(self.emu.env(spec["cred"]))
        env.update({"HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "AZURE_CLI_PATH": os.path.join(self.tmp, "no-az"),
                    "XDG_CACHE_HOME": os.path.join(self.tmp, "..",
                                                   os.path.basename(self.tmp)
                                                   + "-cache")})
        cache = env["XDG_CACHE_HOME"]
        self.addCleanup(shutil.rmtree, cache, True)
        vault = self.info["https"]
        if refused:
            dead = "127.0.0.1:%d" % free_port()
            if target.startswith(("keyvault", "managed_hsm")):
                vault = "https://" + dead
            elif target == "entra":
                env["AZURE_AUTHORITY_HOST"] = "https://" + dead
            elif target == "imds":
                env["IMDS_ENDPOINT"] = "http://" + dead
            elif target == "appservice":
                env["IDENTITY_ENDPOINT"] = "http://%s/msi/token" % dead
            elif target == "github_oidc":
                env["ACTIONS_ID_TOKEN_REQUEST_URL"] = (
                    "https://%s/_github/token?api-version=2.0" % dead)
        argv = [HSMSIGN, "sign", "-kvu", vault, "-kvc", "codesign-rsa2048",
                "--http-max-time", HTTP_MAX_TIME, "--http-retries", "2",
                "-mdop", "1", *spec.get("args", ()), *args, *files]
        return argv, env

    def content_case(self, knobs, rc, what, target="keyvault", n=1):
        files, before = self.inputs(n)
        self.emu.config(**knobs)
        argv, env = self.command(target, files)
        t0 = time.monotonic()
        r = run(argv, env=env, timeout=60)
        self.assertFault(target, str(knobs), r, time.monotonic() - t0,
                         before, rc=rc, what=what)


@add_table
class TestAzureFaults(AzureFaultCase):
    """Key Vault, Entra ID, IMDS, App Service managed identity and GitHub
    OIDC, all served by one azure_emu.py."""

    TARGETS = {
        "keyvault": {"service": "Azure Key Vault|azure-key-vault", "rc": 2,
                     "rc_refused": 87, "paths": ["/keys/"], "cred": "secret"},
        "keyvault_certificate": {"service": "Azure Key Vault", "rc": 87,
                                 "paths": ["/certificates/"],
                                 "cred": "secret"},
        "entra": {"service": "Entra ID", "rc": 87, "paths": ["/{tenant}/"],
                  "cred": "secret"},
        "imds": {"service": r"managed identity \(IMDS\)", "rc": 87,
                 "paths": ["/metadata/identity/"], "cred": "imds",
                 "args": ["--azure-credential", "managed-identity"]},
        "appservice": {"service": "App Service", "rc": 87,
                       "paths": ["/msi/token"], "cred": "appservice"},
        "github_oidc": {"service": "GitHub Actions OIDC", "rc": 87,
                        "paths": ["/_github/token"], "cred": "github"},
    }

    def test_keyvault_signature_not_base64(self):
        self.content_case({"bad_b64_sign_next": 1}, 2, BAD_BASE64)

    def test_keyvault_signature_does_not_verify(self):
        self.content_case({"corrupt_sign_next": 1}, 2, NO_VERIFY)

    def test_keyvault_certificate_of_another_key(self):
        self.content_case({"cert_of": "codesign-rsa3072"}, 2, NOT_ITS_KEY)

    def test_keyvault_token_expires_mid_batch_refreshes_once(self):
        """Tokens die after 3 data-plane calls: the client gets a new one
        on the 401 and carries on; every file is signed."""
        files, _ = self.inputs(4)
        self.emu.config(expire_after=3)
        argv, env = self.command("keyvault", files)
        r = run(argv, env=env, timeout=60)
        self.assertRc(r, 0)
        self.assertNoSecrets(r)
        log = self.emu.log()
        expired = [e for e in log if e.get("knob") == "expire_after"]
        self.assertGreaterEqual(len(expired), 1)
        tokens = [e for e in log if e["path"].endswith("/oauth2/v2.0/token")
                  and e["status"] == 200]
        # One token, then exactly one new token per expiry.
        self.assertEqual(len(tokens), 1 + len(expired))
        for f in files:
            self.assertRc(run([HSMSIGN, "verify", "--ca-file", self.ca(),
                               f]), 0)


@add_table
class TestManagedHsmFaults(AzureFaultCase):
    """Managed HSM (azure_emu.py --mode managedhsm): the key is read when
    it is opened (a fault there exits 87), the certificate is a file."""

    MODE = "managedhsm"
    TARGETS = {"managed_hsm": {"service": "Azure Managed HSM|azure-key-vault",
                               "rc": 87, "paths": ["/keys/"],
                               "cred": "secret"}}

    def command(self, target, files, refused=False, args=()):
        return super().command(target, files, refused, args=(
            "--azure-managed-hsm", "--cert", self.emu.leaf("codesign-rsa2048"),
            *args))

    def test_managed_hsm_signature_does_not_verify(self):
        self.content_case({"corrupt_sign_next": 1}, 2, NO_VERIFY,
                          target="managed_hsm")

    def test_managed_hsm_signature_not_base64(self):
        self.content_case({"bad_b64_sign_next": 1}, 2, BAD_BASE64,
                          target="managed_hsm")


# --------------------------------------------------------------- TSA
@add_table
class TestTsaFaults(FaultCase):
    """The RFC 3161 timestamp server (tsa.py), signing with a local key."""

    TARGETS = {"tsa": {"service": "timestamp server", "rc": 2,
                       "paths": ["/ok"]}}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tsa = Tsa().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.tsa.__exit__(None, None, None)

    def set_fault(self, target, plan):
        self.tsa.fault(plan)

    def command(self, target, files, refused=False, mode="ok"):
        url = ("http://127.0.0.1:%d/ok" % free_port() if refused
               else self.tsa.url(mode))
        return ([HSMSIGN, "sign", "--key", pki("leaf-rsa2048.key"), "--cert",
                 pki("leaf-rsa2048-chain.pem"), "-tr", url,
                 "--timestamp-timeout", HTTP_MAX_TIME,
                 "--timestamp-retries", "2", *files],
                {"HSMSIGN_HTTP_BACKOFF_MS": "5"})

    def verify_args(self):
        return ["--tsa-ca-file", self.tsa.root]

    def test_tsa_token_signature_does_not_verify(self):
        files, before = self.inputs()
        argv, env = self.command("tsa", files, mode="bad-signature")
        t0 = time.monotonic()
        r = run(argv, env=env, timeout=60)
        self.assertFault("tsa", "bad-signature", r, time.monotonic() - t0,
                         before, what="signature|verif|invalid")


# ------------------------------------------------------- cloud KMS
class CloudFaultCase(FaultCase, EmulatorCase):
    """An in-process emulator per class (cloudlib.EmulatorCase), its token
    use counts cleared too before each test."""

    def setUp(self):
        super().setUp()
        with self.emu.state.lock:
            getattr(self.emu.state, "token_uses", {}).clear()

    def set_fault(self, target, plan):
        self.emu.knobs(fault=plan)

    def fault_hits(self):
        with self.emu.state.lock:
            return (self.emu.state.knobs.get("fault") or {}).get("hits", 0)

    def url(self, refused):
        return ("http://127.0.0.1:%d" % free_port() if refused
                else self.emu.url)

    def content_case(self, target, knobs, rc, what, cert=None):
        files, before = self.inputs()
        self.emu.knobs(**knobs)
        argv, env = self.command(target, files, cert=cert)
        t0 = time.monotonic()
        r = run(argv, env=env, timeout=60)
        self.assertFault(target, str(knobs), r, time.monotonic() - t0,
                         before, rc=rc, what=what)

    def expiry_case(self, target, n_files=4):
        """Tokens die after 2 uses each: returns the run (rc not checked)."""
        files, before = self.inputs(n_files)
        self.emu.knobs(expire_after=2)
        argv, env = self.command(target, files)
        t0 = time.monotonic()
        r = run(argv, env=env, timeout=60)
        return r, time.monotonic() - t0, files, before

    def common(self):
        return ["--http-max-time", HTTP_MAX_TIME, "--http-retries", "2",
                "-mdop", "1"]


@add_table
class TestAwsFaults(CloudFaultCase):
    emulator_class = AwsEmulator
    emu_config = staticmethod(test_aws.emu_config)
    TARGETS = {
        # The first KMS call (the key's description) is made when the key
        # is opened: a failure there exits 87, like a vault certificate
        # that cannot be fetched (docs/cli.md).
        "aws_kms": {"service": "AWS KMS|aws-kms", "rc": 87, "paths": [],
                    "sts": False},
        "aws_sts": {"service": "AWS STS", "rc": 87, "paths": ["/sts"],
                    "sts": True},
    }

    def secrets(self):
        return [test_aws.SECRET, "eks-projected-token"]

    def command(self, target, files, refused=False, cert=None):
        env = {k: "" for k in os.environ if k.startswith(("AWS_", "ACTIONS_"))}
        url = self.url(refused)
        env.update({"HOME": self.tmp, "AWS_REGION": test_aws.REGION,
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "AWS_ENDPOINT_URL_KMS":
                    self.emu.url if target == "aws_sts" else url,
                    "AWS_ENDPOINT_URL_STS":
                    (url if target == "aws_sts" else self.emu.url) + "/sts/"})
        if self.TARGETS[target]["sts"]:
            tok = os.path.join(self.tmp, "..", os.path.basename(self.tmp) +
                               "-webtoken")
            with open(tok, "w") as f:
                f.write("eks-projected-token")
            self.addCleanup(os.unlink, tok)
            env.update({"AWS_ROLE_ARN": test_aws.ROLE,
                        "AWS_WEB_IDENTITY_TOKEN_FILE": tok})
        else:
            env.update({"AWS_ACCESS_KEY_ID": test_aws.AKID,
                        "AWS_SECRET_ACCESS_KEY": test_aws.SECRET})
        return ([HSMSIGN, "sign", "--aws-kms-key", "alias/codesign-rsa2048",
                 "--cert", cert or pki("leaf-rsa2048-chain.pem"),
                 *self.common(), *files], env)

    def test_aws_kms_signature_not_base64(self):
        self.content_case("aws_kms", {"bad_b64_next": 1}, 2, BAD_BASE64)

    def test_aws_kms_signature_does_not_verify(self):
        self.content_case("aws_kms", {"corrupt_next": 1}, 2, NO_VERIFY)

    def test_aws_kms_certificate_of_another_key(self):
        self.content_case("aws_kms", {}, None, NOT_ITS_KEY,
                          cert=pki("leaf-rsa3072-chain.pem"))

    def test_aws_sts_credentials_expire_mid_batch_renewed_once(self):
        """KMS refuses the STS session as expired after 2 calls: the
        client assumes the role again once per expiry and signs on."""
        r, elapsed, files, _ = self.expiry_case("aws_sts")
        self.assertRc(r, 0)
        self.assertLess(elapsed, BOUND)
        self.assertNoSecrets(r)
        sts = [e for e in self.emu.state.log if e.get("path", "")
               .startswith("/sts") and e.get("status") == 200]
        self.assertGreaterEqual(len(sts), 2)
        for f in files:
            self.assertRc(run([HSMSIGN, "verify", "--ca-file", ROOT_CA, f]), 0)


@add_table
class TestGcpFaults(CloudFaultCase):
    emulator_class = GcpEmulator
    emu_config = staticmethod(test_gcp.emu_config)
    TARGETS = {
        # The key version is read when the key is opened: exit 87.
        "gcp_kms": {"service": "Google Cloud KMS|Cloud KMS|gcp-kms",
                    "rc": 87, "paths": ["/v1/"], "sa": False},
        "gcp_oauth": {"service": "Google (OAuth|service-account)", "rc": 87,
                      "paths": ["/token"], "sa": True},
    }

    def secrets(self):
        return [test_gcp.TOKEN, "PRIVATE KEY"]

    def sa_file(self, token_uri):
        import json
        with open(pki("leaf-rsa2048.key")) as f:
            sa = {"type": "service_account", "client_email": test_gcp.SA,
                  "private_key_id": "k1", "private_key": f.read(),
                  "token_uri": token_uri}
        path = os.path.join(self.tmp, "..", os.path.basename(self.tmp) +
                            "-sa.json")
        with open(path, "w") as f:
            json.dump(sa, f)
        self.addCleanup(os.unlink, path)
        return path

    def command(self, target, files, refused=False, cert=None):
        env = {k: "" for k in os.environ
               if k.startswith(("GOOGLE_", "GCE_", "ACTIONS_", "CLOUDSDK_"))}
        url = self.url(refused)
        env.update({"HOME": self.tmp, "HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS":
                    (self.emu.url if target == "gcp_oauth" else url) + "/v1/",
                    "GCE_METADATA_HOST": "127.0.0.1:%d" % free_port(),
                    "GCP_TOKEN": test_gcp.TOKEN})
        if self.TARGETS[target]["sa"]:
            cred = ["--gcp-credentials", self.sa_file(url + "/token")]
        else:
            cred = ["--gcp-access-token", "env:GCP_TOKEN"]
        return ([HSMSIGN, "sign", "--gcp-kms-key", test_gcp.key("rsa"),
                 "--cert", cert or pki("leaf-rsa2048-chain.pem"), *cred,
                 *self.common(), *files], env)

    def test_gcp_kms_signature_not_base64(self):
        self.content_case("gcp_kms", {"bad_b64_next": 1}, 2, BAD_BASE64)

    def test_gcp_kms_signature_does_not_verify(self):
        self.content_case("gcp_kms", {"corrupt_next": 1}, 2, NO_VERIFY)

    def test_gcp_kms_certificate_of_another_key(self):
        self.content_case("gcp_kms", {}, None, NOT_ITS_KEY,
                          cert=pki("leaf-rsa3072-chain.pem"))

    def test_gcp_token_expires_mid_batch_service_account_refreshes(self):
        r, elapsed, files, _ = self.expiry_case("gcp_oauth")
        self.assertRc(r, 0)
        self.assertLess(elapsed, BOUND)
        self.assertNoSecrets(r)
        self.assertGreaterEqual(len(self.emu.calls("oauth", 200)), 2)

    def test_gcp_fixed_token_expires_mid_batch_fails_clearly(self):
        r, elapsed, files, before = self.expiry_case("gcp_kms")
        # The token dies after two uses and a fixed token cannot be
        # renewed: the batch stops; files signed before stay valid, the
        # others untouched.
        self.assertIn(r.returncode, (1, 2))
        signed = [f for f in files if sha256_file(f) != before[f]]
        for f in signed:
            self.assertRc(run([HSMSIGN, "verify", "--ca-file", ROOT_CA, f]), 0)
        self.assertFault("gcp_kms", "expire", r, elapsed,
                         {f: sha256_file(f) for f in files}, rc=r.returncode,
                         what="401|authenticat|credential|token", batch=True)


@add_table
class TestVaultFaults(CloudFaultCase):
    emulator_class = VaultEmulator
    emu_config = staticmethod(test_vault_transit.emu_config)
    TARGETS = {"vault": {"service": "Vault", "rc": 2, "rc_refused": 87,
                         "paths": ["/v1/transit/sign"]}}

    def secrets(self):
        return [test_vault_transit.TOKEN]

    def command(self, target, files, refused=False, cert=None):
        env = {k: "" for k in os.environ if k.startswith(("VAULT_",
                                                          "ACTIONS_"))}
        env.update({"HOME": self.tmp, "VAULT_ADDR": self.url(refused),
                    "HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "VAULT_TOKEN": test_vault_transit.TOKEN})
        return ([HSMSIGN, "sign", "--vault-transit-key", "codesign",
                 "--cert", cert or pki("leaf-rsa2048-chain.pem"),
                 *self.common(), *files], env)

    def test_vault_signature_not_base64(self):
        self.content_case("vault", {"bad_b64_next": 1}, 2, BAD_BASE64)

    def test_vault_signature_does_not_verify(self):
        self.content_case("vault", {"corrupt_next": 1}, 2, NO_VERIFY)

    def test_vault_certificate_of_another_key(self):
        # Checked against the key's public key when the key is opened.
        self.content_case("vault", {}, 87, NOT_ITS_KEY,
                          cert=pki("leaf-rsa3072-chain.pem"))

    def test_vault_static_token_expires_mid_batch_fails_clearly(self):
        """A static token cannot be renewed: the batch stops with the
        vault's refusal; files signed before stay valid, the rest
        untouched."""
        r, elapsed, files, before = self.expiry_case("vault")
        self.assertIn(r.returncode, (1, 2))
        for f in files:
            if sha256_file(f) != before[f]:
                self.assertRc(run([HSMSIGN, "verify", "--ca-file", ROOT_CA,
                                   f]), 0)
        self.assertFault("vault", "expire", r, elapsed,
                         {f: sha256_file(f) for f in files}, rc=r.returncode,
                         what="denied|403", batch=True)


@add_table
class TestTrustedSigningFaults(CloudFaultCase):
    emulator_class = TrustedEmulator
    emu_config = staticmethod(test_trusted_signing.emu_config)
    # The signing chain comes with a signature, so opening the key signs
    # once: a fault on the first sign request exits 87.
    TARGETS = {"trusted_signing": {
        "service": "Trusted Signing|trusted-signing", "rc": 87,
        "paths": ["/codesigningaccounts/"]}}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tsa = Tsa().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.tsa.__exit__(None, None, None)
        super().tearDownClass()

    def secrets(self):
        return [test_trusted_signing.SECRET]

    def command(self, target, files, refused=False, cert=None):
        env = {k: "" for k in os.environ
               if k.startswith(("AZURE_", "ACTIONS_", "IDENTITY_", "MSI_"))}
        env.update({"HOME": self.tmp, "HSMSIGN_HTTP_BACKOFF_MS": "5",
                    "AZURE_AUTHORITY_HOST": self.emu.url,
                    "AZURE_CLI_PATH": os.path.join(self.tmp, "no-az"),
                    "IMDS_ENDPOINT": "http://127.0.0.1:%d" % free_port(),
                    "TS_SECRET": test_trusted_signing.SECRET})
        return ([HSMSIGN, "sign", "--trusted-signing-endpoint",
                 self.url(refused), "--trusted-signing-account", "contoso",
                 "--trusted-signing-profile", "public-trust",
                 "-kvi", test_trusted_signing.CLIENT,
                 "-kvt", test_trusted_signing.TENANT, "-kvs", "env:TS_SECRET",
                 "-tr", self.tsa.url("ok"), *self.common(), *files], env)

    def ca(self):
        return ROOT_CA

    def verify_args(self):
        return ["--tsa-ca-file", self.tsa.root]

    def test_trusted_signing_signature_not_base64(self):
        self.content_case("trusted_signing", {"bad_b64_next": 1}, 87,
                          BAD_BASE64)

    def test_trusted_signing_signature_does_not_verify(self):
        # The first sign (opening the key) is not embedded; the second is.
        self.content_case("trusted_signing", {"corrupt_next": 2}, 2,
                          NO_VERIFY)

    def test_trusted_signing_certificate_of_another_key(self):
        self.content_case("trusted_signing", {"wrong_chain": True}, 2,
                          NOT_ITS_KEY)

    def test_trusted_signing_token_expires_mid_batch_refreshes(self):
        r, elapsed, files, _ = self.expiry_case("trusted_signing")
        self.assertRc(r, 0)
        self.assertLess(elapsed, BOUND * 2)
        self.assertNoSecrets(r)
        self.assertGreaterEqual(len(self.emu.calls("token", 200)), 2)


if __name__ == "__main__":
    unittest.main()
