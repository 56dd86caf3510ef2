#!/usr/bin/python3
"""Local HashiCorp Vault emulator for hsmsign tests: the transit engine's
read-key and sign endpoints (prehashed, pkcs1v15/PSS, ASN.1 ECDSA, the
vault:vN: prefix, key versions), AppRole and JWT logins, and a GitHub
Actions OIDC token endpoint. Python stdlib + python3-cryptography.

Standalone:  /usr/bin/python3 vault_emu.py --config CONFIG.json  prints
{"url": ...} and serves until stdin closes. Tests: VaultEmulator(cfg).

Config: keys [{name, versions: [key_file, ...]}], mount (default
"transit"), tokens [...], approle {role_id, secret_id}, jwt {role,
audience}, github_request_token. Knobs: deny, throttle_next, sealed_next,
corrupt_next, bad_b64_next (a signature that is not base64), expire_after
(a token is refused after N uses), fault (emu_base.py).
"""
import base64
import json
import secrets
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

import emu_base

HASHES = {"sha1": hashes.SHA1, "sha2-256": hashes.SHA256,
          "sha2-384": hashes.SHA384, "sha2-512": hashes.SHA512}


class VaultError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def key_type(priv):
    if isinstance(priv, rsa.RSAPrivateKey):
        return "rsa-%d" % priv.key_size
    return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384",
            "secp521r1": "ecdsa-p521"}[priv.curve.name]


class State(emu_base.EmuState):
    def __init__(self, config):
        super().__init__()
        self.mount = config.get("mount", "transit")
        self.tokens = {t: "static" for t in config.get("tokens", [])}
        self.token_uses = {}
        self.approle = config.get("approle")
        self.jwt = config.get("jwt")
        self.gh_request_token = config.get("github_request_token")
        self.gh_tokens = {}
        self.keys = {}
        for k in config.get("keys", []):
            vs = []
            for path in k["versions"]:
                with open(path, "rb") as f:
                    vs.append(serialization.load_pem_private_key(f.read(), None))
            self.keys[k["name"]] = vs

    def issue(self, kind):
        tok = "hvs." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[tok] = kind
        return tok


