#!/usr/bin/python3
"""Local Azure Trusted Signing (Artifact Signing) emulator for hsmsign
tests: the sign endpoint in both path spellings (/sign and :sign), 202 +
polling until a terminal status in the flat and the nested ("result")
body shapes, the chain as base64 of CRLF-wrapped base64 of a certs-only
PKCS#7, both error shapes, and a minimal Entra ID token endpoint (client
credentials) for scope https://codesigning.azure.net/.default. Python
stdlib + python3-cryptography.

Standalone:  /usr/bin/python3 trusted_emu.py --config CONFIG.json
Tests: TrustedEmulator(cfg). Config: account, profile, client_id,
client_secret, key_file, chain [PEM files, leaf first], rotated_key_file,
rotated_chain. Knobs: polls (InProgress answers before the result),
nested, colon_only, deny, fail_op, rotate, throttle_next, corrupt_next (a
signature with one bit flipped), bad_b64_next (a signature that is not
base64), wrong_chain (the rotated chain with the first key's signature),
expire_after (a token is refused after N sign requests), fault
(emu_base.py).
"""
import base64
import json
import secrets
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils
from cryptography.hazmat.primitives.serialization import pkcs7

import emu_base

SCOPE = "https://codesigning.azure.net/.default"
ALGS = {"RS256": hashes.SHA256, "RS384": hashes.SHA384,
        "RS512": hashes.SHA512}


def load_identity(key_file, chain_files):
    with open(key_file, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    certs = []
    for path in chain_files:
        with open(path, "rb") as f:  # one certificate per file
            certs.append(x509.load_pem_x509_certificate(f.read()))
    # Shuffled on purpose: clients must find the leaf, not assume order.
    der = pkcs7.serialize_certificates(certs[::-1], serialization.Encoding.DER)
    inner = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return key, base64.b64encode(inner).decode()


class State(emu_base.EmuState):
    def __init__(self, config):
        super().__init__()
        self.ops = {}
        self.cfg = config
        self.tokens = set()
        self.token_uses = {}
        self.identity = load_identity(config["key_file"], config["chain"])
        self.rotated = load_identity(config["rotated_key_file"],
                                     config["rotated_chain"]) \
            if config.get("rotated_key_file") else None
        self.signed = 0


class Handler(emu_base.EmuHandler):
    def send(self, status, obj, what):
        self.send_json(status, obj, {"what": what, "status": status,
                                     "path": self.path})

    def error(self, status, code, message, what, legacy=False):
        body = {"errorDetail": {"code": code, "message": message,
                                "target": None}} if legacy else \
            {"error": {"code": code, "message": message, "details": []}}
        self.send(status, body, what)

    def do_POST(self):
        p = urllib.parse.urlsplit(self.path)
        body = self.body()
        if p.path.endswith("/oauth2/v2.0/token"):
            return self.token(body)
        prefix = "/codesigningaccounts/%s/certificateprofiles/%s" % (
            self.st.cfg["account"], self.st.cfg["profile"])
        if p.path == prefix + "/sign" and self.st.knobs.get("colon_only"):
            return self.error(404, "NotFound", "no such route", "sign")
        if p.path in (prefix + "/sign", prefix + ":sign"):
            return self.submit(p, json.loads(body))
        self.error(404, "NotFound", "unknown account or profile", "sign")

    def do_GET(self):
        p = urllib.parse.urlsplit(self.path)
        prefix = "/codesigningaccounts/%s/certificateprofiles/%s/sign/" % (
            self.st.cfg["account"], self.st.cfg["profile"])
        if not p.path.startswith(prefix):
            return self.error(404, "NotFound", "unknown route", "poll")
        if not self.authorized():
            return self.error(401, "Unauthorized", "bad token", "poll")
        op = self.st.ops.get(p.path[len(prefix):])
        if op is None:
            return self.error(404, "NotFound", "unknown operation", "poll")
        with self.st.lock:
            op["polls"] -= 1
        if op["polls"] >= 0:
            return self.send(200, self.shape(op["id"], "InProgress"), "poll")
        self.send(200, self.shape(op["id"], op["final"], op.get("sig"),
                                  op.get("chain")), "poll")

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.st.tokens

    def token(self, body):
        f = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        if f.get("client_id") != self.st.cfg["client_id"] or \
                f.get("client_secret") != self.st.cfg["client_secret"]:
            return self.send(401, {"error": "invalid_client",
                                   "error_description": "AADSTS7000215: "
                                   "Invalid client secret provided."}, "token")
        if f.get("scope") != SCOPE:
            return self.send(400, {"error": "invalid_scope",
                                   "error_description": "bad scope %s" %
                                   f.get("scope")}, "token")
        tok = secrets.token_urlsafe(32)
        with self.st.lock:
            self.st.tokens.add(tok)
        self.send(200, {"access_token": tok, "expires_in": 3599,
                        "token_type": "Bearer"}, "token")

    def shape(self, op_id, status, sig=None, chain=None):
        flat = {"operationId": op_id, "status": status, "signature": sig,
                "signingCertificate": chain}
        if self.st.knobs.get("nested"):
            return {"id": op_id, "status": status, "result": flat}
        return flat

    def submit(self, p, req):
        if not self.authorized():
            return self.error(401, "Unauthorized", "bad token", "sign")
        tok = self.headers.get("Authorization", "")[7:]
        if emu_base.token_spent(self.st.lock, self.st.knobs,
                                self.st.token_uses, tok):
            with self.st.lock:
                self.st.tokens.discard(tok)
            return self.error(401, "Unauthorized", "token expired", "sign")
        if urllib.parse.parse_qs(p.query).get("api-version") is None:
            return self.error(400, "MissingApiVersion", "api-version", "sign")
        if self.st.knob("throttle_next"):
            return self.error(429, "TooManyRequests", "slow down", "sign")
        if self.st.knobs.get("deny"):
            return self.error(403, "InternalError", "Response status code does "
                              "not indicate success: 403 (Forbidden).", "sign",
                              legacy=True)
        alg = req.get("signatureAlgorithm")
        digest = base64.b64decode(req.get("digest", ""), validate=True)
        if alg not in ALGS or len(digest) != ALGS[alg].digest_size:
            return self.error(400, "BadRequest", "bad algorithm or digest",
                              "sign")
        with self.st.lock:
            self.st.signed += 1
            n = self.st.signed
        key, chain = self.st.rotated if (
            self.st.knobs.get("rotate") and n > 1) else self.st.identity
        sig = key.sign(digest, padding.PKCS1v15(),
                       utils.Prehashed(ALGS[alg]()))
        if self.st.knob("corrupt_next"):
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        if self.st.knobs.get("wrong_chain"):
            chain = self.st.rotated[1]
        op = {"id": secrets.token_hex(8), "polls": self.st.knobs.get("polls", 2),
              "final": "Failed" if self.st.knobs.get("fail_op") else "Succeeded",
              "sig": base64.b64encode(sig).decode(), "chain": chain}
        if self.st.knob("bad_b64_next"):
            op["sig"] = emu_base.BAD_BASE64
        if op["final"] != "Succeeded":
            op["sig"] = op["chain"] = None
        with self.st.lock:
            self.st.ops[op["id"]] = op
        self.send(202, self.shape(op["id"], "InProgress"), "sign")


class Server(emu_base.EmuServer):
    handler, state_class = Handler, State


class TrustedEmulator(emu_base.Emulator):
    server_class = Server


def main(argv=None):
    emu_base.serve_main(Server, __doc__, argv)


if __name__ == "__main__":
    main()
