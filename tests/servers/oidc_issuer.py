#!/usr/bin/python3
"""Local OpenID Connect issuer for `hsmsign serve` tests: discovery, JWKS with
key rotation, token minting with chosen claims, times, keys and algorithms,
and a GitHub Actions OIDC token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN).
Python stdlib + python3-cryptography; listens on 127.0.0.1 only.

Standalone:  /usr/bin/python3 oidc_issuer.py [--config CONFIG.json]  prints
one JSON line {"url", "issuer", "jwks_uri", "github_token_url",
"github_request_token"} and serves until stdin closes.
Tests:       with OidcIssuer(cfg) as iss: iss.mint(...), iss.rotate(), ...

Config (all optional):
  issuer            the "iss" of minted tokens and of the discovery document;
                    default the server's own URL (so discovery works). Another
                    value (e.g. GitHub's) needs jwks_uri configured on the
                    verifier.
  keys              [{"kid": "k1", "type": "rsa2048"|"rsa3072"|"ec256"|"ec384"}],
                    default one RSA-2048 key; the first signs.
  claims            overrides of the default GitHub-shaped claims
  default_audience  "aud" of the token endpoint without ?audience=
  lifetime          token lifetime in seconds (300)
  github_request_token  the request token (default random)
  tls               {"cert": PEM, "key": PEM}: serve HTTPS instead of HTTP
  jwks_max_age      Cache-Control max-age of the JWKS (3600)

Endpoints:
  GET  /.well-known/openid-configuration
  GET  /.well-known/jwks
  GET  /_github/token?api-version=2.0&audience=A   (Authorization: Bearer <request token>)
                    → {"count": 1, "value": JWT}; 401 {"message"} otherwise
  POST /_emu/mint   body: the keyword arguments of OidcIssuer.mint → {"value": JWT}
  POST /_emu/rotate body: {"type": "rsa2048", "drop_old": false} → {"kid": NEW}
  POST /_emu/config body: {"claims": {...}, "lifetime": N, "github_mint": {...}}
  GET  /_emu/log    requests served: [{"what", "status", "path"}]
"""
import argparse
import base64
import json
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

import emu_base

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
CURVES = {"ec256": (ec.SECP256R1, "P-256", 32), "ec384": (ec.SECP384R1, "P-384", 48),
          "ec521": (ec.SECP521R1, "P-521", 66)}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def new_key(kind):
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    return ec.generate_private_key(CURVES[kind][0]())


def default_alg(priv):
    if isinstance(priv, rsa.RSAPrivateKey):
        return "RS256"
    return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[
        _curve(priv)[1]]


def _curve(priv):
    for kind, (cls, name, size) in CURVES.items():
        if isinstance(priv.curve, cls):
            return kind, name, size
    raise ValueError("unsupported curve")


def jwk(priv, kid):
    pub = priv.public_key().public_numbers()
    if isinstance(priv, rsa.RSAPrivateKey):
        return {"kty": "RSA", "use": "sig", "kid": kid, "alg": "RS256",
                "n": _int_b64(pub.n), "e": _int_b64(pub.e)}
    _, crv, size = _curve(priv)
    return {"kty": "EC", "use": "sig", "kid": kid, "crv": crv,
            "x": b64url(pub.x.to_bytes(size, "big")),
            "y": b64url(pub.y.to_bytes(size, "big"))}


def sign_jws(priv, alg, header, claims):
    """Compact JWS of claims (a dict, or raw bytes) with header under alg."""
    body = claims if isinstance(claims, bytes) else \
        json.dumps(claims, separators=(",", ":")).encode()
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode())
                     + "." + b64url(body)).encode()
    if alg == "none":
        return signing_input.decode() + "."
    h = HASHES[alg[2:]]()
    if alg.startswith("RS"):
        sig = priv.sign(signing_input, padding.PKCS1v15(), h)
    elif alg.startswith("PS"):
        sig = priv.sign(signing_input, padding.PSS(padding.MGF1(h), h.digest_size), h)
    elif alg.startswith("ES"):
        r, s = utils.decode_dss_signature(priv.sign(signing_input, ec.ECDSA(h)))
        size = _curve(priv)[2]
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif alg.startswith("HS"):      # a forgery attempt: "secret" = the public JWK
        import hmac
        sig = hmac.new(json.dumps(jwk(priv, "x")).encode(), signing_input,
                       h.name).digest()
    else:
        raise ValueError("alg " + alg)
    return signing_input.decode() + "." + b64url(sig)


