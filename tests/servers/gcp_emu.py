#!/usr/bin/python3
"""Local Google Cloud emulator for hsmsign tests: Cloud KMS REST
(cryptoKeyVersions list, publicKey, asymmetricSign with CRC32C checks both
ways), the OAuth token endpoint (JWT bearer grant from a service-account
key, signature verified), STS token exchange (workload identity
federation), IAM Credentials generateAccessToken, the metadata server and a
GitHub Actions OIDC token endpoint. Python stdlib + python3-cryptography.

Standalone:  /usr/bin/python3 gcp_emu.py --config CONFIG.json  prints
{"url": ...} and serves until stdin closes. Tests: GcpEmulator(cfg).

Config: keys [{name, versions: [{state, key_file, algorithm}]}],
service_account {email, key_file}, wif_provider, github_request_token,
access_tokens [...]. Knobs (GcpEmulator.knobs): throttle_next,
fail_next_500, corrupt_crc, unverified, deny, corrupt_next (a signature
with one bit flipped, CRC32C matching), bad_b64_next (a signature that is
not base64), expire_after (every access token is refused after N KMS
calls), fault (emu_base.py).
"""
import base64
import datetime
import gzip
import hashlib
import json
import secrets
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

import emu_base

GH_PREFIX = "https://iam.googleapis.com/"
DIGEST_INFO = {  # DER prefixes of DigestInfo (RFC 8017 section 9.2 note 1)
    bytes.fromhex("3021300906052b0e03021a05000414"): hashes.SHA1,
    bytes.fromhex("3031300d060960864801650304020105000420"): hashes.SHA256,
    bytes.fromhex("3041300d060960864801650304020205000430"): hashes.SHA384,
    bytes.fromhex("3051300d060960864801650304020305000440"): hashes.SHA512,
}
HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
          "sha512": hashes.SHA512}


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class GcpError(Exception):
    def __init__(self, code, status, message):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


class State(emu_base.EmuState):
    def __init__(self, config):
        super().__init__()
        self.tokens = {t: "fixed" for t in config.get("access_tokens", [])}
        self.token_uses = {}
        self.federated = set()
        self.gh_tokens = set()
        self.wif = config.get("wif_provider")
        self.gh_request_token = config.get("github_request_token")
        self.sa = config.get("service_account")
        if self.sa:
            with open(self.sa["key_file"], "rb") as f:
                self.sa_pub = serialization.load_pem_private_key(
                    f.read(), None).public_key()
        self.versions = {}
        self.keys = {}
        self.attestation_chain = []
        for path in config.get("attestation_chain", []):
            with open(path) as f:
                self.attestation_chain.append(f.read())
        for k in config.get("keys", []):
            self.keys[k["name"]] = []
            for i, v in enumerate(k["versions"], 1):
                with open(v["key_file"], "rb") as f:
                    priv = serialization.load_pem_private_key(f.read(), None)
                name = "%s/cryptoKeyVersions/%d" % (k["name"], i)
                self.versions[name] = {"name": name, "priv": priv,
                                       "state": v.get("state", "ENABLED"),
                                       "algorithm": v["algorithm"],
                                       "level": v.get("protection", "HSM")}
                self.keys[k["name"]].append(name)

    def issue(self, kind):
        tok = "ya29." + secrets.token_urlsafe(40)
        with self.lock:
            self.tokens[tok] = kind
        return tok


