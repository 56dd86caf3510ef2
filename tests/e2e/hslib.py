"""Shared helpers for the hsmsign end-to-end tests.

Environment: HSMSIGN (the CLI binary) and HS_FIXTURES (tests/fixtures); both
default to the in-tree locations. Tests never sign committed fixtures in
place: HsTestCase.copy() puts a copy into a per-test temporary directory.
"""
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import pefile
from asn1crypto import cms

HERE = os.path.dirname(os.path.abspath(__file__))
HSMSIGN = os.environ.get("HSMSIGN") or os.path.join(HERE, "..", "..", "build",
                                                    "hsmsign")
FIXTURES = os.environ.get("HS_FIXTURES") or os.path.join(HERE, "..",
                                                         "fixtures")
PKI = os.path.join(FIXTURES, "pki")
PE_DIR = os.path.join(FIXTURES, "pe")
MALFORMED_DIR = os.path.join(FIXTURES, "malformed")
GOLDEN_DIR = os.path.join(FIXTURES, "golden")
ROOT_CA = os.path.join(PKI, "root.pem")

DIGESTS = ("sha1", "sha256", "sha384", "sha512")
KEYS = ("leaf-rsa2048", "leaf-rsa3072", "leaf-ec256", "leaf-ec384")
UNSIGNED_PE = ("hello32.exe", "hello64.exe", "lib32.dll", "lib64.dll",
               "app.efi", "odd64.exe", "overlay32.exe", "symtab64.exe",
               "nsis-stub.exe")
PE_FIXTURES = UNSIGNED_PE + ("presigned64.exe",)
P12_PASSWORD_FILE = os.path.join(PKI, "leaf-rsa2048.p12.pass")

OID_SPC_NESTED_SIGNATURE = "1.3.6.1.4.1.311.2.4.1"
OID_SPC_SP_OPUS_INFO = "1.3.6.1.4.1.311.2.1.12"


def pki(name):
    return os.path.join(PKI, name)


def p12_password():
    with open(P12_PASSWORD_FILE, "rb") as f:
        return f.read().decode()


