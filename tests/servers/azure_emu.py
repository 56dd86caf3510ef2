#!/usr/bin/python3
"""Local emulator of Azure Key Vault / Managed HSM, Entra ID v2 tokens,
GitHub Actions OIDC, App Service managed identity and IMDS.

Contract: tests/servers/README.md. Wire formats:
shared/reference/protocols.md sections 1-3.

Python standard library + Debian's python3-cryptography only. Binds
127.0.0.1 only, never contacts anything else. Run with /usr/bin/python3.
"""
import argparse
import base64
import collections
import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import (AuthorityInformationAccessOID,
                                   ExtendedKeyUsageOID, NameOID)

import emu_base

VAULT_RESOURCE = "https://vault.azure.net"
MHSM_RESOURCE = "https://managedhsm.azure.net"
# Resources Entra/IMDS will mint tokens for (the last ones only so that tests
# can obtain a token with the wrong audience).
KNOWN_RESOURCES = (VAULT_RESOURCE, MHSM_RESOURCE,
                   "https://management.azure.com",
                   "https://codesigning.azure.net")
API_VERSIONS = ("7.4", "7.5", "7.6", "2025-06-01", "2025-07-01")
LATEST_API_VERSION = "2025-07-01"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
DEFAULT_SUBJECT = "repo:contoso/app:ref:refs/heads/main"
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
NAME_RE = re.compile(r"^[0-9a-zA-Z-]+$")
B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")

ID_SECRET = "11111111-1111-1111-1111-111111111111"
ID_CERT = "22222222-2222-2222-2222-222222222222"
ID_FEDERATED = "33333333-3333-3333-3333-333333333333"
ID_MANAGED = "44444444-4444-4444-4444-444444444444"
ID_NOSIGN = "55555555-5555-5555-5555-555555555555"

ALL_ACTIONS = ["keys/sign", "keys/read", "certificates/read"]

# (key name, kind, size or curve)
KEY_SPECS = [
    ("codesign-rsa2048", "RSA", 2048),
    ("codesign-rsa3072", "RSA", 3072),
    ("codesign-rsa4096", "RSA", 4096),
    ("codesign-ec256", "EC", "P-256"),
    ("codesign-ec384", "EC", "P-384"),
    ("codesign-ec521", "EC", "P-521"),
]
CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}

# JWS alg -> (hash, digest length, kind)
SIGN_ALGS = {
    "RS256": (hashes.SHA256, 32, "RSA"), "RS384": (hashes.SHA384, 48, "RSA"),
    "RS512": (hashes.SHA512, 64, "RSA"), "PS256": (hashes.SHA256, 32, "RSA"),
    "PS384": (hashes.SHA384, 48, "RSA"), "PS512": (hashes.SHA512, 64, "RSA"),
    "RSNULL": (None, None, "RSA"),
    "ES256": (hashes.SHA256, 32, "P-256"), "ES384": (hashes.SHA384, 48, "P-384"),
    "ES512": (hashes.SHA512, 64, "P-521"),
}
KNOWN_BUT_UNSUPPORTED_ALGS = ("HS256", "HS384", "HS512", "ES256K")

DEFAULT_KNOBS = {
    "latency_ms": 0,
    "throttle_next": 0,
    "throttle_retry_after": None,
    # Key Vault-style service limit: at most this many requests per
    # rate_window_ms (sliding window); the excess gets 429 and, as in Azure,
    # does not count towards the limit. 0: off.
    "rate_limit": 0,
    "rate_window_ms": 1000,
    "fail_next": 0,
    "fail_status": 503,
    "reset_next": 0,
    "deny_actions": [],
    "only_paths": [],
    "corrupt_sign_next": 0,
    "token_lifetime": 3599,
    "challenge_style": "resource",
    # A transport fault plan, see emu_base.py ("fault"): answered before
    # routing, whatever the path (except /_emu/*).
    "fault": None,
    # Tokens are refused as expired (AKV10021) after this many data-plane
    # requests each: a token that expires in the middle of a batch. 0: off.
    "expire_after": 0,
    # N sign answers whose value is not base64url.
    "bad_b64_sign_next": 0,
    # Another key's name: certificate bundles carry that key's certificate
    # (a certificate that does not match the signing key). None: off.
    "cert_of": None,
    # The token audience the vault announces in its 401 challenge and
    # accepts, e.g. a sovereign cloud's "https://vault.azure.cn"; Entra
    # issues tokens for it too. None: the mode's (vault.azure.net or
    # managedhsm.azure.net).
    "resource": None,
}

LOG_QUERY_KEYS = ("api-version", "resource", "audience", "client_id",
                  "object_id", "principal_id", "outContentType")


# ------------------------------------------------------------------ helpers

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    if isinstance(text, bytes):
        text = text.decode()
    if not B64URL_RE.match(text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def now():
    return int(time.time())


def json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def write_file(path, data, mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def der_cert(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def int_bytes(n, length=None):
    length = length or max(1, (n.bit_length() + 7) // 8)
    return n.to_bytes(length, "big")


def rsa_pkcs1_type1_raw(key, message):
    """RSASSA-PKCS1-v1_5 signature of an already-encoded DigestInfo (RSNULL):
    EM = 00 01 FF..FF 00 || message, then m^d mod n."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    if len(message) > k - 11:
        raise ValueError("message too long for the key")
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(message)) + b"\x00" + message
    return int_bytes(pow(int.from_bytes(em, "big"), numbers.d, n), k)


# ---------------------------------------------------------------------- JWT

def jwt_encode(key, header, claims, alg="RS256"):
    header = dict(header, alg=alg, typ=header.get("typ", "JWT"))
    signing_input = (b64url(json_bytes(header)) + "." +
                     b64url(json_bytes(claims))).encode()
    if alg == "RS256":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        sig = key.sign(signing_input, padding.PSS(padding.MGF1(hashes.SHA256()),
                                                  32), hashes.SHA256())
    else:
        raise ValueError(alg)
    return signing_input.decode() + "." + b64url(sig)


def jwt_decode(token):
    """-> (header, claims, signing_input bytes, signature); ValueError."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWS compact serialization")
    header = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("bad JWT")
    return header, claims, (parts[0] + "." + parts[1]).encode(), \
        b64url_decode(parts[2])


def jwt_verify(public_key, header, signing_input, sig):
    alg = header.get("alg")
    try:
        if alg == "RS256":
            public_key.verify(sig, signing_input, padding.PKCS1v15(),
                              hashes.SHA256())
        elif alg == "PS256":
            public_key.verify(sig, signing_input,
                              padding.PSS(padding.MGF1(hashes.SHA256()),
                                          padding.PSS.AUTO), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def rsa_jwk(public_key, kid):
    pn = public_key.public_numbers()
    return {"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid,
            "n": b64url(int_bytes(pn.n)), "e": b64url(int_bytes(pn.e))}


# ---------------------------------------------------------------------- PKI

class KeyStore:
    """Generates private keys, reusing PEMs from a cache directory if given
    (RSA-4096 generation is what makes a cold start slow)."""

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def get(self, name, kind, size):
        path = os.path.join(self.cache_dir, name + ".pem") \
            if self.cache_dir else None
        if path and os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    key = serialization.load_pem_private_key(f.read(), None)
                if self._matches(key, kind, size):
                    return key
            except (ValueError, OSError):
                pass
        if kind == "RSA":
            key = rsa.generate_private_key(65537, size)
        else:
            key = ec.generate_private_key(CURVES[size]())
        if path:
            try:
                write_file(path, pem_key(key), 0o600)
            except OSError:
                pass
        return key

    @staticmethod
    def _matches(key, kind, size):
        if kind == "RSA":
            return isinstance(key, rsa.RSAPrivateKey) and key.key_size == size
        return (isinstance(key, ec.EllipticCurvePrivateKey)
                and isinstance(key.curve, CURVES[size]))


def make_name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                         "hsmsign tests")])


def make_cert(subject_cn, public_key, issuer_cert, issuer_key, *, ca=False,
              pathlen=None, eku=None, key_usage="leaf", aia=None, san=None,
              days=365):
    t0 = datetime.datetime.utcnow() - datetime.timedelta(days=1)
    subject = make_name(subject_cn)
    issuer = issuer_cert.subject if issuer_cert else subject
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(t0)
         .not_valid_after(t0 + datetime.timedelta(days=days)))
    b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen),
                        critical=True)
    if ca:
        ku = x509.KeyUsage(digital_signature=True, content_commitment=False,
                           key_encipherment=False, data_encipherment=False,
                           key_agreement=False, key_cert_sign=True,
                           crl_sign=True, encipher_only=False,
                           decipher_only=False)
    elif key_usage == "tls":
        ku = x509.KeyUsage(digital_signature=True, content_commitment=False,
                           key_encipherment=isinstance(public_key,
                                                       rsa.RSAPublicKey),
                           data_encipherment=False, key_agreement=False,
                           key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False)
    else:
        ku = x509.KeyUsage(digital_signature=True, content_commitment=False,
                           key_encipherment=False, data_encipherment=False,
                           key_agreement=False, key_cert_sign=False,
                           crl_sign=False, encipher_only=False,
                           decipher_only=False)
    b = b.add_extension(ku, critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                        critical=False)
    if issuer_cert is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_cert.public_key()), critical=False)
    if aia:
        b = b.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(aia))]),
            critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