class Handler(emu_base.EmuHandler):
    def send(self, status, obj, what, kind=None):
        self.send_json(status, obj, {"what": what, "status": status,
                                     "token_kind": kind, "body": obj})

    def gerror(self, e, what):
        self.send(e.code, {"error": {"code": e.code, "message": e.message,
                                     "status": e.status}}, what)

    def do_GET(self):
        p = urllib.parse.urlsplit(self.path)
        if p.path == "/github/token":
            return self.github(p)
        if p.path.startswith("/computeMetadata/"):
            return self.metadata(p.path)
        if p.path.startswith("/v1/"):
            return self.kms("GET", p, b"")
        self.send(404, {}, "unknown")

    def do_POST(self):
        p = urllib.parse.urlsplit(self.path)
        body = self.body()
        if p.path == "/token":
            return self.oauth(body)
        if p.path == "/sts/v1/token":
            return self.sts(body)
        if p.path.startswith("/iam/v1/"):
            return self.impersonate(p.path)
        if p.path.startswith("/v1/"):
            return self.kms("POST", p, body)
        self.send(404, {}, "unknown")

    # ------------------------------------------------------------ KMS
    def bearer(self):
        auth = self.headers.get("Authorization", "")
        kind = self.st.tokens.get(auth[7:]) if auth.startswith("Bearer ") \
            else None
        if kind is not None and emu_base.token_spent(
                self.st.lock, self.st.knobs, self.st.token_uses, auth[7:]):
            kind = None  # Google answers an expired token like a bad one
        if kind is None:
            raise GcpError(401, "UNAUTHENTICATED",
                           "Request had invalid authentication credentials.")
        return kind

    def kms(self, method, p, body):
        path = p.path[4:]
        what = "kms"
        kind = None
        try:
            if self.st.knob("fail_next_500"):
                raise GcpError(503, "UNAVAILABLE", "The service is unavailable")
            kind = self.bearer()
            if self.st.knob("throttle_next"):
                raise GcpError(429, "RESOURCE_EXHAUSTED", "Quota exceeded")
            if method == "GET" and path.endswith("/cryptoKeyVersions"):
                what, ans = "list", self.list_versions(path[:-18], p.query)
            elif method == "GET" and path.endswith("/publicKey"):
                what, ans = "publicKey", self.public_key(path[:-10])
            elif method == "POST" and path.endswith(":asymmetricSign"):
                what, ans = "sign", self.sign(path[:-15], json.loads(body))
            elif method == "GET" and path in self.st.versions:
                what, ans = "version", self.version_resource(path)
            else:
                raise GcpError(404, "NOT_FOUND", "unknown method")
        except GcpError as e:
            return self.gerror(e, what)
        self.send(200, ans, what, kind)

    def version(self, name):
        v = self.st.versions.get(name)
        if v is None:
            raise GcpError(404, "NOT_FOUND", "%s not found." % name)
        return v

    def list_versions(self, key, query):
        if key not in self.st.keys:
            raise GcpError(404, "NOT_FOUND", "%s not found." % key)
        q = urllib.parse.parse_qs(query)
        only_enabled = q.get("filter") == ["state=ENABLED"]
        out = [{"name": n, "state": self.st.versions[n]["state"],
                "algorithm": self.st.versions[n]["algorithm"],
                "protectionLevel": "HSM"} for n in self.st.keys[key]
               if not only_enabled or self.st.versions[n]["state"] == "ENABLED"]
        return {"cryptoKeyVersions": out, "totalSize": len(out)}

    def version_resource(self, name):
        """The CryptoKeyVersion; HSM versions carry an attestation whose
        chains are the configured PEMs (leaf first), as Google serves
        caviumCerts / googleCardCerts / googlePartitionCerts."""
        v = self.version(name)
        out = {"name": name, "state": v["state"], "algorithm": v["algorithm"],
               "protectionLevel": v["level"]}
        if v["level"] == "HSM":
            chain = list(self.st.attestation_chain)
            if self.st.knobs.get("bad_chain") and len(chain) > 2:
                chain = [chain[0], chain[-1]]  # no intermediate: cannot verify
            out["attestation"] = {
                "format": "CAVIUM_V2_COMPRESSED",
                "content": base64.b64encode(gzip.compress(
                    b"emulated attestation of " + name.encode())).decode(),
                "certChains": {"caviumCerts": chain,
                               "googleCardCerts": chain[::-1],
                               "googlePartitionCerts": chain}}
        return out

    def public_key(self, name):
        v = self.version(name)
        pem = v["priv"].public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return {"pem": pem, "algorithm": v["algorithm"],
                "pemCrc32c": str(crc32c(pem.encode())), "name": name,
                "protectionLevel": "HSM"}

    def sign(self, name, req):
        v = self.version(name)
        if self.st.knobs.get("deny"):
            raise GcpError(403, "PERMISSION_DENIED",
                           "Permission 'cloudkms.cryptoKeyVersions.useToSign' "
                           "denied on resource '%s'." % name)
        if v["state"] != "ENABLED":
            raise GcpError(400, "FAILED_PRECONDITION",
                           "%s is not enabled, current state is: %s." % (
                               name, v["state"]))
        alg = v["algorithm"]
        if "RAW_PKCS1" in alg:
            data = base64.b64decode(req["data"], validate=True)
            crc_field, signed = "dataCrc32c", data
            for prefix, h in DIGEST_INFO.items():
                if data.startswith(prefix) and \
                        len(data) == len(prefix) + h.digest_size:
                    sig = v["priv"].sign(data[len(prefix):], padding.PKCS1v15(),
                                         utils.Prehashed(h()))
                    break
            else:
                raise GcpError(400, "INVALID_ARGUMENT",
                               "data is not a DigestInfo")
        else:
            want = alg.rsplit("_", 1)[1].lower()
            digest = req.get("digest", {})
            if list(digest) != [want]:
                raise GcpError(400, "INVALID_ARGUMENT",
                               "The requested digest type does not match the "
                               "algorithm %s." % alg)
            d = base64.b64decode(digest[want], validate=True)
            crc_field, signed = "digestCrc32c", d
            h = utils.Prehashed(HASHES[want]())
            if alg.startswith("EC_"):
                sig = v["priv"].sign(d, ec.ECDSA(h))
            else:
                sig = v["priv"].sign(d, padding.PKCS1v15(), h)
        verified = crc_field in req
        if verified and int(req[crc_field]) != crc32c(signed):
            raise GcpError(400, "INVALID_ARGUMENT",
                           "The checksum in field %s did not match the data "
                           "in field %s." % (crc_field, crc_field[:-6]))
        if self.st.knob("corrupt_next"):
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        crc = crc32c(sig)
        if self.st.knob("corrupt_crc"):
            crc ^= 1
        if self.st.knob("unverified"):
            verified = False
        value = base64.b64encode(sig).decode()
        if self.st.knob("bad_b64_next"):
            value = emu_base.BAD_BASE64
        return {"signature": value,
                "signatureCrc32c": str(crc),
                "verified" + crc_field[0].upper() + crc_field[1:]: verified,
                "name": name, "protectionLevel": "HSM"}

    # ------------------------------------------------------------ tokens
    def form(self, body):
        return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}

    def token_answer(self, kind, what):
        self.send(200, {"access_token": self.st.issue(kind),
                        "expires_in": 3599, "token_type": "Bearer"}, what)

    def oauth(self, body):
        f = self.form(body)
        if f.get("grant_type") != \
                "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self.send(400, {"error": "unsupported_grant_type"}, "oauth")
        try:
            head, claims, sig = f["assertion"].split(".")
            c = json.loads(b64u_decode(claims))
            self.st.sa_pub.verify(b64u_decode(sig), (head + "." + claims).encode(),
                                  padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # noqa: BLE001 - any failure is an invalid grant
            return self.send(400, {"error": "invalid_grant",
                                   "error_description": "Invalid JWT "
                                   "Signature."}, "oauth")
        now = time.time()
        if (c.get("iss") != self.st.sa["email"] or
                c.get("aud") != self.server.url + "/token" or
                not c.get("iat", 0) - 60 < now < c.get("exp", 0) or
                "cloud-platform" not in c.get("scope", "")):
            return self.send(400, {"error": "invalid_grant",
                                   "error_description": "bad claims"}, "oauth")
        self.token_answer("service-account", "oauth")

    def sts(self, body):
        f = self.form(body)
        aud = "//iam.googleapis.com/" + (self.st.wif or "")
        ok = (f.get("grant_type") ==
              "urn:ietf:params:oauth:grant-type:token-exchange" and
              f.get("audience") == aud and
              f.get("subject_token_type") ==
              "urn:ietf:params:oauth:token-type:jwt" and
              "cloud-platform" in f.get("scope", ""))
        subject = f.get("subject_token", "")
        if not ok:
            return self.send(400, {"error": "invalid_request",
                                   "error_description": "bad exchange"}, "sts")
        if subject not in self.st.gh_tokens:
            return self.send(400, {"error": "invalid_grant",
                                   "error_description": "The audience in "
                                   "ID Token does not match the expected "
                                   "audience."}, "sts")
        tok = self.st.issue("federated")
        with self.st.lock:
            self.st.federated.add(tok)
        self.send(200, {"access_token": tok, "expires_in": 3600,
                        "issued_token_type":
                        "urn:ietf:params:oauth:token-type:access_token",
                        "token_type": "Bearer"}, "sts")

    def impersonate(self, path):
        auth = self.headers.get("Authorization", "")
        if auth[7:] not in self.st.federated:
            return self.send(401, {"error": {"code": 401, "message": "bad",
                                             "status": "UNAUTHENTICATED"}},
                             "iam")
        if not path.endswith("/serviceAccounts/%s:generateAccessToken" %
                             self.st.sa["email"]):
            return self.send(403, {"error": {
                "code": 403, "status": "PERMISSION_DENIED",
                "message": "Permission 'iam.serviceAccounts."
                "getAccessToken' denied"}}, "iam")
        exp = (datetime.datetime.now(datetime.timezone.utc) +
               datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.send(200, {"accessToken": self.st.issue("impersonated"),
                        "expireTime": exp}, "iam")

    def metadata(self, path):
        if self.headers.get("Metadata-Flavor") != "Google":
            return self.send(403, {}, "metadata")
        if path != "/computeMetadata/v1/instance/service-accounts/default/token":
            return self.send(404, {}, "metadata")
        self.token_answer("metadata", "metadata")

    def github(self, p):
        if self.headers.get("Authorization") != \
                "Bearer %s" % self.st.gh_request_token:
            return self.send(401, {}, "github")
        aud = (urllib.parse.parse_qs(p.query).get("audience") or [""])[0]
        enc = lambda d: base64.urlsafe_b64encode(  # noqa: E731
            json.dumps(d).encode()).rstrip(b"=").decode()
        jwt = "%s.%s.%s" % (enc({"alg": "RS256"}),
                            enc({"aud": aud, "iss": "emu-github"}),
                            secrets.token_hex(8))
        if aud == GH_PREFIX + (self.st.wif or ""):
            with self.st.lock:
                self.st.gh_tokens.add(jwt)
        self.send(200, {"count": 1, "value": jwt}, "github")


class Server(emu_base.EmuServer):
    handler, state_class = Handler, State


class GcpEmulator(emu_base.Emulator):
    server_class = Server


def main(argv=None):
    emu_base.serve_main(Server, __doc__, argv)


if __name__ == "__main__":
    main()