def run(args, stdin=None, env=None, timeout=120):
    """Runs a command, capturing bytes stdout/stderr; never raises on rc."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(list(args), input=stdin, capture_output=True,
                          env=full_env, timeout=timeout)


def hsmsign(*args, **kw):
    return run([HSMSIGN, *args], **kw)


def key_args(leaf="leaf-rsa2048"):
    return ["--key", pki(leaf + ".key"), "--cert", pki(leaf + "-chain.pem")]


def sign(path, leaf="leaf-rsa2048", digest="sha256", *extra, **kw):
    return hsmsign("sign", *key_args(leaf), "-fd", digest, *extra, path, **kw)


def verify(path, ca=ROOT_CA, **kw):
    return hsmsign("verify", "--ca-file", ca, path, **kw)


def osslsigncode_verify(path, ca=ROOT_CA):
    """(ok, output): ok needs rc 0, the success line and no failure line.
    osslsigncode 2.9 exits 0 in three failure cases (tried here): data
    after the certificate table ("No signature found"), a broken NESTED
    signature ("Signature verification: failed" for index 1, "Succeeded")
    and a PE checksum that does not match the file (only "Warning: invalid
    PE checksum"), which hsmsign must always get right."""
    r = run(["osslsigncode", "verify", "-CAfile", ca, "-in", path])
    out = (r.stdout + r.stderr).decode(errors="replace")
    ok = (r.returncode == 0 and "Signature verification: ok" in out
          and "Signature verification: failed" not in out
          and "MISMATCH" not in out
          and "invalid PE checksum" not in out)
    return ok, out


def sbverify(path, cert=ROOT_CA):
    """sbverify 0.9.4 checks the image hash and the PKCS#7 signature but NOT
    trust: its verify callback tolerates an incomplete chain, so with the
    intermediate embedded it accepts ANY --cert (tried: other-root.pem, a leaf
    and the system bundle all pass). It does reject a signer without the
    codeSigning EKU. Use it as a digest+signature oracle, not for trust."""
    r = run(["sbverify", "--cert", cert, path])
    out = (r.stdout + r.stderr).decode(errors="replace")
    return r.returncode == 0 and "Signature verification OK" in out, out


def pesign_hash(path, digest="sha256"):
    """pesign's Authenticode hash. It omits the pad-to-8 that signers hash for
    unsigned files whose size is not a multiple of 8: only compare those."""
    r = run(["pesign", "-h", "-d", digest, "-i", path])
    out = r.stdout.decode()
    if r.returncode != 0 or not out.startswith("hash: "):
        raise AssertionError("pesign -h failed: %r" % (out + r.stderr.decode()))
    return out.split()[1].strip().lower()


def free_port():
    """A loopback TCP port nothing listens on (for a server to take, or
    for a client to be refused on)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def lines(b):
    return b.decode(errors="replace").splitlines()


# ---------------------------------------------------------------- PE layout

class PeLayout:
    """The few PE fields Authenticode cares about (authenticode.md §1.1)."""

    def __init__(self, data):
        self.e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
        e = self.e_lfanew
        if data[e:e + 4] != b"PE\0\0":
            raise ValueError("no PE signature")
        self.magic = struct.unpack_from("<H", data, e + 24)[0]
        if self.magic not in (0x10B, 0x20B):
            raise ValueError("bad optional header magic %#x" % self.magic)
        pe32 = self.magic == 0x10B
        self.checksum_off = e + 88
        self.n_rva = struct.unpack_from("<I", data, e + (116 if pe32 else 132))[0]
        self.certdir_off = e + (152 if pe32 else 168)
        self.cert_off, self.cert_size = struct.unpack_from(
            "<II", data, self.certdir_off)
        nsec = struct.unpack_from("<H", data, e + 6)[0]
        opt_size = struct.unpack_from("<H", data, e + 20)[0]
        self.sections = []
        for i in range(nsec):
            s = e + 24 + opt_size + 40 * i
            name = data[s:s + 8].rstrip(b"\0").decode()
            raw_size, raw_ptr = struct.unpack_from("<II", data, s + 16)
            self.sections.append((name, raw_ptr, raw_size))

    @property
    def signed(self):
        return self.cert_size != 0


def authenticode_digest(data, digest="sha256"):
    """Linear Authenticode digest (authenticode.md §1.2), written from the
    spec independently of the product: everything except CheckSum, the
    Certificate Table entry and the table itself; unsigned files are padded
    with zeros to a multiple of 8. Returns lowercase hex."""
    pe = PeLayout(data)
    if pe.n_rva < 5:
        raise ValueError("no Certificate Table directory entry")
    h = hashlib.new(digest)
    h.update(data[:pe.checksum_off])
    h.update(data[pe.checksum_off + 4:pe.certdir_off])
    if pe.signed:
        if pe.cert_off + pe.cert_size != len(data):
            raise ValueError("certificate table is not at EOF")
        h.update(data[pe.certdir_off + 8:pe.cert_off])
    else:
        h.update(data[pe.certdir_off + 8:])
        h.update(b"\0" * (-len(data) % 8))
    return h.hexdigest()


def cert_table_entries(data):
    """[(file offset of the DER, DER bytes)] for each WIN_CERTIFICATE."""
    pe = PeLayout(data)
    out, off, end = [], pe.cert_off, pe.cert_off + pe.cert_size
    while pe.signed and off < end:
        length, rev, ctype = struct.unpack_from("<IHH", data, off)
        if (rev, ctype) != (0x0200, 0x0002) or length < 8:
            raise ValueError("bad WIN_CERTIFICATE at %#x" % off)
        der_len = der_total_length(data, off + 8)
        out.append((off + 8, data[off + 8:off + 8 + der_len]))
        off += (length + 7) & ~7
    return out


def der_total_length(data, off):
    """Length of the DER TLV starting at data[off] (header + contents)."""
    first = data[off + 1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    return 2 + n + int.from_bytes(data[off + 2:off + 2 + n], "big")


def signed_data(der):
    ci = cms.ContentInfo.load(der)
    if ci["content_type"].native != "signed_data":
        raise ValueError("not SignedData")
    return ci["content"]


def signature_count(data):
    """Number of signatures: entries x signerInfos, plus nested ones."""
    n = 0
    for _, der in cert_table_entries(data):
        for si in signed_data(der)["signer_infos"]:
            n += 1
            if not si["unsigned_attrs"]:
                continue
            for attr in si["unsigned_attrs"]:  # no .native: it would parse
                if attr["type"].dotted == OID_SPC_NESTED_SIGNATURE:  # SPC
                    n += len(attr["values"])
    return n


def signer_info(data):
    (_, der), = cert_table_entries(data)
    si, = signed_data(der)["signer_infos"]
    return si


def signature_value_offset(data):
    """File offset of the LAST byte of the (first) signer's signature value.
    Flipping it keeps the DER parseable but invalidates the signature."""
    (der_off, der), = cert_table_entries(data)
    sig = signer_info(data)["signature"].native
    pos = der.rfind(sig)
    assert pos > 0 and der.count(sig) == 1
    return der_off + pos + len(sig) - 1


def message_digest_attr_offset(data):
    """File offset of the first byte of the messageDigest attribute value
    (inside the signed attributes, so the signature no longer matches)."""
    (der_off, der), = cert_table_entries(data)
    for attr in signer_info(data)["signed_attrs"]:
        if attr["type"].native == "message_digest":
            md = attr["values"][0].native
            assert der.count(md) == 1
            return der_off + der.find(md)
    raise AssertionError("no messageDigest attribute")


def opus_info(data):
    """(programName, choice, moreInfo URL) of SpcSpOpusInfo, or None if
    absent. choice is "unicode" (BMPString, what signtool/jsign write) or
    "ascii" (IA5String; osslsigncode puts UTF-8 bytes there)."""
    for attr in signer_info(data)["signed_attrs"]:
        if attr["type"].dotted != OID_SPC_SP_OPUS_INFO:
            continue
        seq = attr["values"][0].contents  # SEQUENCE contents
        name = choice = url = None
        for tag, body in der_children(seq):
            if tag == 0xA0:  # programName [0] EXPLICIT SpcString
                (t, s), = der_children(body)
                choice = "unicode" if t == 0x80 else "ascii"
                name = s.decode("utf-16-be" if t == 0x80 else "utf-8")
            elif tag == 0xA1:  # moreInfo [1] EXPLICIT SpcLink
                (t, s), = der_children(body)
                assert t == 0x80, "SpcLink is not the url choice: %#x" % t
                url = s.decode("ascii")
        return name, choice, url
    return None


def der_children(buf):
    """[(tag byte, contents)] of the TLVs concatenated in buf."""
    out, off = [], 0
    while off < len(buf):
        total = der_total_length(buf, off)
        hdr = 2 + (buf[off + 1] & 0x7F if buf[off + 1] >= 0x80 else 0)
        out.append((buf[off], buf[off + hdr:off + total]))
        off += total
    return out


def spc_digest(data):
    """(digest OID, digest bytes, messageDigest input) from the signed
    SpcIndirectDataContent, parsed by hand (asn1crypto expects CMS's OCTET
    STRING there). The third item is the contents octets of the
    SpcIndirectDataContent, which messageDigest must cover (§2.3)."""
    (_, der), = cert_table_entries(data)
    (_, ci), = der_children(der)                     # ContentInfo
    _, (_, sd_explicit) = der_children(ci)           # oid, [0]
    (_, sd), = der_children(sd_explicit)             # SignedData
    content_info = der_children(sd)[2][1]            # version, algs, content
    oid, (_, spc_explicit) = der_children(content_info)
    assert oid[1] == bytes.fromhex("2b0601040182370201 04".replace(" ", ""))
    (_, spc), = der_children(spc_explicit)           # SpcIndirectDataContent
    _, (_, digest_info) = der_children(spc)
    (_, alg), (_, digest) = der_children(digest_info)
    return der_children(alg)[0][1].hex(), digest, spc


OID_HEX = {  # DER contents of the digest algorithm OIDs
    "sha1": "2b0e03021a",
    "sha256": "608648016503040201",
    "sha384": "608648016503040202",
    "sha512": "608648016503040203",
}


def pe_checksum_ok(data):
    """True when the PE CheckSum field matches the file (authenticode.md
    §1.4), computed with python3-pefile."""
    pe = pefile.PE(data=data, fast_load=True)
    try:
        return pe.OPTIONAL_HEADER.CheckSum == pe.generate_checksum()
    finally:
        pe.close()


# -------------------------------------------------------------------- nginx

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format test '{log_format}';
    access_log {prefix}/access.log test;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{http}
}}
"""


class Nginx:
    """Debian's nginx (scripts/bootstrap installs it), run by a test in the
    foreground with its own prefix in the test's tmp directory, one worker
    and the current user. http: the body of the http block, a str.format
    template with {prefix} and {port} (a free loopback port chosen here, the
    one to listen on) and any other fields given as keyword arguments.
    log_format: what the access log records per request (see access()).
    Stop it with stop() (addCleanup)."""

    def __init__(self, test, http, log_format="$request_method $uri $status", **fields):
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        test.assertTrue(os.path.exists(self.nginx), "nginx is required (scripts/bootstrap)")
        self.prefix = test.path("nginx")
        os.makedirs(os.path.join(self.prefix, "tmp"))
        self.port = free_port()
        fields.update(prefix=self.prefix, port=self.port)
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(
                http=http.format(**fields), prefix=self.prefix, log_format=log_format,
                # As root, workers would switch to "nobody"; keep them ours.
                user="user root root;" if os.geteuid() == 0 else ""))
        self.proc = subprocess.Popen([self.nginx, "-p", self.prefix, "-c", conf, "-e",
                                      os.path.join(self.prefix, "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not os.path.exists(os.path.join(self.prefix, "nginx.pid")):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError("nginx did not start: " + self.errors())
            time.sleep(0.05)

    def url(self, scheme="http"):
        return "%s://127.0.0.1:%d" % (scheme, self.port)

    def errors(self):
        p = os.path.join(self.prefix, "error.log")
        return open(p).read() if os.path.exists(p) else ""

    def access(self):
        """The access log's lines, one per request as it ends (log_format)."""
        with open(os.path.join(self.prefix, "access.log")) as f:
            return f.read().splitlines()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------- tests

class HsTestCase(unittest.TestCase):
    """Gives each test a private temporary directory."""

    @classmethod
    def setUpClass(cls):
        if not os.access(HSMSIGN, os.X_OK):
            raise AssertionError("hsmsign binary not found: %s (set HSMSIGN)"
                                 % HSMSIGN)

    def setUp(self):
        td = tempfile.TemporaryDirectory(prefix="hs-e2e-")
        self.addCleanup(td.cleanup)
        self.tmp = td.name

    def path(self, name):
        return os.path.join(self.tmp, name)

    def copy(self, src, name=None):
        """Copies a fixture (relative to tests/fixtures or pe/) into tmp."""
        if not os.path.isabs(src) and os.sep not in src:
            src = os.path.join(PE_DIR, src)
        elif not os.path.isabs(src):
            src = os.path.join(FIXTURES, src)
        dst = self.path(name or os.path.basename(src))
        shutil.copyfile(src, dst)
        return dst

    def assertRc(self, result, rc, what=""):
        self.assertEqual(result.returncode, rc, "%s\nargs: %s\nstdout: %s\n"
                         "stderr: %s" % (what, " ".join(result.args),
                                         result.stdout.decode(errors="replace"),
                                         result.stderr.decode(errors="replace")))

    def assertOneErrorLine(self, result):
        err = lines(result.stderr)
        self.assertEqual(len(err), 1, "expected one stderr line: %r" % err)
        self.assertTrue(err[0].startswith("hsmsign:"), err[0])

    def signed_copy(self, src="hello64.exe", leaf="leaf-rsa2048",
                    digest="sha256", *extra):
        path = self.copy(src)
        self.assertRc(sign(path, leaf, digest, *extra), 0, "signing")
        return path