class Handler(emu_base.EmuHandler):
    def send(self, status, obj, what, kind=None, req=None):
        self.send_json(status, obj, {"what": what, "status": status,
                                     "token_kind": kind, "request": req})

    def token_kind(self):
        tok = self.headers.get("X-Vault-Token", "")
        kind = self.st.tokens.get(tok)
        if kind is not None and emu_base.token_spent(
                self.st.lock, self.st.knobs, self.st.token_uses, tok):
            kind = None  # an expired token is refused like a bad one
        if kind is None:
            raise VaultError(403, "permission denied")
        return kind

    def handle_api(self, method):
        p = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else {}
        parts = p.path.split("/")
        what, kind = "unknown", None
        try:
            if p.path == "/github/token":
                return self.github(p)
            if self.st.knob("sealed_next"):
                raise VaultError(503, "Vault is sealed")
            if p.path.startswith("/v1/auth/"):
                what = "login"
                return self.login(parts[3], body)
            kind = self.token_kind()
            if self.st.knob("throttle_next"):
                raise VaultError(429, "request path \"%s\": rate limit quota "
                                 "exceeded" % p.path)
            m = "/v1/%s/" % self.st.mount
            rest = p.path[len(m):].split("/") if p.path.startswith(m) else []
            if method == "GET" and len(rest) == 2 and rest[0] == "keys":
                what, ans = "read", self.read_key(rest[1])
            elif method == "POST" and len(rest) in (2, 3) and rest[0] == "sign":
                what, ans = "sign", self.sign(rest[1], rest[2] if len(rest) == 3
                                              else body.get("hash_algorithm",
                                                            "sha2-256"), body)
            else:
                raise VaultError(404, "no handler for route \"%s\"" % p.path)
        except VaultError as e:
            return self.send(e.status, {"errors": [e.message]}, what, kind,
                             body)
        self.send(200, ans, what, kind, body)

    def do_GET(self):
        self.handle_api("GET")

    def do_POST(self):
        self.handle_api("POST")

    def versions(self, name):
        if name not in self.st.keys:
            raise VaultError(404, "encryption key not found")
        return self.st.keys[name]

    def read_key(self, name):
        vs = self.versions(name)
        keys = {}
        for i, priv in enumerate(vs, 1):
            keys[str(i)] = {"name": key_type(priv), "creation_time": "2025-01-01T00:00:00Z",
                            "public_key": priv.public_key().public_bytes(
                                serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo
                            ).decode()}
        return {"data": {"name": name, "type": key_type(vs[-1]),
                         "latest_version": len(vs), "min_decryption_version": 1,
                         "supports_signing": True, "keys": keys}}

    def sign(self, name, hash_name, req):
        vs = self.versions(name)
        if self.st.knobs.get("deny"):
            raise VaultError(403, "1 error occurred:\n\t* permission denied\n\n")
        ver = req.get("key_version") or len(vs)
        if not 1 <= ver <= len(vs):
            raise VaultError(400, "invalid key version")
        priv = vs[ver - 1]
        if hash_name not in HASHES:
            raise VaultError(400, "unsupported hash algorithm %s" % hash_name)
        h = HASHES[hash_name]()
        data = base64.b64decode(req.get("input", ""), validate=True)
        if not req.get("prehashed") or len(data) != h.digest_size:
            raise VaultError(400, "emulator: prehashed input of the hash size "
                             "expected")
        pre = utils.Prehashed(h)
        if isinstance(priv, rsa.RSAPrivateKey):
            if req.get("signature_algorithm", "pss") == "pkcs1v15":
                sig = priv.sign(data, padding.PKCS1v15(), pre)
            else:  # Vault's RSA default
                sig = priv.sign(data, padding.PSS(padding.MGF1(h),
                                                  padding.PSS.AUTO), pre)
        else:
            if req.get("marshaling_algorithm", "asn1") != "asn1":
                raise VaultError(400, "emulator: asn1 only")
            sig = priv.sign(data, ec.ECDSA(pre))
        if self.st.knob("corrupt_next"):
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        value = base64.b64encode(sig).decode()
        if self.st.knob("bad_b64_next"):
            value = emu_base.BAD_BASE64
        return {"data": {"signature": "vault:v%d:%s" % (ver, value),
                         "key_version": ver}}

    def login(self, mount, body):
        if mount == "approle" and self.st.approle:
            if body.get("role_id") != self.st.approle["role_id"] or \
                    body.get("secret_id") != self.st.approle["secret_id"]:
                return self.send(400, {"errors": ["invalid role or secret ID"]},
                                 "login")
            kind = "approle"
        elif mount == "jwt" and self.st.jwt:
            jwt = body.get("jwt", "")
            if body.get("role") != self.st.jwt["role"]:
                return self.send(400, {"errors": ["role \"%s\" could not be "
                                                  "found" % body.get("role")]},
                                 "login")
            if self.st.gh_tokens.get(jwt) != self.st.jwt["audience"]:
                return self.send(400, {"errors": [
                    "error validating token: invalid audience (aud) claim"]},
                                 "login")
            kind = "jwt"
        else:
            return self.send(404, {"errors": ["no handler for route"]}, "login")
        self.send(200, {"auth": {"client_token": self.st.issue(kind),
                                 "lease_duration": 3600, "renewable": True,
                                 "policies": ["codesign"]}}, "login", kind)

    def github(self, p):
        if self.headers.get("Authorization") != \
                "Bearer %s" % self.st.gh_request_token:
            return self.send(401, {}, "github")
        aud = (urllib.parse.parse_qs(p.query).get("audience") or
               ["https://github.com/org"])[0]
        jwt = "eyJhbGciOiJSUzI1NiJ9.%s.%s" % (
            base64.urlsafe_b64encode(json.dumps({"aud": aud}).encode())
            .rstrip(b"=").decode(), secrets.token_hex(8))
        with self.st.lock:
            self.st.gh_tokens[jwt] = aud
        self.send(200, {"count": 1, "value": jwt}, "github")


class Server(emu_base.EmuServer):
    handler, state_class = Handler, State


class VaultEmulator(emu_base.Emulator):
    server_class = Server


def main(argv=None):
    emu_base.serve_main(Server, __doc__, argv)


if __name__ == "__main__":
    main()
