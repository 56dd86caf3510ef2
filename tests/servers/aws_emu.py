#!/usr/bin/python3
"""Local AWS emulator for hsmsign tests: KMS (Sign, GetPublicKey,
DescribeKey; JSON 1.1 protocol, SigV4 checked on every call), STS
AssumeRoleWithWebIdentity, a GitHub Actions OIDC token endpoint, the ECS
container credentials endpoint and EC2 IMDSv2. Python stdlib +
python3-cryptography only.

Standalone:  /usr/bin/python3 aws_emu.py --config CONFIG.json
prints one JSON line {"url": "http://127.0.0.1:PORT"} and serves until its
stdin closes. In tests: AwsEmulator(config).start() runs it in a thread.

Config keys (all optional): region, account, credentials {id: secret},
keys [{id, alias, key_file, usage, state}], role_arn, web_identity_tokens
[...], github_request_token, ecs_token. Test knobs (POST /_emu/config):
throttle_next, fail_next_500, corrupt_next, bad_b64_next (a Signature
that is not base64), deny_sign, short_expiry (temporary credentials
expire in 60 s), expire_after (temporary credentials are refused as
expired after N KMS calls each), fault (emu_base.py). GET /_emu/log
returns every request as {path, target, status, access_key, source}.
Route prefixes: / (KMS), /sts/, /github/token, /ecs/creds, /latest/ (IMDS).
"""
import base64
import datetime
import hashlib
import hmac
import json
import secrets
import urllib.parse
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

import emu_base

DIGESTS = {"SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384,
           "SHA_512": hashes.SHA512}
EC_ALGS = {"secp256r1": "ECDSA_SHA_256", "secp384r1": "ECDSA_SHA_384",
           "secp521r1": "ECDSA_SHA_512"}
GH_AUDIENCE = "sts.amazonaws.com"


class KmsError(Exception):
    def __init__(self, type_, message, status=400):
        super().__init__(message)
        self.type, self.message, self.status = type_, message, status


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_signature(secret, method, path, query, headers, signed, body,
                    amz_date, scope):
    """Independent SigV4 (AWS docs): returns the hex signature."""
    canon = "\n".join([
        method, path, query,
        "".join("%s:%s\n" % (h, " ".join(headers.get(h, "").split()))
                for h in signed),
        ";".join(signed), hashlib.sha256(body).hexdigest()])
    date, region, service, _ = scope.split("/")
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canon.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region),
                      service), "aws4_request")
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


class State(emu_base.EmuState):
    def __init__(self, config):
        super().__init__()
        self.region = config.get("region", "us-east-2")
        self.account = config.get("account", "111122223333")
        self.creds = {k: (v, None) for k, v in
                      config.get("credentials", {}).items()}
        self.role_arn = config.get("role_arn")
        self.web_tokens = set(config.get("web_identity_tokens", []))
        self.gh_request_token = config.get("github_request_token")
        self.ecs_token = config.get("ecs_token")
        self.imds_tokens = set()
        self.token_uses = {}
        self.keys = []
        for k in config.get("keys", []):
            with open(k["key_file"], "rb") as f:
                priv = serialization.load_pem_private_key(f.read(), None)
            kid = k.get("id") or str(uuid.uuid4())
            self.keys.append({
                "id": kid, "alias": k.get("alias"), "priv": priv,
                "arn": "arn:aws:kms:%s:%s:key/%s" % (self.region,
                                                     self.account, kid),
                "usage": k.get("usage", "SIGN_VERIFY"),
                "state": k.get("state", "Enabled")})

    def knob(self, name):
        """Consumes one unit of a counting knob."""
        with self.lock:
            n = self.knobs.get(name, 0)
            if n:
                self.knobs[name] = n - 1 if isinstance(n, int) else n
            return bool(n)

    def issue_temporary(self, source):
        akid = "ASIA" + secrets.token_hex(8).upper()
        secret, token = secrets.token_urlsafe(30), secrets.token_urlsafe(60)
        with self.lock:
            self.creds[akid] = (secret, token)
        life = datetime.timedelta(
            seconds=60 if self.knobs.get("short_expiry") else 3600)
        exp = (datetime.datetime.now(datetime.timezone.utc) +
               life).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"AccessKeyId": akid, "SecretAccessKey": secret,
                "Token": token, "Expiration": exp, "source": source}

    def find_key(self, key_id):
        for k in self.keys:
            names = {k["id"], k["arn"]}
            if k["alias"]:
                names |= {k["alias"], "arn:aws:kms:%s:%s:%s" % (
                    self.region, self.account, k["alias"])}
            if key_id in names:
                return k
        raise KmsError("NotFoundException",
                       "Key '%s' does not exist" % key_id)


