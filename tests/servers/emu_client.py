"""Start/stop helpers for tests/servers/azure_emu.py (Python stdlib only).

    import sys; sys.path.insert(0, "<repo>/tests/servers")
    from emu_client import Emulator

    with Emulator(mode="vault", config={"knobs": {...}}) as emu:
        emu.info["https"], emu.info["tls_ca"], emu.env("secret") ...
        emu.config(throttle_next=2, throttle_retry_after=0)
        ... run hsmsign ...
        assert emu.count("GET", "/certificates/", bearer=True) == 1
        assert emu.count("POST", "/keys/", bearer=True, status=200) == n

The emulator is started with stdin as a pipe, so it exits by itself if this
process dies. Generated private keys are cached (HS_EMU_KEY_CACHE, default
$TMPDIR/hsmsign-emu-keys-<uid>) so that only the first start pays for RSA-4096.
"""
import base64
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import emu_base

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "azure_emu.py")
PYTHON = "/usr/bin/python3"


def default_key_cache():
    return os.environ.get("HS_EMU_KEY_CACHE") or os.path.join(
        tempfile.gettempdir(), "hsmsign-emu-keys-%d" % os.getuid())


class EmulatorError(RuntimeError):
    pass


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


class Emulator:
    """Context manager running one emulator instance.

    mode: "vault" or "managedhsm". config: a dict (written to a file) or the
    path of a CONFIG.json. state_dir: defaults to a fresh temporary directory
    that is removed on exit (kept if keep=True)."""

    def __init__(self, mode="vault", config=None, state_dir=None,
                 key_cache=None, keep=False, start_timeout=120):
        self.mode = mode
        self._config = config
        self._own_dir = state_dir is None
        self.dir = state_dir or tempfile.mkdtemp(prefix="hsmsign-emu-")
        self.key_cache = key_cache if key_cache is not None \
            else default_key_cache()
        self.keep = keep
        self.start_timeout = start_timeout
        self.proc = None
        self.info = None
        self._ctx = None

    # ---------------------------------------------------------- lifecycle
    def start(self):
        cmd = [PYTHON, EMULATOR, "--state-dir", os.path.join(self.dir, "emu"),
               "--mode", self.mode]
        if self._config is not None:
            path = self._config
            if isinstance(self._config, dict):
                path = os.path.join(self.dir, "emu-config.json")
                with open(path, "w") as f:
                    json.dump(self._config, f)
            cmd += ["--config", path]
        if self.key_cache:
            cmd += ["--key-cache", self.key_cache]
        self._stderr = open(os.path.join(self.dir, "emu-stderr.txt"), "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        line = emu_base.read_ready_line(self.proc, self.start_timeout)
        if not line:
            self.stop()
            raise EmulatorError("emulator did not start: %s" %
                                self.stderr_text()[-2000:])
        self.info = json.loads(line)
        self._ctx = ssl.create_default_context(cafile=self.info["tls_ca"])
        return self

    def stop(self):
        if self.proc is not None:
            emu_base.stop_child(self.proc)
            self.proc = None
            self._stderr.close()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stderr_text(self):
        try:
            with open(os.path.join(self.dir, "emu-stderr.txt"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------ convenience
    @property
    def url(self):
        return self.info["https"]

    @property
    def http_url(self):
        return self.info["http"]

    @property
    def ca(self):
        return self.info["tls_ca"]

    @property
    def tenant(self):
        return self.info["tenant"]

    def path(self, *names):
        """A file in the emulator's state directory, e.g. path("az")."""
        return os.path.join(self.info["state_dir"], *names)

    def read(self, name):
        with open(self.path(name)) as f:
            return f.read().strip()

    def leaf(self, key, chain=False):
        """PEM path of the leaf certificate of a vault key (with the
        intermediate appended if chain=True)."""
        return os.path.join(self.info["pki_dir"],
                            key + ("-chain.pem" if chain else ".pem"))

    def key_url(self, key):
        return "%s/keys/%s" % (self.url, key)

    def env(self, credential="secret"):
        """Environment variables (Azure SDK names) selecting one credential
        source against this emulator. credential: secret, certificate,
        nosign, github, workload (needs a token file: see github_token),
        appservice, imds, cli."""
        i = self.info
        ids = i["identities"]
        base = {"AZURE_AUTHORITY_HOST": i["authority_host"],
                "AZURE_TENANT_ID": i["tenant"], "SSL_CERT_FILE": i["tls_ca"]}
        if credential == "secret":
            base.update(AZURE_CLIENT_ID=ids["secret"],
                        AZURE_CLIENT_SECRET=self.read("client-secret.txt"))
        elif credential == "nosign":
            base.update(AZURE_CLIENT_ID=ids["nosign"],
                        AZURE_CLIENT_SECRET=self.read(
                            "client-secret-nosign.txt"))
        elif credential == "certificate":
            base.update(AZURE_CLIENT_ID=ids["certificate"],
                        AZURE_CLIENT_CERTIFICATE_PATH=i["client_cert"])
        elif credential == "github":
            base.update(AZURE_CLIENT_ID=ids["federated"],
                        ACTIONS_ID_TOKEN_REQUEST_URL=i["github_token_url"],
                        ACTIONS_ID_TOKEN_REQUEST_TOKEN=self.read(
                            "github-request-token.txt"))
        elif credential == "workload":
            base.update(AZURE_CLIENT_ID=ids["federated"])
        elif credential == "appservice":
            base = {"IDENTITY_ENDPOINT": i["identity_endpoint"],
                    "IDENTITY_HEADER": self.read("identity-header.txt"),
                    "SSL_CERT_FILE": i["tls_ca"]}
        elif credential == "imds":
            base = {"IMDS_ENDPOINT": i["imds_endpoint"],
                    "SSL_CERT_FILE": i["tls_ca"]}
        elif credential == "cli":
            base = {"AZURE_CLI_PATH": i["az"], "SSL_CERT_FILE": i["tls_ca"]}
        else:
            raise ValueError(credential)
        return base

    # ------------------------------------------------------------- HTTP
    def request(self, method, url, body=None, headers=None, token=None,
                timeout=30):
        """Raw HTTP(S) request; url may be a path on the https port.
        body: bytes, str, or a dict (sent as JSON). Never raises on status."""
        if url.startswith("/"):
            url = self.url + url
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        if token:
            headers["Authorization"] = "Bearer " + token
        req = urllib.request.Request(url, data=body, method=method,
                                     headers=headers)
        ctx = self._ctx if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(req, context=ctx,
                                        timeout=timeout) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def _control(self, method, path, body=None):
        r = self.request(method, "/_emu/" + path, body)
        if r.status != 200:
            raise EmulatorError("%s /_emu/%s: %r" % (method, path, r))
        return r.json()

    def log(self):
        """All request log entries since start (or the last reset)."""
        return self._control("GET", "log")

    def config(self, **knobs):
        """Sets knobs (README: Knobs); returns all current knob values."""
        return self._control("POST", "config", knobs)

    def reset(self):
        """Clears the request log and restores the start-up knobs."""
        return self._control("POST", "reset", {})

    def count(self, method, path_prefix, status=None, bearer=None):
        """Number of logged requests with this method and path prefix;
        optionally only those with this status / with(out) a bearer token.
        The 401 challenge probe of a client is logged too (bearer False)."""
        n = 0
        for e in self.log():
            if e["method"] == method and e["path"].startswith(path_prefix) \
                    and (status is None or e["status"] == status) \
                    and (bearer is None or e["bearer"] == bearer):
                n += 1
        return n

    def mint_federated(self, sub=None, aud="api://AzureADTokenExchange",
                       iss=None, lifetime=300):
        """A federated JWT signed by the emulator's "GitHub" key, with any
        subject/issuer/audience/lifetime (negative = already expired)."""
        req = {"aud": aud, "lifetime": lifetime}
        if sub is not None:
            req["sub"] = sub
        if iss is not None:
            req["iss"] = iss
        return self._control("POST", "mint", req)["value"]

    def token(self, client_id=None, secret=None, resource=None, **form):
        """Client-credentials token from the emulator's Entra endpoint
        (default: the client-secret identity for the emulator's resource).
        Returns the Response; .json()["access_token"] on success."""
        data = {"grant_type": "client_credentials",
                "client_id": client_id or self.info["identities"]["secret"],
                "scope": (resource or self.info["resource"]) + "/.default"}
        if secret is None and not form:
            secret = self.read("client-secret.txt")
        if secret is not None:
            data["client_secret"] = secret
        data.update(form)
        return self.request(
            "POST", "/%s/oauth2/v2.0/token" % self.tenant,
            urllib.parse.urlencode(data),
            {"Content-Type": "application/x-www-form-urlencoded"})

    def access_token(self, **kw):
        r = self.token(**kw)
        if r.status != 200:
            raise EmulatorError("token request failed: %r" % r)
        return r.json()["access_token"]


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SharedEmulator:
    """unittest mixin: one Emulator for the test class (MODE, CONFIG),
    reset before each test; sets emu, info and state (its state dir).
    Put it before the TestCase base: class T(SharedEmulator, HsTestCase)."""

    MODE = "vault"
    CONFIG = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu = Emulator(mode=cls.MODE, config=cls.CONFIG).__enter__()
        cls.info = cls.emu.info
        cls.state = os.path.dirname(cls.info["tls_ca"])

    @classmethod
    def tearDownClass(cls):
        cls.emu.__exit__(None, None, None)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.emu.reset()
