"""Scaffolding the emulators in tests/servers share (Python stdlib only).

The cloud emulators (aws_emu.py, gcp_emu.py, vault_emu.py, trusted_emu.py)
build on EmuState, EmuHandler, EmuServer, Emulator and serve_main; the
emulators that run until their parent goes away (azure_emu.py, tsa.py) use
stop_event. Emulators run as scripts, so Python finds this module in the
script's own directory; tests import it from tests/servers on sys.path.
"""

import argparse
import http.server
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time


class EmuState:
    """The lock, test knobs and request log of an emulator's state."""

    def __init__(self):
        self.lock = threading.Lock()
        self.knobs, self.log = {}, []

    def knob(self, name):
        """Consumes one unit of a counting knob; booleans stay set."""
        with self.lock:
            n = self.knobs.get(name, 0)
            if n and isinstance(n, int) and not isinstance(n, bool):
                self.knobs[name] = n - 1
            return bool(n)


# ---------------------------------------------------------------- faults
#
# One transport-level fault mechanism for every emulator. A fault plan is a
# dict stored under the knob "fault" (POST /_emu/config {"fault": {...}} for
# azure_emu.py, .knobs(fault={...}) for the in-process emulators, POST
# /_fault for tsa.py):
#
#   kind         what the server does instead of answering (FAULT_KINDS)
#   paths        apply only to request paths starting with one of these
#                (default: every path except the control endpoints)
#   after        let this many matching requests through first (default 0)
#   count        fault this many requests, then stop; -1 (default): forever
#   delay        seconds the slow faults stall (default 30)
#   status       HTTP status of "status" (default 503)
#   retry_after  Retry-After seconds of "throttle" (default: no header)
#   content_type the Content-Type of the 200 faults (default JSON)
#
# The plan's "hits" counts the faults served. The fault answers as soon as
# the request line and headers are read (the body is drained first), so
# it works the same for every route of every emulator.

FAULT_KINDS = ("reset", "reset_body", "slow_headers", "slow_body",
               "truncated_json", "invalid_json", "wrong_type", "oversized",
               "throttle", "status")
CONTROL_PREFIXES = ("/_emu/", "/_log", "/_fault")
# Larger than the 4 MiB response limit of hsmsign's HTTP client (SECURITY.md).
OVERSIZED_BYTES = 5 * 1024 * 1024


def fault_take(lock, knobs, path):
    """The fault plan to apply to a request for path, or None; counts it."""
    if path.startswith(CONTROL_PREFIXES):
        return None
    with lock:
        plan = knobs.get("fault")
        if not plan:
            return None
        paths = plan.get("paths") or []
        if paths and not any(path.startswith(p) for p in paths):
            return None
        if plan.get("after", 0) > 0:
            plan["after"] -= 1
            return None
        n = plan.get("count", -1)
        if n == 0:
            return None
        if n > 0:
            plan["count"] = n - 1
        plan["hits"] = plan.get("hits", 0) + 1
        return dict(plan)


def token_spent(lock, knobs, uses, token):
    """Counts one use of token; True once it has been used more than the
    knob "expire_after" allows (the emulator then answers as for an expired
    token: a token that dies in the middle of a batch). 0/absent: never."""
    with lock:
        limit = knobs.get("expire_after")
        if not limit:
            return False
        uses[token] = uses.get(token, 0) + 1
        return uses[token] > limit


# What "bad_b64_next" makes a signing emulator return as its signature.
BAD_BASE64 = "!!not*base64~~"


def _fault_close(handler):
    handler.close_connection = True
    try:
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _fault_head(handler, status, ctype, length, extra=()):
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(length))
    for k, v in extra:
        handler.send_header(k, v)
    handler.end_headers()