# ------------------------------------------------------------------ errors

class HttpError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class Reset(Exception):
    """Close the connection without answering."""


# --------------------------------------------------------------- emulator

class Emulator:
    def __init__(self, state_dir, mode, config, key_cache):
        self.dir = os.path.abspath(state_dir)
        self.mode = mode
        self.cfg = config
        self.resource = MHSM_RESOURCE if mode == "managedhsm" else VAULT_RESOURCE
        self.tenant = config.get("tenant") or str(uuid.uuid4())
        self.vault_name = config.get("vault_name") or (
            "hsmsign-emu-hsm" if mode == "managedhsm" else "hsmsign-emu")
        self.lock = threading.Lock()
        self.log_entries = []
        self.token_uses = {}
        self.base_knobs = dict(DEFAULT_KNOBS)
        self.base_knobs.update(config.get("knobs") or {})
        self.knobs = json.loads(json.dumps(self.base_knobs))
        self.keystore = KeyStore(key_cache)
        wanted = config.get("keys")
        self.key_specs = [s for s in KEY_SPECS if not wanted or s[0] in wanted]
        gh = config.get("github") or {}
        self.github = {
            "subject": gh.get("subject", DEFAULT_SUBJECT),
            "repository": gh.get("repository", "contoso/app"),
            "ref": gh.get("ref", "refs/heads/main"),
            "default_audience": gh.get("default_audience",
                                       "https://github.com/contoso"),
            "issuer": gh.get("issuer", GITHUB_ISSUER),
        }
        self.https_port = self.http_port = None
        self.pending = {}  # certificate name -> pending CSR operation
        self.log_file = os.path.join(self.dir, "requests.jsonl")

    # ---------------------------------------------------------- material
    def setup(self, https_port, http_port):
        self.https_port, self.http_port = https_port, http_port
        self.https_url = "https://127.0.0.1:%d" % https_port
        self.http_url = "http://127.0.0.1:%d" % http_port
        d = self.dir
        os.makedirs(os.path.join(d, "pki"), exist_ok=True)
        os.makedirs(os.path.join(d, "keys"), exist_ok=True)
        ks = self.keystore
        jobs = {
            "tls-ca": ("EC", "P-256"), "tls-server": ("EC", "P-256"),
            "pki-root": ("RSA", 2048), "pki-intermediate": ("RSA", 2048),
            "entra-token-signer": ("RSA", 2048),
            "github-oidc-signer": ("RSA", 2048),
            "client-cert": ("RSA", 2048),
        }
        for name, kind, size in self.key_specs:
            jobs[name] = (kind, size)
        with ThreadPoolExecutor(max_workers=4) as ex:
            futs = {n: ex.submit(ks.get, n, k, s) for n, (k, s) in
                    sorted(jobs.items(), key=lambda kv: -(kv[1][1] if
                                                          kv[1][0] == "RSA"
                                                          else 0))}
            keys = {n: f.result() for n, f in futs.items()}

        # TLS
        ca = make_cert("hsmsign emulator TLS CA", keys["tls-ca"].public_key(),
                       None, keys["tls-ca"], ca=True, pathlen=0)
        srv = make_cert("127.0.0.1", keys["tls-server"].public_key(), ca,
                        keys["tls-ca"], key_usage="tls",
                        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
                        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                             x509.DNSName("localhost"),
                             # Vault names behind a test proxy (connect_proxy.py)
                             x509.DNSName("*.hsmsign.test")])
        self.tls_ca = os.path.join(d, "tls-ca.pem")
        write_file(self.tls_ca, pem_cert(ca))
        self.tls_cert = os.path.join(d, "tls-server.pem")
        write_file(self.tls_cert, pem_cert(srv) + pem_cert(ca))
        self.tls_key = os.path.join(d, "tls-server.key")
        write_file(self.tls_key, pem_key(keys["tls-server"]), 0o600)

        # Code-signing PKI
        root = make_cert("hsmsign emulator Root CA",
                         keys["pki-root"].public_key(), None, keys["pki-root"],
                         ca=True, days=3650)
        inter = make_cert("hsmsign emulator Code Signing CA",
                          keys["pki-intermediate"].public_key(), root,
                          keys["pki-root"], ca=True, pathlen=0,
                          eku=[ExtendedKeyUsageOID.CODE_SIGNING], days=1825)
        self.root_cert, self.inter_cert = root, inter
        pki = os.path.join(d, "pki")
        self.root_pem = os.path.join(pki, "root.pem")
        self.inter_pem = os.path.join(pki, "intermediate.pem")
        write_file(self.root_pem, pem_cert(root))
        write_file(os.path.join(pki, "root.cer"), der_cert(root))
        write_file(self.inter_pem, pem_cert(inter))
        write_file(os.path.join(pki, "intermediate.cer"), der_cert(inter))
        self.inter_der = der_cert(inter)
        self.root_der = der_cert(root)
        aia = self.http_url + "/aia/intermediate.cer"
        created = now()
        self.vault_keys = {}
        for name, kind, size in self.key_specs:
            key = keys[name]
            leaf = make_cert("hsmsign emulator " + name, key.public_key(),
                             inter, keys["pki-intermediate"],
                             eku=[ExtendedKeyUsageOID.CODE_SIGNING], aia=aia)
            version = uuid.uuid4().hex
            write_file(os.path.join(pki, name + ".pem"), pem_cert(leaf))
            write_file(os.path.join(pki, name + ".cer"), der_cert(leaf))
            write_file(os.path.join(pki, name + "-chain.pem"),
                       pem_cert(leaf) + pem_cert(inter))
            write_file(os.path.join(d, "keys", name + ".pem"), pem_key(key),
                       0o600)
            self.vault_keys[name] = {
                "name": name, "kind": kind, "size": size, "key": key,
                "cert": leaf, "der": der_cert(leaf), "version": version,
                "created": created,
            }

        # Token signers
        self.token_key = keys["entra-token-signer"]
        self.token_kid = b64url(hashlib.sha1(
            self.token_key.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo)).digest())
        self.github_key = keys["github-oidc-signer"]
        self.github_kid = b64url(hashlib.sha1(
            self.github_key.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo)).digest())

        # Identities
        client_cert = make_cert("hsmsign emulator client " + ID_CERT,
                                keys["client-cert"].public_key(), None,
                                keys["client-cert"], days=365)
        self.client_cert_path = os.path.join(d, "client-cert.pem")
        write_file(self.client_cert_path, pem_key(keys["client-cert"]) +
                   pem_cert(client_cert), 0o600)
        write_file(os.path.join(d, "client-cert.crt"), pem_cert(client_cert))
        p12 = pkcs12.serialize_key_and_certificates(
            b"client", keys["client-cert"], client_cert, None,
            serialization.NoEncryption())
        write_file(os.path.join(d, "client-cert.pfx"), p12, 0o600)

        secret = self._secret_file("client-secret.txt")
        nosign = self._secret_file("client-secret-nosign.txt")
        self.identity_header = self._secret_file("identity-header.txt")
        self.github_request_token = self._secret_file(
            "github-request-token.txt")
        # The record keeps the default subject even if CONFIG.json changes
        # github.subject: that is how tests provoke AADSTS70021.
        fed = [{"issuer": GITHUB_ISSUER, "subject": DEFAULT_SUBJECT,
                "audiences": [EXCHANGE_AUDIENCE]}]
        ids = [
            {"client_id": ID_SECRET, "name": "secret", "secret": secret,
             "actions": ALL_ACTIONS},
            {"client_id": ID_CERT, "name": "certificate",
             "certificates": [client_cert], "actions": ALL_ACTIONS},
            {"client_id": ID_FEDERATED, "name": "federated", "federated": fed,
             "actions": ALL_ACTIONS},
            {"client_id": ID_MANAGED, "name": "managed", "managed": True,
             "actions": ALL_ACTIONS},
            {"client_id": ID_NOSIGN, "name": "nosign", "secret": nosign,
             "actions": ["keys/read", "certificates/read"]},
        ]
        by_id = {i["client_id"]: i for i in ids}
        for extra in self.cfg.get("identities") or []:
            extra = dict(extra)
            cid = extra["client_id"]
            if "certificate" in extra:
                with open(extra.pop("certificate"), "rb") as f:
                    extra["certificates"] = [x509.load_pem_x509_certificate(
                        f.read())]
            if cid in by_id:
                by_id[cid].update(extra)
            else:
                extra.setdefault("actions", ALL_ACTIONS)
                extra.setdefault("name", cid)
                by_id[cid] = extra
                ids.append(extra)
        self.identities = by_id
        self.managed_ids = [i for i in ids if i.get("managed")]

        self._write_fake_az(secret)
        write_file(self.log_file, b"")

    def _secret_file(self, name):
        value = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        write_file(os.path.join(self.dir, name), value + "\n", 0o600)
        return value

    def _write_fake_az(self, secret):
        settings = {
            "token_url": "%s/%s/oauth2/v2.0/token" % (self.https_url,
                                                      self.tenant),
            "tls_ca": self.tls_ca, "client_id": ID_SECRET,
            "secret_file": os.path.join(self.dir, "client-secret.txt"),
            "tenant": self.tenant,
            "logged_out_marker": os.path.join(self.dir, "az-logged-out"),
        }
        script = FAKE_AZ.replace("@SETTINGS@", json.dumps(settings))
        self.az_path = os.path.join(self.dir, "az")
        write_file(self.az_path, script, 0o755)

    def ready_info(self):
        return {
            "https": self.https_url, "http": self.http_url,
            "tls_ca": self.tls_ca, "root": self.root_pem,
            "intermediate": self.inter_pem, "tenant": self.tenant,
            "keys": [s[0] for s in self.key_specs], "log": self.log_file,
            "mode": self.mode, "resource": self.resource,
            "vault_url": self.https_url, "authority_host": self.https_url,
            "state_dir": self.dir, "pid": os.getpid(),
            "pki_dir": os.path.join(self.dir, "pki"),
            "identities": {"secret": ID_SECRET, "certificate": ID_CERT,
                           "federated": ID_FEDERATED, "managed": ID_MANAGED,
                           "nosign": ID_NOSIGN},
            "client_secret_file": os.path.join(self.dir, "client-secret.txt"),
            "nosign_secret_file": os.path.join(self.dir,
                                               "client-secret-nosign.txt"),
            "client_cert": self.client_cert_path,
            "identity_header_file": os.path.join(self.dir,
                                                 "identity-header.txt"),
            "github_request_token_file": os.path.join(
                self.dir, "github-request-token.txt"),
            "github_token_url": self.https_url +
            "/_github/token?api-version=2.0",
            "identity_endpoint": self.http_url + "/msi/token",
            "imds_endpoint": self.http_url,
            "az": self.az_path,
        }

    # ------------------------------------------------------------- knobs
    def set_knobs(self, changes):
        with self.lock:
            for k, v in changes.items():
                if k not in DEFAULT_KNOBS:
                    raise HttpError(400, {"error": "unknown knob %r" % k})
                self.knobs[k] = v
            return dict(self.knobs)

    def reset(self):
        with self.lock:
            self.knobs = json.loads(json.dumps(self.base_knobs))
            self.token_uses = {}
            self.pending = {}
            for name in [n for n, vk in self.vault_keys.items()
                         if vk.get("merged")]:
                del self.vault_keys[name]
            self.log_entries = []
            write_file(self.log_file, b"")

    def over_rate_limit(self):
        """True when the rate_limit knob rejects this request."""
        with self.lock:
            limit = self.knobs.get("rate_limit") or 0
            if limit <= 0:
                return False
            window = (self.knobs.get("rate_window_ms") or 1000) / 1000.0
            now = time.monotonic()
            recent = getattr(self, "_rate_times", None)
            if recent is None:
                recent = self._rate_times = collections.deque()
            while recent and now - recent[0] >= window:
                recent.popleft()
            if len(recent) >= limit:
                return True
            recent.append(now)
            return False

    def take(self, knob):
        """Decrements a counter knob; True if it was positive."""
        with self.lock:
            n = self.knobs.get(knob) or 0
            if n > 0:
                self.knobs[knob] = n - 1
                return True
            return False

    def knob(self, name):
        with self.lock:
            return self.knobs.get(name)

    def vault_resource(self):
        """The token audience of the vault (the `resource` knob, or the mode's)."""
        return self.knob("resource") or self.resource

    def record(self, entry):
        line = json.dumps(entry, separators=(",", ":"))
        with self.lock:
            self.log_entries.append(entry)
            with open(self.log_file, "a") as f:
                f.write(line + "\n")

    # ------------------------------------------------------------ tokens
    def issue_token(self, identity, resource):
        lifetime = int(self.knob("token_lifetime") or 3599)
        t = now()
        cid = identity["client_id"]
        claims = {
            "aud": resource, "iss": "https://sts.windows.net/%s/" % self.tenant,
            "iat": t, "nbf": t, "exp": t + lifetime,
            "appid": cid, "appidacr": "1", "idp":
            "https://sts.windows.net/%s/" % self.tenant, "idtyp": "app",
            "oid": identity.get("object_id", cid), "sub": identity.get(
                "object_id", cid), "tid": self.tenant, "ver": "1.0",
            "uti": b64url(os.urandom(16)),
        }
        token = jwt_encode(self.token_key, {"x5t": self.token_kid,
                                            "kid": self.token_kid}, claims)
        return token, lifetime, t + lifetime

    def mint_federated(self, sub, aud, iss=None, lifetime=300, extra=None):
        t = now()
        gh = self.github
        claims = {
            "jti": str(uuid.uuid4()), "sub": sub, "aud": aud,
            "ref": gh["ref"], "sha": hashlib.sha1(sub.encode()).hexdigest(),
            "repository": gh["repository"],
            "repository_owner": gh["repository"].split("/")[0],
            "run_id": "1", "run_number": "1", "run_attempt": "1",
            "runner_environment": "github-hosted", "actor": "octocat",
            "workflow": "sign", "event_name": "push", "ref_type": "branch",
            "iss": iss or gh["issuer"], "nbf": t - 5, "iat": t - 5,
            "exp": t + int(lifetime),
        }
        claims.update(extra or {})
        return jwt_encode(self.github_key, {"x5t": self.github_kid,
                                            "kid": self.github_kid}, claims)