class State(emu_base.EmuState):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.keys = []          # [(kid, private key)], first signs
        for k in config.get("keys") or [{"kid": "k1", "type": "rsa2048"}]:
            self.keys.append((k["kid"], new_key(k.get("type", "rsa2048"))))
        self.outsider = new_key("rsa2048")   # never published: forgeries
        self.claims = dict(config.get("claims") or {})
        self.lifetime = int(config.get("lifetime", 300))
        self.default_audience = config.get("default_audience",
                                           "https://github.com/acme")
        self.request_token = config.get("github_request_token") or \
            secrets.token_urlsafe(24)
        self.github_mint = {}   # extra mint() arguments of the token endpoint
        self.issuer = None      # set by the server once it knows its URL

    def base_claims(self, aud, lifetime, nbf_offset, iat_offset):
        t = int(time.time())
        c = {
            "jti": str(uuid.uuid4()),
            "sub": "repo:acme/app:ref:refs/heads/main",
            "aud": aud, "ref": "refs/heads/main", "sha": secrets.token_hex(20),
            "repository": "acme/app", "repository_owner": "acme",
            "repository_id": "74", "repository_owner_id": "65",
            "repository_visibility": "private",
            "actor": "octocat", "actor_id": "12", "run_id": "1001",
            "run_number": "7", "run_attempt": "1",
            "runner_environment": "github-hosted", "workflow": "release",
            "event_name": "push", "ref_type": "branch", "ref_protected": "true",
            "environment": "release",
            "job_workflow_ref":
                "acme/app/.github/workflows/release.yml@refs/heads/main",
            "iss": self.issuer,
            "iat": t + iat_offset, "nbf": t + nbf_offset, "exp": t + lifetime,
        }
        c.update(self.claims)
        return c

    def mint(self, claims=None, drop=(), aud=None, lifetime=None, nbf_offset=-5,
             iat_offset=-5, kid=None, alg=None, header=None, forge=False,
             raw_payload=None):
        """A token: default claims + claims, minus drop; kid names the
        signing key (default the current one); forge signs with a key that
        is not in the JWKS; header entries are merged into the JWS header."""
        with self.lock:
            keys = dict(self.keys)
            kid = kid or self.keys[0][0]
            c = self.base_claims(aud or self.default_audience,
                                 self.lifetime if lifetime is None else lifetime,
                                 nbf_offset, iat_offset)
        c.update(claims or {})
        for name in drop:
            c.pop(name, None)
        priv = keys.get(kid) or self.outsider
        if forge:
            priv = self.outsider if isinstance(priv, rsa.RSAPrivateKey) \
                else new_key(_curve(priv)[0])
        alg = alg or default_alg(keys.get(kid) or self.outsider)
        h = {"alg": alg, "typ": "JWT", "kid": kid}
        h.update(header or {})
        return sign_jws(priv, alg, h, raw_payload.encode()
                        if raw_payload is not None else c)

    def rotate(self, kind="rsa2048", drop_old=False):
        kid = "k-" + secrets.token_hex(4)
        priv = new_key(kind)
        with self.lock:
            self.keys = [(kid, priv)] + ([] if drop_old else self.keys)
        return kid

    def jwks(self):
        with self.lock:
            return {"keys": [jwk(p, k) for k, p in self.keys]}


