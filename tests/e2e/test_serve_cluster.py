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
import shutil
import signal
import subprocess
import time
import unittest

import hslib
from test_serve import TOKEN, Server, ServeTestCase, base_config, file_key, free_port

N_FILES = 40

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$request_method $uri $status up=$upstream_addr '
                         'ups=$upstream_status';
    access_log {prefix}/access.log upstreams;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
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
}}
"""


class Nginx:
    def __init__(self, test, port_a, port_b):
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        test.assertTrue(os.path.exists(self.nginx), "nginx is required (scripts/bootstrap)")
        self.prefix = test.path("nginx")
        os.makedirs(os.path.join(self.prefix, "tmp"))
        self.port = free_port()
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(
                prefix=self.prefix, port=self.port, port_a=port_a, port_b=port_b,
                # As root, workers would switch to "nobody"; keep them ours.
                user="user root root;" if os.geteuid() == 0 else ""))
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = subprocess.Popen([self.nginx, "-p", self.prefix, "-c", conf, "-e",
                                      os.path.join(self.prefix, "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not os.path.exists(os.path.join(self.prefix, "nginx.pid")):
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("nginx did not start: " + self.errors())
            time.sleep(0.05)

    def errors(self):
        p = os.path.join(self.prefix, "error.log")
        return open(p).read() if os.path.exists(p) else ""

    def access(self):
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
        proxy = Nginx(self, a.port, b.port)
        self.addCleanup(proxy.stop)

        files = [self.copy("hello64.exe", "app%02d.exe" % i) for i in range(N_FILES)]
        env = dict(os.environ, HS_SERVE_TOKEN=TOKEN)
        batch = subprocess.Popen(
            [hslib.HSMSIGN, "sign", "-kvu", proxy.url, "-kvc", "codesign",
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