# ------------------------------------------------------------- fake az CLI

FAKE_AZ = r'''#!/usr/bin/python3
"""Fake Azure CLI (AZURE_CLI_PATH) written by tests/servers/azure_emu.py.
Supports 'account get-access-token' only; mints a token for the emulator's
client-secret identity. Create the file named by logged_out_marker to make it
answer like a logged-out CLI."""
import datetime, json, os, ssl, sys, urllib.error, urllib.parse, urllib.request
S = json.loads(r"""@SETTINGS@""")
args = sys.argv[1:]
if args[:1] in (["--version"], ["version"]):
    print(json.dumps({"azure-cli": "2.99.0-emulator", "extensions": {}}))
    sys.exit(0)
if args[:2] != ["account", "get-access-token"]:
    sys.stderr.write("ERROR: the emulator's fake az only supports "
                     "'account get-access-token'\n")
    sys.exit(2)
opts, i = {}, 2
while i < len(args):
    a = args[i]
    if a in ("--resource", "--scope", "--tenant", "-t", "--output", "-o",
             "--subscription", "--query"):
        if i + 1 >= len(args):
            sys.stderr.write("ERROR: argument %s: expected one argument\n" % a)
            sys.exit(2)
        opts[a] = args[i + 1]
        i += 2
    else:
        i += 1
if os.path.exists(S["logged_out_marker"]):
    sys.stderr.write("ERROR: Please run 'az login' to setup account.\n")
    sys.exit(1)
if "--scope" in opts:
    scope = opts["--scope"]
else:
    scope = opts.get("--resource", "https://management.azure.com").rstrip("/") + "/.default"
with open(S["secret_file"]) as f:
    secret = f.read().strip()
body = urllib.parse.urlencode({"client_id": S["client_id"], "client_secret": secret,
                               "scope": scope, "grant_type": "client_credentials"}).encode()
ctx = ssl.create_default_context(cafile=S["tls_ca"])
try:
    with urllib.request.urlopen(urllib.request.Request(S["token_url"], data=body),
                                context=ctx, timeout=30) as r:
        tok = json.loads(r.read())
except urllib.error.HTTPError as e:
    try:
        desc = json.loads(e.read()).get("error_description", "")
    except Exception:
        desc = "HTTP %d" % e.code
    sys.stderr.write("ERROR: %s\n" % desc.split("\r\n")[0])
    sys.exit(1)
except OSError as e:
    sys.stderr.write("ERROR: %s\n" % e)
    sys.exit(1)
exp = int(datetime.datetime.now().timestamp()) + int(tok["expires_in"])
print(json.dumps({
    "accessToken": tok["access_token"],
    "expiresOn": datetime.datetime.fromtimestamp(exp).strftime("%Y-%m-%d %H:%M:%S.%f"),
    "expires_on": exp,
    "subscription": "00000000-0000-0000-0000-000000000000",
    "tenant": S["tenant"], "tokenType": "Bearer"}, indent=2))
'''


# ----------------------------------------------------------------- handler

