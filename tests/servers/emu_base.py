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
import stat
import subprocess
import sys
import threading


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


class EmuHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 handler plumbing: quiet, with body and JSON-reply helpers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    @property
    def st(self):
        return self.server.state

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
