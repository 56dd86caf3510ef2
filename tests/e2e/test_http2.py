"""Concurrent Key Vault sign requests share connections: over HTTP/2 they
are streams of one connection, over HTTP/1.1 kept-alive connections are
reused (docs/PERFORMANCE.md).

Debian's nginx (run by the test, hslib.Nginx) is a TLS reverse proxy in
front of the Key Vault emulator (tests/servers/azure_emu.py), with the
emulator's own TLS certificate for 127.0.0.1, so SSL_CERT_FILE stays the
emulator's CA. The vault URL given to hsmsign is nginx's; the token
endpoint is the emulator itself. The emulator writes its own URL into key
ids, which the client checks against the vault URL: nginx rewrites it in
response bodies (sub_filter). nginx's access log records, per request,
its connection serial number and protocol.
"""
import ctypes
import os
import struct
import unittest

import hslib
import test_batch
from hslib import osslsigncode_verify, run

N_FILES = 40
MDOP = 16

# The http block of nginx's configuration (hslib.Nginx adds the rest).
NGINX_HTTP = """
    server {{
        listen 127.0.0.1:{port} ssl{http2};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_timeout 60s;
        client_max_body_size 64k;
        location / {{
            proxy_pass {upstream};
            proxy_set_header Accept-Encoding "";
            proxy_read_timeout 60s;
            sub_filter '{upstream}' 'https://127.0.0.1:{port}';
            sub_filter_once off;
            sub_filter_types application/json;
        }}
    }}
"""
LOG_FORMAT = "$connection $server_protocol $request_method $uri $status"


class Http2Test(test_batch.EmulatorBatchCase):
    def start_proxy(self, http2):
        state = self.info["state_dir"]
        self.proxy = hslib.Nginx(
            self, NGINX_HTTP, LOG_FORMAT, http2=" http2" if http2 else "",
            cert=os.path.join(state, "tls-server.pem"),
            key=os.path.join(state, "tls-server.key"), upstream=self.info["https"])
        self.addCleanup(self.proxy.stop)

    def vault_args(self, *args):
        """EmulatorBatchCase's, with nginx's URL as the vault URL."""
        argv = super().vault_args(*args)
        argv[argv.index("-kvu") + 1] = self.proxy.url("https")
        return argv

    def access(self):
        """[(connection, protocol, method, uri, status)] from nginx's log."""
        return [tuple(line.split()) for line in self.proxy.access()]

    def sign_batch(self):
        """Signs N_FILES files with -mdop MDOP through nginx; checks what
        does not depend on the protocol. Returns nginx's sign POSTs."""
        files = self.make_files(N_FILES)
        self.emu.config(latency_ms=100)
        r = self.vault_sign("-mdop", str(MDOP), *files)
        self.assertRc(r, 0)
        self.assertIn(b"Summary: %d signed, 0 skipped, 0 failed" % N_FILES, r.stdout)
        for path in files[:4]:
            ok, out = osslsigncode_verify(path, self.info["root"])
            self.assertTrue(ok, "%s: %s" % (path, out))
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), N_FILES)
        self.assertEqual(self.emu.count("GET", "/certificates/", bearer=True), 1)
        # The emulator's log shows requests overlapping in time.
        most = self.sign_peak()
        self.assertGreaterEqual(most, 8, "at most %d sign requests in flight" % most)
        # Every request the vault saw went through nginx (tokens do not).
        log = self.access()
        self.assertTrue(log, "nginx logged no request")
        signs = [e for e in log if e[2] == "POST" and e[3].endswith("/sign")]
        self.assertEqual(len(signs), N_FILES, "\n".join(map(" ".join, log)))
        self.assertEqual({e[4] for e in signs}, {"200"})
        self.assertEqual(sum(1 for e in log if e[2] == "GET" and
                             e[3].startswith("/certificates/") and e[4] == "200"), 1)
        if os.environ.get("HS_TEST_VERBOSE"):
            print("\n%d requests in flight at most; connections (requests): %s" % (
                most, self.per_connection(signs)))
        return signs

    @staticmethod
    def per_connection(entries):
        counts = {}
        for e in entries:
            counts[e[0]] = counts.get(e[0], 0) + 1
        return counts

    def test_http2_multiplexes_sign_requests(self):
        self.start_proxy(http2=True)
        signs = self.sign_batch()
        self.assertEqual({e[1] for e in signs}, {"HTTP/2.0"})
        # 16 requests in flight are streams of one connection (two if one
        # was opened before the first could be seen to speak HTTP/2).
        conns = self.per_connection(signs)
        self.assertLessEqual(len(conns), 2, "sign requests per nginx connection: %s" % conns)

    def test_http1_reuses_connections(self):
        self.start_proxy(http2=False)
        signs = self.sign_batch()
        self.assertEqual({e[1] for e in signs}, {"HTTP/1.1"})
        # One request at a time per connection: requests in flight need
        # their own connections, which later requests reuse.
        conns = self.per_connection(signs)
        self.assertGreater(len(conns), 2, "sign requests per nginx connection: %s" % conns)
        self.assertLess(len(conns), N_FILES, "sign requests per nginx connection: %s" % conns)



class OpenCounter:
    """Counts the opens of one file with inotify (Linux; ctypes, as the
    standard library has no binding). Closes are watched too: inotify
    merges identical events in a row, and open, close, open, close are not."""

    IN_CLOSE_NOWRITE = 0x10
    IN_OPEN = 0x20

    def __init__(self, path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(
                self.fd, os.fsencode(path), self.IN_OPEN | self.IN_CLOSE_NOWRITE) < 0:
            raise OSError(ctypes.get_errno(), "inotify")

    def count(self):
        n = 0
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            data = b""
        while len(data) >= 16:
            _, mask, _, size = struct.unpack_from("iIII", data)
            n += bool(mask & self.IN_OPEN)
            data = data[16 + size:]
        return n

    def close(self):
        os.close(self.fd)


class TrustStoreTest(test_batch.EmulatorBatchCase):
    def test_trusted_roots_read_once_for_all_connections(self):
        """libcurl reads the CA file again for every new connection when
        it has a CA directory built in (Debian's has): ~30 ms each with the
        system bundle. The client reads it once and shares the store."""
        files = self.make_files(24)
        self.emu.config(latency_ms=150)
        roots = self.copy(self.info["tls_ca"], "roots.pem")
        opens = OpenCounter(roots)
        self.addCleanup(opens.close)
        r = run(self.vault_args("-mdop", "12", *files), env=dict(self.env(), SSL_CERT_FILE=roots))
        self.assertRc(r, 0)
        # 12 requests in flight needed about 12 TLS connections to the
        # emulator (one request at a time each).
        most = self.sign_peak()
        self.assertGreaterEqual(most, 8, "at most %d sign requests in flight" % most)
        # Once in all: hsmsign reads it ahead while it checks the inputs
        # (hs_tls_preload), and every connection shares that store.
        n = opens.count()
        self.assertEqual(n, 1, "the CA file was opened %d times" % n)
        ok, out = osslsigncode_verify(files[0], self.info["root"])
        self.assertTrue(ok, out)

    def test_unreadable_ca_file_is_named(self):
        files = self.make_files(1)
        missing = self.path("no-such-roots.pem")
        r = run(self.vault_args(*files), env=dict(self.env(), SSL_CERT_FILE=missing))
        self.assertRc(r, 87)
        err = r.stderr.decode()
        self.assertIn("cannot read the trusted roots in %s" % missing, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)


if __name__ == "__main__":
    unittest.main()