def aad_error(status, code, error, message):
    t = datetime.datetime.utcnow()
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    desc = ("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\n"
            "Timestamp: %s" % (code, message, trace, corr,
                               t.strftime("%Y-%m-%d %H:%M:%SZ")))
    return HttpError(status, {
        "error": error, "error_description": desc, "error_codes": [code],
        "timestamp": t.strftime("%Y-%m-%d %H:%M:%SZ"), "trace_id": trace,
        "correlation_id": corr,
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % code})


class Handler(emu_base.FaultMixin, http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hsmsign-azure-emu"
    sys_version = ""
    timeout = 120
    emu = None          # set per server class
    scheme = "https"

    def version_string(self):
        return self.server_version

    def fault_knobs(self):
        return self.emu.lock, self.emu.knobs

    # silence the default stderr logging; we keep our own log
    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    # ---------------------------------------------------------- plumbing
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def dispatch(self, method):
        emu = self.emu
        t0 = time.time()
        url = urllib.parse.urlsplit(self.path)
        self.url_path = url.path
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self.entry = {
            "t": round(t0, 3), "port": self.scheme, "method": method,
            "path": url.path,
            "api_version": self.q("api-version"),
            "query": {k: v[0] for k, v in self.query.items()
                      if k in LOG_QUERY_KEYS},
            "bearer": self.headers.get("Authorization", "").lower()
            .startswith("bearer "),
            "client_id": None,
        }
        status, headers, body = 500, {}, b""
        try:
            try:
                self.body = self.read_body()
            except (ValueError, OSError):
                self.close_connection = True
                return
            try:
                status, headers, body = self.route(method)
            except HttpError as e:
                status, headers = e.status, dict(e.headers)
                body = e.body
        except Reset:
            self.entry["status"] = 0
            self.entry["reset"] = True
            emu.record(self.entry)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except Exception:  # a bug in the emulator: answer 500, keep going
            traceback.print_exc(file=sys.stderr)
            status, headers = 500, {}
            body = {"error": {"code": "InternalServerError",
                              "message": "emulator bug; see its stderr"}}
        if isinstance(body, (dict, list)):
            body = json_bytes(body)
            headers.setdefault("Content-Type",
                               "application/json; charset=utf-8")
        self.entry["status"] = status
        self.entry["ms"] = int((time.time() - t0) * 1000)
        emu.record(self.entry)
        try:
            self.send_response(status)
            headers.setdefault("Content-Type", "application/octet-stream")
            headers["Content-Length"] = str(len(body))
            headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def q(self, name):
        v = self.query.get(name)
        return v[0] if v else None

    def header(self, name):
        return self.headers.get(name)

    # ------------------------------------------------------------ routing
    def route(self, method):
        emu = self.emu
        path = self.url_path
        if path.startswith("/_emu/"):
            self.entry["service"] = "control"
            return self.control(method, path)
        self.apply_knobs(path)
        if self.scheme == "http":
            if path == "/metadata/identity/oauth2/token":
                self.entry["service"] = "imds"
                return self.imds(method)
            if path == "/msi/token":
                self.entry["service"] = "appservice"
                return self.appservice(method)
            if path in ("/aia/intermediate.cer", "/aia/root.cer"):
                self.entry["service"] = "aia"
                if method not in ("GET", "HEAD"):
                    raise HttpError(405, {"error": "method not allowed"})
                der = emu.inter_der if "intermediate" in path else emu.root_der
                return 200, {"Content-Type": "application/pkix-cert"}, der
            raise HttpError(404, {"error": "not_found",
                                  "error_description": "no such endpoint"})
        if path == "/_github/token":
            self.entry["service"] = "github"
            return self.github_token(method)
        seg = path.strip("/").split("/")
        if seg[0] in ("certificates", "keys", "secrets"):
            self.entry["service"] = emu.mode
            return self.vault(method, seg)
        if seg[0] == emu.tenant or (len(seg) >= 2 and (
                seg[1] in ("oauth2", "v2.0", ".well-known", "discovery"))):
            self.entry["service"] = "entra"
            return self.entra(method, seg)
        raise self.kv_error(404, "NotFound",
                            "The requested resource was not found: %s" % path)

    def apply_knobs(self, path):
        emu = self.emu
        only = emu.knob("only_paths") or []
        if only and not any(path.startswith(p) for p in only):
            return
        if emu.take("reset_next"):
            raise Reset()
        latency = emu.knob("latency_ms") or 0
        if latency:
            time.sleep(latency / 1000.0)
        if emu.over_rate_limit():
            self.entry["knob"] = "rate_limit"
            raise HttpError(429, self.kv_body(
                "Throttled", "Request was not processed because too many "
                "requests were received. Reason: VaultRequestTypeLimitReached"))
        if emu.take("throttle_next"):
            headers = {}
            ra = emu.knob("throttle_retry_after")
            if ra is not None:
                headers["Retry-After"] = str(ra)
            self.entry["knob"] = "throttle"
            raise HttpError(429, self.kv_body(
                "Throttled", "Request was not processed because too many "
                "requests were received. Reason: VaultRequestTypeLimitReached"),
                headers)
        if emu.take("fail_next"):
            st = int(emu.knob("fail_status") or 503)
            code = {500: "InternalServerError", 502: "BadGateway",
                    503: "ServiceUnavailable", 504: "GatewayTimeout"}.get(
                        st, "Error%d" % st)
            self.entry["knob"] = "fail"
            raise HttpError(st, self.kv_body(
                code, "The service encountered a transient error "
                "(emulator fail_next knob). Please retry."))

    # ------------------------------------------------------------ control
    def control(self, method, path):
        emu = self.emu
        if path == "/_emu/log" and method == "GET":
            with emu.lock:
                return 200, {}, list(emu.log_entries)
        if path == "/_emu/config":
            if method == "GET":
                return 200, {}, emu.set_knobs({})
            if method == "POST":
                return 200, {}, emu.set_knobs(self.json_body() or {})
        if path == "/_emu/reset" and method == "POST":
            emu.reset()
            return 200, {}, {"ok": True}
        if path == "/_emu/info" and method == "GET":
            return 200, {}, emu.ready_info()
        if path == "/_emu/mint" and method == "POST":
            req = self.json_body() or {}
            token = emu.mint_federated(
                req.get("sub", emu.github["subject"]),
                req.get("aud", EXCHANGE_AUDIENCE), req.get("iss"),
                req.get("lifetime", 300), req.get("claims"))
            return 200, {}, {"value": token}
        raise HttpError(404, {"error": "unknown control endpoint"})

    def json_body(self):
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise HttpError(400, {"error": "body is not JSON"})

    # -------------------------------------------------------- Key Vault
    def kv_body(self, code, message, inner=None):
        if self.emu.mode == "managedhsm":
            message = "%s (Activity ID: %s)" % (message, uuid.uuid4())
        err = {"code": code, "message": message}
        if inner:
            err["innererror"] = {"code": inner}
        return {"error": err}

    def kv_error(self, status, code, message, inner=None, headers=None):
        self.entry["error"] = inner or code
        return HttpError(status, self.kv_body(code, message, inner), headers)

    def challenge_header(self):
        emu = self.emu
        style = emu.knob("challenge_style") or "resource"
        authority = "%s/%s" % (emu.https_url, emu.tenant)
        resource = emu.vault_resource()
        if style == "scope":
            return 'Bearer authorization="%s", scope="%s/.default"' % (
                authority, resource)
        if style == "authorization_uri":
            return 'Bearer authorization_uri="%s", resource="%s"' % (
                authority, resource)
        return 'Bearer authorization="%s", resource="%s"' % (authority, resource)

    def unauthorized(self, message):
        self.entry["error"] = "Unauthorized"
        return HttpError(401, self.kv_body("Unauthorized", message),
                         {"WWW-Authenticate": self.challenge_header()})

    def authenticate(self):
        """-> token claims, or raises 401."""
        emu = self.emu
        auth = self.header("Authorization") or ""
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise self.unauthorized(
                "AKV10000: Request is missing a Bearer or PoP token.")
        token = auth[7:].strip()
        try:
            header, claims, si, sig = jwt_decode(token)
        except (ValueError, TypeError):
            raise self.unauthorized(
                "AKV10005: The access token could not be parsed.")
        if header.get("kid") != emu.token_kid or not jwt_verify(
                emu.token_key.public_key(), header, si, sig):
            raise self.unauthorized("AKV10046: Unable to resolve the key "
                                    "used for signature validation.")
        self.entry["client_id"] = claims.get("appid")
        t = now()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= t:
            raise self.unauthorized("AKV10021: Token has expired.")
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > t + 300:
            raise self.unauthorized("AKV10020: Token not yet valid.")
        aud = claims.get("aud")
        resource = emu.vault_resource()
        if aud not in (resource, resource + "/"):
            raise self.unauthorized(
                "AKV10022: Invalid audience. Expected %s, found: %s." % (
                    resource, aud))
        iss = "https://sts.windows.net/%s/" % emu.tenant
        if claims.get("iss") != iss:
            raise self.unauthorized(
                "AKV10032: Invalid issuer. Expected one of %s, found %s." % (
                    iss, claims.get("iss")))
        if emu_base.token_spent(emu.lock, emu.knobs, emu.token_uses, token):
            self.entry["knob"] = "expire_after"
            raise self.unauthorized("AKV10021: Token has expired.")
        return claims

    def authorize(self, claims, short_action, resource_path):
        emu = self.emu
        ident = emu.identities.get(claims.get("appid")) or {}
        prefix = ("Microsoft.KeyVault/managedHsm/" if emu.mode == "managedhsm"
                  else "Microsoft.KeyVault/vaults/")
        full = prefix + short_action
        if emu.mode == "managedhsm" and short_action == "keys/read":
            full += "/action"
        elif short_action in ("keys/sign", "secrets/getSecret",
                              "certificates/create", "certificates/update"):
            full += "/action"
        granted = set()
        for a in ident.get("actions", []):
            a = re.sub(r"^Microsoft\.KeyVault/(vaults|managedHsm)/", "", a)
            a = re.sub(r"/action$", "", a)
            granted.add(a)
        denied = set()
        for a in emu.knob("deny_actions") or []:
            a = re.sub(r"^Microsoft\.KeyVault/(vaults|managedHsm)/", "", a)
            denied.add(re.sub(r"/action$", "", a))
        if short_action in granted and short_action not in denied:
            return
        caller = "appid=%s;oid=%s;iss=https://sts.windows.net/%s/" % (
            claims.get("appid"), claims.get("oid"), emu.tenant)
        if emu.mode == "managedhsm":
            msg = ("Caller is not authorized to perform action on resource.\r\n"
                   "Caller: %s\r\nAction: '%s'\r\nResource: '/%s'\r\n"
                   "Assignment: (not found)\r\nDecisionReason: "
                   "'DeniedWithNoValidRBAC'\r\nManaged HSM: %s;location="
                   "westeurope\r\n" % (caller, full, resource_path,
                                        emu.vault_name))
        else:
            msg = ("Caller is not authorized to perform action on resource."
                   "\r\nIf role assignments, deny assignments or role "
                   "definitions were changed recently, please observe "
                   "propagation time.\r\nCaller: %s\r\nAction: '%s'\r\n"
                   "Resource: '/subscriptions/00000000-0000-0000-0000-"
                   "000000000000/resourcegroups/hsmsign-emu/providers/"
                   "microsoft.keyvault/vaults/%s/%s'\r\nAssignment: "
                   "(not found)\r\nDenyAssignmentId: null\r\nDecisionReason: "
                   "'DeniedWithNoValidRBAC' \r\nVault: %s;location=westeurope"
                   "\r\n" % (caller, full, emu.vault_name,
                             resource_path.lower(), emu.vault_name))
        self.entry["action"] = full
        raise self.kv_error(403, "Forbidden", msg, "ForbiddenByRbac")

    def vault(self, method, seg):
        emu = self.emu
        av = self.q("api-version")
        if av is None or av == "":
            raise self.kv_error(400, "BadParameter",
                                "The api-version query parameter is missing. "
                                "Supported versions: %s." %
                                ", ".join(API_VERSIONS))
        if av not in API_VERSIONS:
            raise self.kv_error(
                400, "BadParameter",
                "The specified version (%s) is not recognized. Consider using "
                "the latest supported version (%s)." % (av, LATEST_API_VERSION))
        claims = self.authenticate()
        kind = seg[0]
        rest = seg[1:]
        if rest and rest[-1] == "" and len(rest) > 1:
            rest = rest[:-1]             # SDKs send "/keys/{name}/"
        if not rest or not rest[0]:
            raise self.kv_error(405 if method != "GET" else 400,
                                "BadParameter", "A name is required.")
        name = rest[0]
        if not NAME_RE.match(name):
            raise self.kv_error(400, "BadParameter",
                                "Invalid name '%s'." % name)
        if emu.mode == "managedhsm" and kind != "keys":
            raise self.kv_error(
                404, "NotFound", "Managed HSM has no /%s endpoint: the "
                "requested operation is not supported." % kind)
        if kind == "keys" and method == "POST" and rest[-1] == "sign" and \
                len(rest) in (2, 3):
            version = rest[1] if len(rest) == 3 else ""
            self.authorize(claims, "keys/sign", "keys/" + name)
            return self.sign(name, version)
        if kind == "certificates" and len(rest) >= 2 and \
                rest[1] in ("create", "pending"):
            return self.cert_operation(method, claims, name, rest[2:],
                                       rest[1] == "create")
        if method != "GET" or len(rest) > 2:
            raise self.kv_error(405 if len(rest) <= 2 else 400, "BadParameter",
                                "Operation %s %s is not supported by the "
                                "emulator." % (method, self.url_path))
        version = rest[1] if len(rest) == 2 else ""
        action = {"keys": "keys/read", "certificates": "certificates/read",
                  "secrets": "secrets/getSecret"}[kind]
        self.authorize(claims, action, kind + "/" + name)
        vk = self.lookup(kind, name, version)
        if kind == "keys":
            return 200, {}, self.key_bundle(vk)
        if kind == "certificates":
            return 200, {}, self.cert_bundle(vk)
        return 200, {}, self.secret_bundle(vk)

    # ------------------------------------- certificate CSR workflow (1.e)
    def cert_operation(self, method, claims, name, rest, create):
        """create, GET/PATCH/DELETE pending, POST pending/merge."""
        if create and method == "POST" and not rest:
            self.authorize(claims, "certificates/create", "certificates/" +
                           name)
            return self.cert_create(name)
        if not create and rest == ["merge"] and method == "POST":
            self.authorize(claims, "certificates/create", "certificates/" +
                           name)
            return self.cert_merge(name)
        if not create and not rest and method in ("GET", "PATCH", "DELETE"):
            action = {"GET": "certificates/read",
                      "PATCH": "certificates/update",
                      "DELETE": "certificates/delete"}[method]
            self.authorize(claims, action, "certificates/" + name)
            op = self.pending_op(name)
            if method == "PATCH":
                body = self.json_body()
                if not isinstance(body, dict) or \
                        body.get("cancellation_requested") is not True:
                    raise self.kv_error(400, "BadParameter", "Property "
                                        "'cancellation_requested' must be "
                                        "true.")
                op["cancellation_requested"] = True
                op["status"] = "cancelled"
            elif method == "DELETE":
                with self.emu.lock:
                    self.emu.pending.pop(name, None)
            return 200, {}, self.operation_body(op)
        raise self.kv_error(405, "BadParameter", "Operation %s %s is not "
                            "supported by the emulator." % (method,
                                                            self.url_path))

    def pending_op(self, name):
        op = self.emu.pending.get(name)
        if op is None:
            raise self.kv_error(
                404, "PendingCertificateNotFound", "Pending certificate not "
                "found: %s" % name)
        return op

    def operation_body(self, op):
        base = "%s/certificates/%s" % (self.emu.https_url, op["name"])
        return {"id": base + "/pending", "issuer": {"name": "Unknown"},
                "csr": base64.b64encode(op["csr"]).decode(),
                "cancellation_requested": op["cancellation_requested"],
                "status": op["status"],
                "status_details": "Pending certificate created. Please "
                "Perform Merge to complete the request.",
                "request_id": op["request_id"]}

    def parse_policy(self, policy):
        """-> (kind, size, subject Name, ekus, key usage) or raises 400."""
        kp = policy.get("key_props") or {}
        xp = policy.get("x509_props") or {}
        kty = kp.get("kty")
        if kty not in ("RSA", "RSA-HSM", "EC", "EC-HSM"):
            raise self.kv_error(400, "BadParameter", "Invalid key type '%s'."
                                % kty)
        if kty.startswith("RSA"):
            kind, size = "RSA", kp.get("key_size") or 2048
            if size not in (2048, 3072, 4096):
                raise self.kv_error(400, "BadParameter",
                                    "Invalid key size %r." % size)
        else:
            kind, size = "EC", kp.get("crv") or "P-256"
            if size not in CURVES:
                raise self.kv_error(400, "BadParameter",
                                    "Invalid curve %r." % size)
        try:
            # Key Vault accepts "CN=a, O=b": spaces after the commas.
            parts = re.split(r"(?<!\\),", xp.get("subject") or "")
            subject = x509.Name.from_rfc4514_string(
                ",".join(p.strip() for p in parts))
        except (ValueError, TypeError):
            subject = None
        if not subject:
            raise self.kv_error(400, "BadParameter", "Invalid subject '%s'."
                                % xp.get("subject"))
        if (policy.get("issuer") or {}).get("name") != "Unknown":
            raise self.kv_error(400, "BadParameter", "The emulator only "
                                "supports issuer 'Unknown'.")
        return kind, size, subject, kp

    def cert_create(self, name):
        body = self.json_body()
        policy = body.get("policy") if isinstance(body, dict) else None
        if not isinstance(policy, dict):
            raise self.kv_error(400, "BadParameter",
                                "Property 'policy' is required.")
        kind, size, subject, kp = self.parse_policy(policy)
        self.entry["policy"] = {"kty": kp.get("kty"), "size": size,
                                "exportable": kp.get("exportable"),
                                "ekus": policy["x509_props"].get("ekus"),
                                "key_usage": policy["x509_props"].get(
                                    "key_usage")}
        with self.emu.lock:
            if name in self.emu.pending:
                raise self.kv_error(
                    409, "Conflict", "There is a pending certificate "
                    "operation for certificate '%s'. Complete or delete it "
                    "first." % name)
        key = self.emu.keystore.get("pending-%s%s" % (kind.lower(), size),
                                    kind, size)
        csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .sign(key, hashes.SHA256()))
        op = {"name": name, "key": key, "kind": kind, "size": size,
              "csr": csr.public_bytes(serialization.Encoding.DER),
              "request_id": uuid.uuid4().hex, "status": "inProgress",
              "cancellation_requested": False,
              "hsm": kp.get("kty", "").endswith("-HSM")}
        with self.emu.lock:
            self.emu.pending[name] = op
        loc = "%s/certificates/%s/pending?api-version=%s&request_id=%s" % (
            self.emu.https_url, name, self.q("api-version"), op["request_id"])
        return 202, {"Location": loc}, self.operation_body(op)

    def cert_merge(self, name):
        op = self.pending_op(name)
        body = self.json_body()
        x5c = body.get("x5c") if isinstance(body, dict) else None
        if not isinstance(x5c, list) or not x5c:
            raise self.kv_error(400, "BadParameter",
                                "Property 'x5c' is required.")
        try:
            certs = [x509.load_der_x509_certificate(base64.b64decode(c))
                     for c in x5c]
        except (ValueError, TypeError):
            raise self.kv_error(400, "BadParameter", "Property 'x5c' holds "
                                "an invalid certificate.")
        self.entry["x5c"] = [c.subject.rfc4514_string() for c in certs]
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if certs[0].public_key().public_bytes(
                serialization.Encoding.DER, spki) != \
                op["key"].public_key().public_bytes(
                    serialization.Encoding.DER, spki):
            raise self.kv_error(400, "BadParameter", "Public key from x509 "
                                "certificate and key of this instance doesn't "
                                "match")
        vk = {"name": name, "kind": op["kind"], "size": op["size"],
              "key": op["key"], "cert": certs[0], "der": der_cert(certs[0]),
              "chain": certs[1:], "version": uuid.uuid4().hex,
              "created": now(), "merged": True, "hsm": op["hsm"]}
        with self.emu.lock:
            self.emu.vault_keys[name] = vk
            self.emu.pending.pop(name, None)
        return 201, {}, self.cert_bundle(vk)

    def lookup(self, kind, name, version):
        vk = self.emu.vault_keys.get(name)
        if vk is None or (version and version != vk["version"]):
            what = {"keys": ("KeyNotFound", "A key"),
                    "certificates": ("CertificateNotFound", "A certificate"),
                    "secrets": ("SecretNotFound", "A secret")}[kind]
            ident = name + ("/" + version if version else "")
            thing = kind[:-1]
            raise self.kv_error(
                404, what[0], "%s with (name/id) %s was not found in this key "
                "vault. If you recently deleted this %s you may be able to "
                "recover it using the correct recovery command. For help "
                "resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125182" % (
                    what[1], ident, thing))
        return vk

    def vault_url(self):
        """The vault's URL as the client named it: a name under
        .hsmsign.test when it came through tests/servers/connect_proxy.py
        (key ids must start with the vault URL the client uses), else the
        emulator's own."""
        host = self.headers.get("Host") or ""
        if host.partition(":")[0].endswith(".hsmsign.test"):
            return "https://" + host
        return self.emu.https_url

    def vid(self, kind, vk):
        return "%s/%s/%s/%s" % (self.vault_url(), kind, vk["name"],
                                vk["version"])

    def attributes(self, vk, cert=False):
        a = {"enabled": True, "created": vk["created"],
             "updated": vk["created"],
             "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
        if cert:
            c = vk["cert"]
            a["nbf"] = int(c.not_valid_before.replace(
                tzinfo=datetime.timezone.utc).timestamp())
            a["exp"] = int(c.not_valid_after.replace(
                tzinfo=datetime.timezone.utc).timestamp())
        elif self.q("api-version") in ("2025-06-01", "2025-07-01"):
            a["exportable"] = False
        return a

    def key_bundle(self, vk):
        hsm = self.emu.mode == "managedhsm"
        pub = vk["key"].public_key()
        if vk["kind"] == "RSA":
            pn = pub.public_numbers()
            jwk = {"kid": self.vid("keys", vk),
                   "kty": "RSA-HSM" if hsm else "RSA",
                   "key_ops": ["sign", "verify"],
                   "n": b64url(int_bytes(pn.n)), "e": b64url(int_bytes(pn.e))}
        else:
            pn = pub.public_numbers()
            width = (pub.curve.key_size + 7) // 8
            jwk = {"kid": self.vid("keys", vk),
                   "kty": "EC-HSM" if hsm else "EC",
                   "key_ops": ["sign", "verify"], "crv": vk["size"],
                   "x": b64url(int_bytes(pn.x, width)),
                   "y": b64url(int_bytes(pn.y, width))}
        out = {"key": jwk, "attributes": self.attributes(vk)}
        if not hsm:
            out["managed"] = True
        return out

    def cert_bundle(self, vk):
        c = vk["cert"]
        if vk["kind"] == "RSA":
            key_props = {"exportable": False,
                         "kty": "RSA-HSM" if vk.get("hsm") else "RSA",
                         "key_size": vk["size"], "reuse_key": False}
        else:
            key_props = {"exportable": False,
                         "kty": "EC-HSM" if vk.get("hsm") else "EC",
                         "crv": vk["size"], "reuse_key": False}
        base = "%s/certificates/%s" % (self.emu.https_url, vk["name"])
        attrs = self.attributes(vk, cert=True)
        other = self.emu.vault_keys.get(self.emu.knob("cert_of") or "")
        der = other["der"] if other else vk["der"]
        out = {
            "id": self.vid("certificates", vk),
            "kid": self.vid("keys", vk),
            "sid": self.vid("secrets", vk),
            "x5t": b64url(hashlib.sha1(der).digest()),
            "cer": base64.b64encode(der).decode(),
            "attributes": attrs,
            "policy": {
                "id": base + "/policy",
                "key_props": key_props,
                "secret_props": {"contentType": "application/x-pkcs12"},
                "x509_props": {
                    "subject": c.subject.rfc4514_string(),
                    "ekus": ["1.3.6.1.5.5.7.3.3"],
                    "key_usage": ["digitalSignature"],
                    "validity_months": 12},
                "lifetime_actions": [{"trigger": {"lifetime_percentage": 80},
                                      "action": {"action_type":
                                                 "EmailContacts"}}],
                "issuer": {"name": "Unknown"},
                "attributes": {"enabled": True, "created": vk["created"],
                               "updated": vk["created"]}},
            "tags": {},
        }
        if self.q("api-version") == "2025-07-01":
            out["preserveCertOrder"] = False
        return out

    def secret_bundle(self, vk):
        # Non-exportable key: the secret carries the certificates only.
        if self.q("outContentType") == "application/x-pem-file":
            value = (pem_cert(vk["cert"]) + pem_cert(self.emu.inter_cert)
                     ).decode()
            ctype = "application/x-pem-file"
        else:
            value = base64.b64encode(pkcs12.serialize_key_and_certificates(
                None, None, vk["cert"], [self.emu.inter_cert],
                serialization.NoEncryption())).decode()
            ctype = "application/x-pkcs12"
        return {"value": value, "contentType": ctype,
                "id": self.vid("secrets", vk), "managed": True,
                "attributes": self.attributes(vk, cert=True),
                "kid": self.vid("keys", vk)}

    def sign(self, name, version):
        emu = self.emu
        vk = self.lookup("keys", name, version)
        req = None
        try:
            req = json.loads(self.body) if self.body else None
        except ValueError:
            pass
        if not isinstance(req, dict):
            raise self.kv_error(400, "BadParameter",
                                "The request body is not valid JSON.")
        alg, value = req.get("alg"), req.get("value")
        self.entry["alg"] = alg
        if not isinstance(alg, str) or not alg:
            raise self.kv_error(400, "BadParameter",
                                "Property 'alg' is required.")
        if not isinstance(value, str):
            raise self.kv_error(400, "BadParameter",
                                "Property 'value' is required.")
        try:
            data = b64url_decode(value)
        except (ValueError, TypeError):
            raise self.kv_error(400, "BadParameter",
                                "Property 'value' is not valid base64url.")
        if alg in KNOWN_BUT_UNSUPPORTED_ALGS or alg not in SIGN_ALGS:
            raise self.kv_error(400, "BadParameter",
                                "Invalid algorithm '%s' for key type %s." % (
                                    alg, vk["kind"]))
        hash_cls, dlen, need = SIGN_ALGS[alg]
        key = vk["key"]
        if (need == "RSA") != (vk["kind"] == "RSA") or (
                need != "RSA" and need != vk["size"]):
            raise self.kv_error(
                400, "BadParameter", "Algorithm %s is not supported by key %s "
                "(%s%s)." % (alg, name, vk["kind"],
                             " " + vk["size"] if vk["kind"] == "EC" else ""))
        if alg == "RSNULL":
            try:
                sig = rsa_pkcs1_type1_raw(key, data)
            except ValueError:
                raise self.kv_error(400, "BadParameter",
                                    "The value is too long for the key.")
        else:
            if len(data) != dlen:
                raise self.kv_error(
                    400, "BadParameter", "Invalid length of the digest: "
                    "%d bytes for algorithm %s (expected %d)." % (
                        len(data), alg, dlen))
            pre = utils.Prehashed(hash_cls())
            if alg.startswith("RS"):
                sig = key.sign(data, padding.PKCS1v15(), pre)
            elif alg.startswith("PS"):
                sig = key.sign(data, padding.PSS(padding.MGF1(hash_cls()),
                                                 dlen), pre)
            else:
                r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(pre)))
                w = (key.curve.key_size + 7) // 8
                sig = int_bytes(r, w) + int_bytes(s, w)
        if emu.take("corrupt_sign_next"):
            sig = bytes([sig[0] ^ 0x01]) + sig[1:]
            self.entry["knob"] = "corrupt"
        value = b64url(sig)
        if emu.take("bad_b64_sign_next"):
            value = emu_base.BAD_BASE64
            self.entry["knob"] = "bad_b64"
        return 200, {}, {"kid": self.vid("keys", vk), "value": value}

    # ------------------------------------------------------------ Entra
    def entra(self, method, seg):
        emu = self.emu
        tenant = seg[0]
        rest = "/".join(seg[1:])
        if tenant != emu.tenant:
            raise aad_error(400, 90002, "invalid_request",
                            "Tenant '%s' not found. Check to make sure you "
                            "have the correct tenant ID and are signing into "
                            "the correct cloud." % tenant)
        base = "%s/%s" % (emu.https_url, tenant)
        if method == "GET" and rest in ("v2.0/.well-known/openid-configuration",
                                        ".well-known/openid-configuration"):
            return 200, {}, {
                "token_endpoint": base + "/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post", "private_key_jwt",
                    "client_secret_basic"],
                "jwks_uri": base + "/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token",
                                             "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email",
                                     "offline_access"],
                "issuer": base + "/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": base + "/oauth2/v2.0/authorize",
                "device_authorization_endpoint": base +
                "/oauth2/v2.0/devicecode",
                "http_logout_supported": True, "frontchannel_logout_supported":
                True, "end_session_endpoint": base + "/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf"],
                "tenant_region_scope": "EU", "cloud_instance_name":
                "microsoftonline.com", "cloud_graph_host_name":
                "graph.windows.net", "msgraph_host": "graph.microsoft.com"}
        if method == "GET" and rest in ("discovery/v2.0/keys", "discovery/keys"):
            return 200, {}, {"keys": [rsa_jwk(emu.token_key.public_key(),
                                              emu.token_kid)]}
        if rest != "oauth2/v2.0/token":
            raise aad_error(404, 90027, "invalid_request",
                            "Unknown Entra endpoint '/%s'." % "/".join(seg))
        if method != "POST":
            raise aad_error(405, 900561, "invalid_request",
                            "The endpoint only accepts POST requests. "
                            "Received a %s request." % method)
        ctype = (self.header("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise aad_error(400, 900144, "invalid_request",
                            "The request body must contain the following "
                            "parameter: 'grant_type'.")
        form = {k: v[0] for k, v in urllib.parse.parse_qs(
            self.body.decode("utf-8", "replace"),
            keep_blank_values=True).items()}
        basic_id = basic_secret = None
        auth = self.header("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip()).decode()
                basic_id, basic_secret = [urllib.parse.unquote_plus(x) for x in
                                          raw.split(":", 1)]
            except (ValueError, UnicodeDecodeError):
                raise aad_error(401, 7000215, "invalid_client",
                                "Invalid client secret provided.")
        cid = form.get("client_id") or basic_id
        self.entry["client_id"] = cid
        self.entry["form"] = {k: form[k] for k in (
            "grant_type", "scope", "client_assertion_type") if k in form}
        if form.get("grant_type") != "client_credentials":
            if not form.get("grant_type"):
                raise aad_error(400, 900144, "invalid_request",
                                "The request body must contain the following "
                                "parameter: 'grant_type'.")
            raise aad_error(400, 70003, "unsupported_grant_type",
                            "The app requested an unsupported grant type "
                            "'%s'." % form["grant_type"])
        if not cid:
            raise aad_error(400, 900144, "invalid_request",
                            "The request body must contain the following "
                            "parameter: 'client_id'.")
        scope = form.get("scope")
        if not scope:
            raise aad_error(400, 900144, "invalid_request",
                            "The request body must contain the following "
                            "parameter: 'scope'.")
        defaults = [s for s in scope.split() if s.endswith("/.default")]
        if len(defaults) != 1:
            raise aad_error(400, 70011, "invalid_scope",
                            "The provided value for the input parameter "
                            "'scope' is not valid. The scope %s is not valid."
                            % scope)
        resource = defaults[0][:-len("/.default")].rstrip("/")
        if resource not in KNOWN_RESOURCES and resource != emu.knob("resource"):
            raise aad_error(400, 500011, "invalid_resource",
                            "The resource principal named %s was not found in "
                            "the tenant named %s. This can happen if the "
                            "application has not been installed by the "
                            "administrator of the tenant or consented to by "
                            "any user in the tenant. You might have sent your "
                            "authentication request to the wrong tenant." % (
                                resource, tenant))
        ident = emu.identities.get(cid)
        if ident is None or ident.get("managed"):
            raise aad_error(400, 700016, "unauthorized_client",
                            "Application with identifier '%s' was not found "
                            "in the directory '%s'. This can happen if the "
                            "application has not been installed by the "
                            "administrator of the tenant or consented to by "
                            "any user in the tenant. You may have sent your "
                            "authentication request to the wrong tenant." % (
                                cid, tenant))
        secret = form.get("client_secret") or basic_secret
        assertion = form.get("client_assertion")
        if secret is not None and form.get("client_secret") is not None \
                and basic_secret is not None:
            raise aad_error(401, 7000215, "invalid_client",
                            "Invalid client secret provided.")
        if secret:
            self.entry["credential"] = "secret"
            if not ident.get("secret") or secret != ident["secret"]:
                raise aad_error(401, 7000215, "invalid_client",
                                "Invalid client secret provided. Ensure the "
                                "secret being sent in the request is the "
                                "client secret value, not the client secret "
                                "ID, for a secret added to app '%s'." % cid)
        elif assertion:
            if form.get("client_assertion_type") != \
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                raise aad_error(400, 50027, "invalid_request",
                                "Invalid client_assertion_type '%s'." %
                                form.get("client_assertion_type"))
            self.check_assertion(ident, cid, assertion, base)
        else:
            raise aad_error(401, 7000218, "invalid_client",
                            "The request body must contain the following "
                            "parameter: 'client_assertion' or "
                            "'client_secret'.")
        token, lifetime, _ = emu.issue_token(ident, resource)
        return 200, {"Cache-Control": "no-store, no-cache",
                     "Pragma": "no-cache"}, {
            "token_type": "Bearer", "expires_in": lifetime,
            "ext_expires_in": lifetime, "access_token": token}

    def check_assertion(self, ident, cid, assertion, base):
        emu = self.emu
        try:
            header, claims, si, sig = jwt_decode(assertion)
        except (ValueError, TypeError):
            raise aad_error(400, 50027, "invalid_request",
                            "JWT token is invalid or malformed.")
        t = now()
        # A certificate assertion is self-issued (iss = sub = client id) and
        # names the certificate (x5t / x5t#S256); anything else is an
        # external (federated) token, e.g. GitHub's, which carries x5t too.
        if ("x5t" in header or "x5t#S256" in header) and \
                claims.get("iss") == cid:
            self.entry["credential"] = "certificate"
            cert = None
            for c in ident.get("certificates", []):
                der = der_cert(c)
                if header.get("x5t#S256") == b64url(
                        hashlib.sha256(der).digest()) or header.get(
                            "x5t") == b64url(hashlib.sha1(der).digest()):
                    cert = c
            thumb = header.get("x5t#S256") or header.get("x5t")
            if cert is None:
                raise aad_error(401, 700027, "invalid_client",
                                "Client assertion contains an invalid "
                                "signature. [Reason - The key was not found., "
                                "Thumbprint of key used by client: '%s', "
                                "Please visit the Azure Portal, Graph Explorer "
                                "or directly use MS Graph to see configured "
                                "keys for app Id '%s'.]" % (thumb, cid))
            if header.get("alg") not in ("RS256", "PS256") or not jwt_verify(
                    cert.public_key(), header, si, sig):
                raise aad_error(401, 700027, "invalid_client",
                                "Client assertion contains an invalid "
                                "signature. [Reason - The provided signature "
                                "value did not match the expected signature "
                                "value., Thumbprint of key used by client: "
                                "'%s', Found key 'Start=..., End=...']" % thumb)
            if claims.get("sub") != cid:
                raise aad_error(400, 700021, "invalid_client",
                                "Client assertion application identifier "
                                "doesn't match 'client_id' parameter. Review "
                                "the documentation at "
                                "https://docs.microsoft.com/en-us/azure/"
                                "active-directory/develop/"
                                "active-directory-certificate-credentials .")
            endpoint = base + "/oauth2/v2.0/token"
            aud = claims.get("aud")
            alt = endpoint.replace("127.0.0.1", "localhost")
            if aud not in (endpoint, alt):
                raise aad_error(400, 50027, "invalid_client",
                                "JWT token is invalid or malformed. [Reason - "
                                "the assertion audience '%s' is not the token "
                                "endpoint '%s'.]" % (aud, endpoint))
            self.check_times(claims, t)
            return
        self.entry["credential"] = "federated"
        if header.get("kid") != emu.github_kid or not jwt_verify(
                emu.github_key.public_key(), header, si, sig):
            raise aad_error(400, 50013, "invalid_client",
                            "Assertion failed signature validation. [Reason - "
                            "The key was not found., Thumbprint of key used by "
                            "client: '%s']" % header.get("kid"))
        self.check_times(claims, t)
        iss, sub, aud = claims.get("iss"), claims.get("sub"), claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        records = ident.get("federated") or []
        if not any(r["issuer"] == iss for r in records):
            raise aad_error(400, 700211, "invalid_request",
                            "No matching federated identity record found for "
                            "presented assertion issuer '%s'. Please check "
                            "your federated identity credential Subject, "
                            "Audience and Issuer against the presented "
                            "assertion. https://learn.microsoft.com/entra/"
                            "workload-id/workload-identity-federation" % iss)
        for r in records:
            if r["issuer"] == iss and r["subject"] == sub and any(
                    a in r.get("audiences", [EXCHANGE_AUDIENCE])
                    for a in auds):
                return
        raise aad_error(400, 70021, "invalid_request",
                        "No matching federated identity record found for "
                        "presented assertion. Assertion Issuer: '%s'. "
                        "Assertion Subject: '%s'. Assertion Audience: '%s'. "
                        "https://learn.microsoft.com/entra/workload-id/"
                        "workload-identity-federation" % (
                            iss, sub, ",".join(str(a) for a in auds)))

    @staticmethod
    def check_times(claims, t):
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, (int, float)) or exp < t - 300 or (
                isinstance(nbf, (int, float)) and nbf > t + 300):
            raise aad_error(400, 700024, "invalid_client",
                            "Client assertion is not within its valid time "
                            "range. Current time: %s, assertion valid from "
                            "%s, expiry time of assertion %s." % (
                                _iso(t), _iso(nbf), _iso(exp)))

    # ------------------------------------------------------ GitHub OIDC
    def github_token(self, method):
        emu = self.emu
        if method != "GET":
            raise HttpError(405, {"message": "Method not allowed"})
        auth = self.header("Authorization") or ""
        if not auth.lower().startswith("bearer ") or \
                auth[7:].strip() != emu.github_request_token:
            self.entry["error"] = "Unauthorized"
            raise HttpError(401, {"message": "Bad credentials: the request "
                                  "token is missing or invalid"})
        audience = self.q("audience") or emu.github["default_audience"]
        token = emu.mint_federated(emu.github["subject"], audience)
        return 200, {}, {"count": 1, "value": token}

    # ------------------------------------------------- managed identity
    def mi_select(self, params):
        emu = self.emu
        if not emu.managed_ids:
            return None
        wanted = [self.q(p) for p in params if self.q(p)]
        if not wanted:
            return emu.managed_ids[0]
        for i in emu.managed_ids:
            if wanted[0] in (i["client_id"], i.get("object_id"),
                             i.get("resource_id")):
                return i
        return None

    def mi_resource(self, err):
        res = self.q("resource")
        if not res:
            raise err("Required query variable 'resource' is missing")
        if res.rstrip("/") not in KNOWN_RESOURCES:
            raise err("AADSTS500011: The resource principal named %s was not "
                      "found in the tenant named %s." % (res, self.emu.tenant),
                      "invalid_resource")
        return res

    def imds(self, method):
        def err(msg, code="invalid_request", status=400):
            self.entry["error"] = code
            return HttpError(status, {"error": code,
                                      "error_description": msg})
        if method != "GET":
            raise err("Method not allowed", status=405)
        if (self.header("Metadata") or "").lower() != "true":
            raise err("Required metadata header not specified")
        if not self.q("api-version"):
            raise err("Required query variable 'api-version' is missing")
        res = self.mi_resource(err)
        ident = self.mi_select(("client_id", "object_id", "msi_res_id"))
        if ident is None:
            raise err("Identity not found")
        self.entry["client_id"] = ident["client_id"]
        token, lifetime, exp = self.emu.issue_token(ident, res)
        t = now()
        return 200, {}, {
            "access_token": token, "client_id": ident["client_id"],
            "refresh_token": "", "expires_in": str(lifetime),
            "expires_on": str(exp), "ext_expires_in": str(lifetime),
            "not_before": str(t), "resource": res, "token_type": "Bearer"}

    def appservice(self, method):
        def err(msg, code="invalid_request", status=400):
            self.entry["error"] = code
            return HttpError(status, {"statusCode": status, "message": msg,
                                      "correlationId": str(uuid.uuid4())})
        if method != "GET":
            raise err("Method not allowed", status=405)
        hdr = self.header("X-IDENTITY-HEADER")
        if hdr != self.emu.identity_header:
            raise err("The X-IDENTITY-HEADER header is missing or does not "
                      "match IDENTITY_HEADER.", status=401)
        if not self.q("api-version"):
            raise err("Required query variable 'api-version' is missing")
        res = self.mi_resource(err)
        ident = self.mi_select(("client_id", "principal_id", "mi_res_id"))
        if ident is None:
            raise err("Unable to load the proper Managed Identity.")
        self.entry["client_id"] = ident["client_id"]
        token, lifetime, exp = self.emu.issue_token(ident, res)
        return 200, {}, {"access_token": token, "expires_on": str(exp),
                         "resource": res, "token_type": "Bearer",
                         "client_id": ident["client_id"]}


def _iso(t):
    if not isinstance(t, (int, float)):
        return "(none)"
    return datetime.datetime.utcfromtimestamp(t).strftime(
        "%m/%d/%Y %H:%M:%S")


# ------------------------------------------------------------------ servers

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 64
    ssl_context = None

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, ValueError)):
            return              # client went away, bad TLS, garbage request
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--mode", choices=("vault", "managedhsm"), default="vault")
    ap.add_argument("--config", help="JSON file (README: Configuration)")
    ap.add_argument("--key-cache", default=os.environ.get("HS_EMU_KEY_CACHE"),
                    help="directory to reuse generated private keys from "
                    "(default $HS_EMU_KEY_CACHE; none: generate every time)")
    ap.add_argument("--no-stdin-watch", action="store_true",
                    help="do not exit when stdin (a pipe) reaches EOF")
    args = ap.parse_args(argv)
    config = {}
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    os.makedirs(args.state_dir, exist_ok=True)

    stop = emu_base.stop_event(watch=not args.no_stdin_watch)

    emu = Emulator(args.state_dir, args.mode, config, args.key_cache)

    class HttpsHandler(Handler):
        pass

    class HttpHandler(Handler):
        pass

    HttpsHandler.emu = HttpHandler.emu = emu
    HttpsHandler.scheme, HttpHandler.scheme = "https", "http"
    https = Server(("127.0.0.1", 0), HttpsHandler)
    http_srv = Server(("127.0.0.1", 0), HttpHandler)
    emu.setup(https.server_address[1], http_srv.server_address[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(emu.tls_cert, emu.tls_key)
    https.ssl_context = ctx

    threads = [threading.Thread(target=srv.serve_forever,
                                kwargs={"poll_interval": 0.2}, daemon=True)
               for srv in (https, http_srv)]
    for t in threads:
        t.start()
    info = emu.ready_info()
    write_file(os.path.join(emu.dir, "ready.json"), json.dumps(info, indent=1))
    write_file(os.path.join(emu.dir, "emu.pid"), "%d\n" % os.getpid())
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    for srv in (https, http_srv):
        srv.shutdown()
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