class Handler(emu_base.EmuHandler):
    def send(self, status, obj, what, headers=()):
        data = json.dumps(obj).encode()
        with self.st.lock:
            self.st.log.append({"what": what, "status": status,
                                "path": self.path})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        base = self.server.url
        if u.path == "/.well-known/openid-configuration":
            return self.send(200, {
                "issuer": self.st.issuer, "jwks_uri": base + "/.well-known/jwks",
                "subject_types_supported": ["public", "pairwise"],
                "response_types_supported": ["id_token"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti",
                                     "nbf", "ref", "repository", "environment"],
                "scopes_supported": ["openid"]}, "discovery")
        if u.path == "/.well-known/jwks":
            return self.send(200, self.st.jwks(), "jwks", [
                ("Cache-Control", "max-age=%d" % int(
                    self.st.config.get("jwks_max_age", 3600)))])
        if u.path == "/_github/token":
            auth = self.headers.get("Authorization") or ""
            if auth != "Bearer " + self.st.request_token:
                return self.send(401, {"message": "Bad credentials"}, "github")
            aud = (q.get("audience") or [self.st.default_audience])[0]
            with self.st.lock:
                extra = dict(self.st.github_mint)
            extra.setdefault("aud", aud)
            return self.send(200, {"count": 1, "value": self.st.mint(**extra)},
                             "github")
        if u.path == "/_emu/log":
            with self.st.lock:
                return self.send(200, list(self.st.log), "control")
        return self.send(404, {"message": "Not Found"}, "unknown")

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        try:
            req = json.loads(self.body() or b"{}")
        except ValueError:
            return self.send(400, {"message": "bad JSON"}, "control")
        if u.path == "/_emu/mint":
            return self.send(200, {"value": self.st.mint(**req)}, "control")
        if u.path == "/_emu/rotate":
            kid = self.st.rotate(req.get("type", "rsa2048"),
                                 bool(req.get("drop_old")))
            return self.send(200, {"kid": kid}, "control")
        if u.path == "/_emu/config":
            with self.st.lock:
                if "claims" in req:
                    self.st.claims = dict(req["claims"])
                if "lifetime" in req:
                    self.st.lifetime = int(req["lifetime"])
                if "github_mint" in req:
                    self.st.github_mint = dict(req["github_mint"])
            return self.send(200, {}, "control")
        return self.send(404, {"message": "Not Found"}, "unknown")


class Server(emu_base.EmuServer):
    handler, state_class = Handler, State

    def __init__(self, config):
        super().__init__(config)
        tls = config.get("tls")
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            self.socket = ctx.wrap_socket(self.socket, server_side=True)
            self.url = "https://127.0.0.1:%d" % self.server_address[1]
        self.state.issuer = config.get("issuer") or self.url


class OidcIssuer(emu_base.Emulator):
    """with OidcIssuer(cfg) as iss: iss.issuer, iss.jwks_uri, iss.mint(...)."""

    server_class = Server

    def __init__(self, config=None):
        super().__init__(config or {})
        self.issuer = self.state.issuer
        self.jwks_uri = self.url + "/.well-known/jwks"
        self.github_token_url = self.url + "/_github/token?api-version=2.0"
        self.github_request_token = self.state.request_token

    def mint(self, **kw):
        return self.state.mint(**kw)

    def rotate(self, kind="rsa2048", drop_old=False):
        return self.state.rotate(kind, drop_old)

    def github_env(self):
        """The environment a GitHub Actions job with id-token: write has."""
        return {"ACTIONS_ID_TOKEN_REQUEST_URL": self.github_token_url,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.github_request_token}

    def github_mint(self, **kw):
        """What the token endpoint mints from now on (mint() arguments)."""
        with self.state.lock:
            self.state.github_mint = dict(kw)

    def fetches(self, what="jwks"):
        return len(self.calls(what))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    config = {}
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    server = Server(config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"url": server.url, "issuer": server.state.issuer,
                      "jwks_uri": server.url + "/.well-known/jwks",
                      "github_token_url":
                          server.url + "/_github/token?api-version=2.0",
                      "github_request_token": server.state.request_token}),
          flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
