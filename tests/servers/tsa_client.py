"""Start/stop helper for tests/servers/tsa.py (Python stdlib only).

    import sys; sys.path.insert(0, "<repo>/tests/servers")
    from tsa_client import Tsa

    with Tsa() as tsa:
        tsa.url("ok"), tsa.url("500"), tsa.url("ok", time="2020-06-01T00:00:00Z")
        tsa.root          # PEM of the TSA root (for --tsa-ca-file / -TSA-CAfile)
        tsa.log()         # request log entries
        tsa.fault({"kind": "reset"})  # transport faults (emu_base.py); None clears

The server runs with stdin as a pipe, so it exits by itself if this process
dies.
"""
import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request

import emu_base

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "tsa.py")
PYTHON = "/usr/bin/python3"


class TsaError(RuntimeError):
    pass


class Tsa:
    def __init__(self, start_timeout=60):
        self.dir = tempfile.mkdtemp(prefix="hsmsign-tsa-")
        self.start_timeout = start_timeout
        self.proc = None
        self.info = None

    def start(self):
        self._stderr = open(os.path.join(self.dir, "stderr.txt"), "wb")
        self.proc = subprocess.Popen(
            [PYTHON, SERVER, "--state-dir", os.path.join(self.dir, "tsa")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        line = emu_base.read_ready_line(self.proc, self.start_timeout)
        if not line:
            self.stop()
            raise TsaError("tsa.py did not start")
        self.info = json.loads(line)
        return self

    def stop(self):
        if self.proc is not None:
            emu_base.stop_child(self.proc, terminate=False)
            self._stderr.close()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def root(self):
        return self.info["root"]

    def url(self, mode="ok", **query):
        """URL of one fault mode; query: time=ISO-8601, delay=s, fail=n."""
        u = "%s/%s" % (self.info["url"], mode)
        return u + ("?" + urllib.parse.urlencode(query) if query else "")

    def log(self):
        with urllib.request.urlopen(self.info["url"] + "/_log",
                                    timeout=10) as r:
            return json.loads(r.read())

    def fault(self, plan):
        """Sets (plan: dict) or clears (None) the transport fault plan
        (emu_base.py) that every POST except /_fault then gets."""
        req = urllib.request.Request(
            self.info["url"] + "/_fault", data=json.dumps(plan).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def count(self, mode=None):
        return sum(1 for e in self.log() if mode is None or e["mode"] == mode)