def key_algorithms(priv):
    if isinstance(priv, rsa.RSAPrivateKey):
        return ("RSA_%d" % priv.key_size,
                ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384",
                 "RSASSA_PKCS1_V1_5_SHA_512", "RSASSA_PSS_SHA_256",
                 "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"])
    curve = priv.curve.name
    spec = {"secp256r1": "ECC_NIST_P256", "secp384r1": "ECC_NIST_P384",
            "secp521r1": "ECC_NIST_P521"}[curve]
    return spec, [EC_ALGS[curve]]


class Handler(emu_base.EmuHandler):
    server_version = "aws-emu"

    # ------------------------------------------------------------ plumbing
    def send(self, status, body, ctype="application/x-amz-json-1.1",
             extra=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def record(self, status, target=None, access_key=None, source=None):
        st = self.server.state
        with st.lock:
            st.log.append({"path": self.path, "method": self.command,
                           "target": target, "status": status,
                           "access_key": access_key, "source": source})

    # ------------------------------------------------------------ routing
    def do_GET(self):
        p = urllib.parse.urlsplit(self.path)
        if p.path == "/_emu/log":
            with self.st.lock:
                return self.send(200, self.st.log, "application/json")
        if p.path == "/github/token":
            return self.github_token(p)
        if p.path == "/ecs/creds":
            return self.ecs_creds()
        if p.path.startswith("/latest/"):
            return self.imds_get(p.path)
        self.send(404, b"not found", "text/plain")

    def do_PUT(self):
        if self.path == "/latest/api/token":
            return self.imds_token()
        self.send(404, b"not found", "text/plain")

    def do_POST(self):
        body = self.body()
        if self.path == "/_emu/config":
            with self.st.lock:
                self.st.knobs.update(json.loads(body))
            return self.send(200, {}, "application/json")
        if self.path.startswith("/sts"):
            return self.sts(body)
        if self.path == "/":
            return self.kms(body)
        self.send(404, b"not found", "text/plain")

    # ------------------------------------------------------------ KMS
    def check_sigv4(self, body):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise KmsError("MissingAuthenticationTokenException",
                           "Missing Authentication Token")
        fields = dict(f.strip().split("=", 1)
                      for f in auth[17:].split(","))
        akid, scope = fields["Credential"].split("/", 1)
        signed = fields["SignedHeaders"].split(";")
        if akid not in self.st.creds:
            raise KmsError("UnrecognizedClientException",
                           "The security token included in the request is "
                           "invalid.")
        secret, token = self.st.creds[akid]
        amz_date = self.headers.get("X-Amz-Date", "")
        date, region, service, term = scope.split("/")
        if (region != self.st.region or service != "kms"
                or term != "aws4_request" or not amz_date.startswith(date)):
            raise KmsError("InvalidSignatureException",
                           "Credential should be scoped to a valid region.")
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
        if abs((datetime.datetime.now(datetime.timezone.utc) -
                when).total_seconds()) > 900:
            raise KmsError("InvalidSignatureException", "Signature expired")
        for h in ("host", "x-amz-date"):
            if h not in signed:
                raise KmsError("InvalidSignatureException",
                               "%s must be signed" % h)
        if token is not None and (
                self.headers.get("X-Amz-Security-Token") != token):
            raise KmsError("UnrecognizedClientException",
                           "The security token included in the request is "
                           "invalid.")
        if token is not None and emu_base.token_spent(
                self.st.lock, self.st.knobs, self.st.token_uses, token):
            raise KmsError("ExpiredTokenException",
                           "The security token included in the request is "
                           "expired")
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        want = sigv4_signature(secret, "POST", "/", "", hdrs, signed, body,
                               amz_date, scope)
        if not hmac.compare_digest(want, fields["Signature"]):
            raise KmsError("InvalidSignatureException",
                           "The request signature we calculated does not "
                           "match the signature you provided.")
        return akid

    def kms(self, body):
        target = self.headers.get("X-Amz-Target", "")
        op = target.split(".", 1)[-1]
        akid = None
        try:
            if self.st.knob("fail_next_500"):
                raise KmsError("KMSInternalException", "internal error", 500)
            akid = self.check_sigv4(body)
            if self.headers.get("Content-Type") != "application/x-amz-json-1.1":
                raise KmsError("SerializationException", "bad content type")
            if self.st.knob("throttle_next"):
                raise KmsError("ThrottlingException", "Rate exceeded")
            req = json.loads(body)
            handler = {"Sign": self.kms_sign,
                       "GetPublicKey": self.kms_public_key,
                       "DescribeKey": self.kms_describe}.get(op)
            if handler is None:
                raise KmsError("UnknownOperationException", target)
            answer = handler(req)
        except KmsError as e:
            self.record(e.status, op, akid)
            return self.send(e.status, {
                "__type": "com.amazonaws.kms#" + e.type, "message": e.message})
        self.record(200, op, akid)
        self.send(200, answer)

    def usable_key(self, req):
        if not isinstance(req.get("KeyId"), str):
            raise KmsError("ValidationException", "KeyId is required")
        k = self.st.find_key(req["KeyId"])
        if k["state"] != "Enabled":
            raise KmsError("DisabledException", "%s is disabled." % k["arn"])
        return k

    def kms_sign(self, req):
        k = self.usable_key(req)
        if self.st.knobs.get("deny_sign"):
            raise KmsError("AccessDeniedException",
                           "User is not authorized to perform: kms:Sign on "
                           "resource: %s" % k["arn"])
        alg = req.get("SigningAlgorithm")
        _, algs = key_algorithms(k["priv"])
        if k["usage"] != "SIGN_VERIFY":
            raise KmsError("InvalidKeyUsageException",
                           "KeyUsage is not SIGN_VERIFY")
        if alg not in algs:
            raise KmsError("InvalidKeyUsageException",
                           "Algorithm %s is incompatible with key spec" % alg)
        if req.get("MessageType") != "DIGEST":
            raise KmsError("ValidationException", "emulator signs DIGEST only")
        digest = base64.b64decode(req.get("Message", ""), validate=True)
        h = DIGESTS[alg[-7:]]()
        if len(digest) != h.digest_size:
            raise KmsError("ValidationException",
                           "Digest is invalid length for algorithm %s." % alg)
        pre = utils.Prehashed(h)
        if alg.startswith("ECDSA"):
            sig = k["priv"].sign(digest, ec.ECDSA(pre))
        elif alg.startswith("RSASSA_PSS"):
            sig = k["priv"].sign(digest, padding.PSS(
                padding.MGF1(h), h.digest_size), pre)
        else:
            sig = k["priv"].sign(digest, padding.PKCS1v15(), pre)
        if self.st.knob("corrupt_next"):
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        value = base64.b64encode(sig).decode()
        if self.st.knob("bad_b64_next"):
            value = emu_base.BAD_BASE64
        return {"KeyId": k["arn"], "Signature": value,
                "SigningAlgorithm": alg}

    def kms_public_key(self, req):
        k = self.usable_key(req)
        spec, algs = key_algorithms(k["priv"])
        der = k["priv"].public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"KeyId": k["arn"], "KeySpec": spec,
                "CustomerMasterKeySpec": spec, "KeyUsage": k["usage"],
                "PublicKey": base64.b64encode(der).decode(),
                "SigningAlgorithms": algs}

    def kms_describe(self, req):
        k = self.st.find_key(req.get("KeyId", ""))
        spec, algs = key_algorithms(k["priv"])
        return {"KeyMetadata": {
            "AWSAccountId": self.st.account, "KeyId": k["id"],
            "Arn": k["arn"], "Enabled": k["state"] == "Enabled",
            "KeyState": k["state"], "KeyUsage": k["usage"],
            "KeySpec": spec, "CustomerMasterKeySpec": spec,
            "SigningAlgorithms": algs, "KeyManager": "CUSTOMER",
            "Origin": "AWS_KMS", "CreationDate": 1700000000.0}}

    # ------------------------------------------------------------ STS
    def sts_error(self, status, code, message):
        self.record(status, "AssumeRoleWithWebIdentity")
        xml = ("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/"
               "2011-06-15/\"><Error><Type>Sender</Type><Code>%s</Code>"
               "<Message>%s</Message></Error><RequestId>%s</RequestId>"
               "</ErrorResponse>" % (code, message, uuid.uuid4()))
        self.send(status, xml.encode(), "text/xml")

    def web_token_ok(self, token):
        if token in self.st.web_tokens:
            return True
        try:  # a token from /github/token: its audience must be STS's
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(
                payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):
            return False
        return (claims.get("iss") == "emu-github" and
                claims.get("aud") == GH_AUDIENCE and
                token in self.st.web_tokens | self.st.knobs.get("gh", set()))

    def sts(self, body):
        form = urllib.parse.parse_qs(body.decode())
        get = lambda k: (form.get(k) or [None])[0]  # noqa: E731
        if get("Action") != "AssumeRoleWithWebIdentity" or \
                get("Version") != "2011-06-15":
            return self.sts_error(400, "InvalidAction", "unsupported action")
        if not get("RoleSessionName"):
            return self.sts_error(400, "ValidationError",
                                  "RoleSessionName is required")
        if get("RoleArn") != self.st.role_arn:
            return self.sts_error(403, "AccessDenied",
                                  "Not authorized to perform "
                                  "sts:AssumeRoleWithWebIdentity")
        if not self.web_token_ok(get("WebIdentityToken") or ""):
            return self.sts_error(400, "InvalidIdentityToken",
                                  "Couldn't verify the token")
        c = self.st.issue_temporary("sts")
        self.record(200, "AssumeRoleWithWebIdentity", c["AccessKeyId"])
        xml = (
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws."
            "com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult>"
            "<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s"
            "</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s"
            "</Expiration></Credentials><AssumedRoleUser><Arn>%s/%s</Arn>"
            "</AssumedRoleUser></AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>" % (
                c["AccessKeyId"], c["SecretAccessKey"], c["Token"],
                c["Expiration"], self.st.role_arn, get("RoleSessionName")))
        self.send(200, xml.encode(), "text/xml")

    # ------------------------------------------------------------ GitHub, ECS, IMDS
    def github_token(self, p):
        q = urllib.parse.parse_qs(p.query)
        if self.headers.get("Authorization") != \
                "Bearer %s" % self.st.gh_request_token:
            self.record(401, "github")
            return self.send(401, {"message": "bad token"}, "application/json")
        b64 = lambda d: base64.urlsafe_b64encode(  # noqa: E731
            json.dumps(d).encode()).rstrip(b"=").decode()
        jwt = "%s.%s.%s" % (b64({"alg": "RS256"}), b64({
            "iss": "emu-github", "aud": (q.get("audience") or [""])[0],
            "sub": "repo:o/r:ref:refs/heads/main"}), secrets.token_hex(8))
        with self.st.lock:
            self.st.knobs.setdefault("gh", set()).add(jwt)
        self.record(200, "github")
        self.send(200, {"count": 1, "value": jwt}, "application/json")

    def ecs_creds(self):
        if self.headers.get("Authorization") != self.st.ecs_token:
            self.record(401, "ecs")
            return self.send(401, {"message": "unauthorized"},
                             "application/json")
        c = self.st.issue_temporary("ecs")
        self.record(200, "ecs", c["AccessKeyId"])
        self.send(200, {k: c[k] for k in ("AccessKeyId", "SecretAccessKey",
                                          "Token", "Expiration")} |
                  {"RoleArn": "arn:aws:iam::1:role/ecs"}, "application/json")

    def imds_token(self):
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self.record(400, "imds-token")
            return self.send(400, b"", "text/plain")
        token = secrets.token_urlsafe(32)
        with self.st.lock:
            self.st.imds_tokens.add(token)
        self.record(200, "imds-token")
        self.send(200, token.encode(), "text/plain")

    def imds_get(self, path):
        if self.headers.get("X-aws-ec2-metadata-token") not in \
                self.st.imds_tokens:
            self.record(401, "imds")
            return self.send(401, b"", "text/plain")
        base = "/latest/meta-data/iam/security-credentials/"
        if path == base:
            self.record(200, "imds")
            return self.send(200, b"codesign-role", "text/plain")
        if path == base + "codesign-role":
            c = self.st.issue_temporary("imds")
            self.record(200, "imds", c["AccessKeyId"])
            return self.send(200, {
                "Code": "Success", "Type": "AWS-HMAC",
                "AccessKeyId": c["AccessKeyId"],
                "SecretAccessKey": c["SecretAccessKey"], "Token": c["Token"],
                "Expiration": c["Expiration"]}, "text/plain")
        self.record(404, "imds")
        self.send(404, b"", "text/plain")


class Server(emu_base.EmuServer):
    handler, state_class = Handler, State


class AwsEmulator(emu_base.Emulator):
    """In-process emulator for tests: with AwsEmulator(cfg) as emu: emu.url."""

    server_class = Server

    def calls(self, target=None, status=None):
        return self.select("target", target, status)


def main(argv=None):
    emu_base.serve_main(Server, __doc__, argv)


if __name__ == "__main__":
    main()