def send_fault(handler, plan):
    """Answers the current request of handler (headers read) with plan."""
    kind = plan.get("kind")
    ctype = plan.get("content_type") or "application/json; charset=utf-8"
    delay = float(plan.get("delay", 30))
    n = int(handler.headers.get("Content-Length") or 0)
    if n > 0:
        handler.rfile.read(n)
    try:
        if kind == "reset":
            return _fault_close(handler)
        if kind == "reset_body":
            _fault_head(handler, 200, ctype, 4096)
            handler.wfile.write(b'{"value": "AAAA')
            return _fault_close(handler)
        if kind == "slow_headers":
            time.sleep(delay)
            return _fault_close(handler)
        if kind == "slow_body":
            _fault_head(handler, 200, ctype, 4096)
            handler.wfile.write(b'{"value": "')
            handler.wfile.flush()
            time.sleep(delay)
            return _fault_close(handler)
        if kind == "oversized":
            chunk = b"A" * 65536
            total = OVERSIZED_BYTES + len(chunk)
            _fault_head(handler, 200, ctype, total + 14)
            handler.wfile.write(b'{"value": "')
            for _ in range(total // len(chunk)):
                handler.wfile.write(chunk)
            handler.wfile.write(b'"}\n')
            return _fault_close(handler)
        body, status, extra = {
            "truncated_json": (b'{"value": "AAAA", "kid": "htt', 200, ()),
            "invalid_json": (b'{value: AAAA, ]]', 200, ()),
            "wrong_type": (b"<html><body><h1>502 Bad Gateway</h1></body>"
                           b"</html>\n", 200, ()),
            "throttle": (b'{"error": {"code": "Throttled", "message": '
                         b'"Too many requests (emulator fault)"}}', 429,
                         () if plan.get("retry_after") is None else
                         (("Retry-After", str(plan["retry_after"])),)),
            "status": (b'{"error": {"code": "ServiceUnavailable", '
                       b'"message": "emulator fault"}}',
                       int(plan.get("status", 503)), ()),
        }.get(kind, (b"unknown fault kind", 500, ()))
        if kind == "wrong_type":
            ctype = "text/html"
        _fault_head(handler, status, ctype, len(body), extra)
        handler.wfile.write(body)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True


class FaultMixin:
    """For BaseHTTPRequestHandler subclasses: answers with the fault plan
    of fault_knobs() (a (lock, dict) pair) instead of routing."""

    def fault_knobs(self):
        raise NotImplementedError

    def parse_request(self):
        if not super().parse_request():
            return False
        lock, knobs = self.fault_knobs()
        plan = fault_take(lock, knobs, self.path.split("?", 1)[0])
        if plan is None:
            return True
        send_fault(self, plan)
        return False


class EmuHandler(FaultMixin, http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 handler plumbing: quiet, with body and JSON-reply helpers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    @property
    def st(self):
        return self.server.state

    def fault_knobs(self):
        return self.st.lock, self.st.knobs

    def body(self):
        """The request body, as bytes."""
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, status, obj, entry):
        """Appends entry to the request log, then answers obj as JSON."""
        data = json.dumps(obj).encode()
        with self.st.lock:
            self.st.log.append(entry)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class EmuServer(http.server.ThreadingHTTPServer):
    """Loopback server on a free port; subclasses set handler, state_class."""

    daemon_threads = True
    handler = None
    state_class = None

    def __init__(self, config):
        super().__init__(("127.0.0.1", 0), self.handler)
        self.state = self.state_class(config)
        self.url = "http://127.0.0.1:%d" % self.server_address[1]


class Emulator:
    """In-process emulator for tests: with XEmulator(cfg) as emu: emu.url."""

    server_class = None

    def __init__(self, config):
        self.server = self.server_class(config)
        self.url, self.state = self.server.url, self.server.state

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def knobs(self, **kw):
        with self.state.lock:
            self.state.knobs.update(kw)

    def select(self, field, value, status):
        """Log entries with e[field] == value and the status (None: any)."""
        with self.state.lock:
            return [e for e in self.state.log
                    if (value is None or e[field] == value) and
                    (status is None or e["status"] == status)]

    def calls(self, what=None, status=None):
        return self.select("what", what, status)


def serve_main(server_class, doc, argv=None):
    """Standalone run: --config FILE, prints {"url": ...}, serves until stdin
    reaches EOF (the parent went away)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    with open(args.config) as f:
        server = server_class(json.load(f))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"url": server.url}), flush=True)
    sys.stdin.read()
    server.shutdown()


def watch_stdin(stop):
    """Sets stop when stdin, if a pipe or socket, reaches EOF."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return                  # tty, /dev/null or a file: nothing to watch

    def run():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        stop.set()
    threading.Thread(target=run, daemon=True, name="stdin-watch").start()


def stop_event(watch=True):
    """An event set by SIGTERM, SIGINT, SIGHUP or (watch) stdin EOF."""
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: stop.set())
    if watch:
        watch_stdin(stop)
    return stop


def read_ready_line(proc, timeout):
    """The first stdout line of a started emulator, or b"" after timeout."""
    line = []
    reader = threading.Thread(
        target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else b""


def stop_child(proc, terminate=True):
    """Closes proc's stdin (the emulator exits at EOF) and waits for it,
    escalating to SIGTERM (if terminate) and SIGKILL; closes its stdout."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    for escalate in ([proc.terminate] if terminate else []) + [proc.kill]:
        try:
            proc.wait(5)
            break
        except subprocess.TimeoutExpired:
            escalate()
    else:
        proc.wait()
    proc.stdout.close()
