"""Two `hsmsign serve` instances behind nginx (Debian's, run by the test
with its own prefix and configuration on 127.0.0.1), as docs/server.md
describes scaling: stateless instances, each with its own copy of the key
(here the same key file; in production its own token or HSM partition).

One instance is stopped mid-batch (SIGSTOP: requests in flight to it hang,
so the batch cannot have finished) and then killed (SIGKILL: those requests
fail). nginx retries what it may on the other instance (GETs); sign POSTs
are not idempotent for nginx, so the client gets a 502 and retries them
itself. `hsmsign sign` of 40 files with -mdop 8 still signs every file, and
every file verifies with osslsigncode. Both instances' audit logs together
hold a successful signature for every file.
"""
import os
import signal
import subprocess
import time
import unittest

import hslib
from test_serve import TOKEN, Server, ServeTestCase, base_config, file_key, free_port

N_FILES = 40

# The http block of nginx's configuration (hslib.Nginx adds the rest).
NGINX_HTTP = """
    upstream hsmsign {{
        server 127.0.0.1:{port_a} max_fails=1 fail_timeout=60s;
        server 127.0.0.1:{port_b} max_fails=1 fail_timeout=60s;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64k;
        location / {{
            proxy_pass http://hsmsign;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Without non_idempotent: a sign POST that reached the dead
            # instance is the client's to retry.
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }}
    }}
"""
LOG_FORMAT = "$request_method $uri $status up=$upstream_addr ups=$upstream_status"


class ClusterTest(ServeTestCase):
    def instance(self, name):
        audit = self.path(name + "-audit.jsonl")
        cfg = base_config(free_port(), {"codesign": file_key()}, audit_log=audit)
        srv = self.start_unchecked(cfg, name)
        return srv, audit

    def start_unchecked(self, cfg, name):
        """An instance that this test may kill (no exit-0 check on cleanup)."""
        srv = Server(self, cfg, name=name + ".json")

        def stop():
            if srv.proc.poll() is None:
                srv.stop()
            else:
                srv.log.close()
        self.addCleanup(stop)
        return srv

    def signs(self, audit):
        if not os.path.exists(audit):
            return []
        return [e for e in self.audit(audit) if e["op"] == "sign" and e["result"] == "ok"]

    def test_instance_killed_mid_batch(self):
        a, audit_a = self.instance("a")
        b, audit_b = self.instance("b")
        proxy = hslib.Nginx(self, NGINX_HTTP, LOG_FORMAT, port_a=a.port, port_b=b.port)
        self.addCleanup(proxy.stop)

        files = [self.copy("hello64.exe", "app%02d.exe" % i) for i in range(N_FILES)]
        env = dict(os.environ, HS_SERVE_TOKEN=TOKEN)
        batch = subprocess.Popen(
            [hslib.HSMSIGN, "sign", "-kvu", proxy.url(), "-kvc", "codesign",
             "-kva", "env:HS_SERVE_TOKEN", "-fd", "sha256", "-mdop", "8", *files],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: batch.poll() is None and batch.kill())

        # Let instance a sign a few, then freeze it with requests in flight.
        deadline = time.time() + 30
        while len(self.signs(audit_a)) < 2:
            if batch.poll() is not None:
                self.fail("the batch ended before instance a signed twice: " +
                          batch.stderr.read().decode())
            self.assertLess(time.time(), deadline, "instance a never signed")
            time.sleep(0.005)
        a.proc.send_signal(signal.SIGSTOP)
        done_at_stop = len(self.signs(audit_a)) + len(self.signs(audit_b))
        time.sleep(1.0)
        self.assertIsNone(batch.poll(), "mid-batch: the batch waits on the frozen instance")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)

        out, err = batch.communicate(timeout=120)
        self.assertEqual(batch.returncode, 0, err.decode())
        self.assertLess(done_at_stop, N_FILES)
        for f in files:
            self.assertVerifies(f)

        signed_a, signed_b = self.signs(audit_a), self.signs(audit_b)
        self.assertGreaterEqual(len(signed_a), 2)
        self.assertGreater(len(signed_b), 0)
        # Every file's signature was made by one of the instances (the files
        # are identical copies, so their digests are too: count them; a
        # signature a made but never delivered was asked again, so >=).
        self.assertGreaterEqual(len(signed_a) + len(signed_b), N_FILES)
        # nginx saw the dead instance, and a sign POST failed there that the
        # client retried (nginx does not retry POSTs).
        log = proxy.access()
        self.assertTrue(any("POST" in line and " 502 " in line for line in log),
                        "\n".join(log[-20:]))
        self.assertIn("upstream", proxy.errors())
        self.assertNotIn(TOKEN, "\n".join(log) + proxy.errors())
        if os.environ.get("HS_TEST_VERBOSE"):
            print("\nsigned by a: %d, by b: %d, before the stop: %d; 502s: %d" % (
                len(signed_a), len(signed_b), done_at_stop,
                sum(" 502 " in line for line in log)))


if __name__ == "__main__":
    unittest.main()
