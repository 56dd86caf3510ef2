"""A forward proxy for tests (Python stdlib only): HTTP CONNECT tunnels, as
corporate proxies give HTTPS clients, optionally itself over TLS (an
"HTTPS proxy") and optionally demanding Basic proxy credentials.

It only ever connects to 127.0.0.1: a CONNECT to a name under
`.hsmsign.test` (a reserved test domain, RFC 6761) goes to the same port
on 127.0.0.1; any other target is refused with 403, so a client that
ignores the proxy mapping cannot reach anything off this machine through
it. Every request line is recorded (target, whether credentials were
given and right), never the credentials themselves.

Used in-process by tests/e2e/test_proxy.py:

    with ConnectProxy(auth=("user", "pass"), tls=(cert, key)) as proxy:
        env["HTTPS_PROXY"] = proxy.url_with(user, password)
"""

import base64
import select
import socket
import socketserver
import ssl
import threading

TEST_DOMAIN = ".hsmsign.test"


class _Handler(socketserver.BaseRequestHandler):

    def handle(self):
        proxy = self.server.proxy
        self.request.settimeout(30)
        head = self._read_head()
        if head is None:
            return
        request_line, headers, rest = head
        parts = request_line.split()
        entry = {"line": " ".join(parts[:2]), "authorized": None}
        with proxy.lock:
            proxy.log.append(entry)
        if len(parts) != 3 or parts[0] != "CONNECT":
            # Plain HTTP through the proxy: not what an https client sends.
            self._answer(405, "Only CONNECT")
            return
        if proxy.auth is not None:
            expected = "Basic " + base64.b64encode(
                ("%s:%s" % proxy.auth).encode()).decode()
            entry["authorized"] = headers.get("proxy-authorization") == expected
            if not entry["authorized"]:
                self._answer(407, "Proxy Authentication Required",
                             'Proxy-Authenticate: Basic realm="hsmsign-test"\r\n')
                return
        host, _, port = parts[1].rpartition(":")
        if not host.endswith(TEST_DOMAIN) or not port.isdigit():
            self._answer(403, "Forbidden")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        except OSError:
            self._answer(502, "Bad Gateway")
            return
        self._answer(200, "Connection established")
        self._pipe(upstream, rest)

    def _read_head(self):
        """(request line, lower-cased headers, bytes after the head)."""
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > 16384:
                return None
            try:
                chunk = self.request.recv(4096)
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for h in lines[1:]:
            name, _, value = h.partition(":")
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers, rest

    def _answer(self, status, reason, extra=""):
        self.request.sendall(("HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\n\r\n" % (
            status, reason, extra)).encode())

    def _pipe(self, upstream, rest):
        client = self.request
        socks = [client, upstream]
        try:
            if rest:
                upstream.sendall(rest)
            while True:
                if isinstance(client, ssl.SSLSocket) and client.pending():
                    ready = [client]
                else:
                    ready, _, _ = select.select(socks, [], [], 30)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is client else client).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy):
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.proxy.tls_context is not None:
            # The handshake happens on the handler's thread, at its first
            # read, not here on the accepting one.
            sock = self.proxy.tls_context.wrap_socket(sock, server_side=True,
                                                      do_handshake_on_connect=False)
        return sock, addr


class ConnectProxy:
    """auth: (user, password) to demand, or None. tls: (cert chain file,
    key file) to listen with TLS, or None."""

    def __init__(self, auth=None, tls=None):
        self.auth = auth
        self.lock = threading.Lock()
        self.log = []
        self.tls_context = None
        if tls is not None:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(*tls)
        self.server = _Server(self)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def url(self, user=None, password=None):
        scheme = "https" if self.tls_context is not None else "http"
        cred = "%s:%s@" % (user, password) if user is not None else ""
        return "%s://%s127.0.0.1:%d" % (scheme, cred, self.port)

    def connects(self):
        """The CONNECT targets seen so far, in order."""
        with self.lock:
            return [e["line"].split()[1] for e in self.log
                    if e["line"].startswith("CONNECT ")]

    def entries(self):
        with self.lock:
            return list(self.log)
