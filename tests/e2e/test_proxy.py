"""Signing through a forward proxy, as corporate CI runners must.

HTTPS_PROXY names tests/servers/connect_proxy.py on 127.0.0.1: a CONNECT
proxy that maps names under .hsmsign.test (a reserved test domain) to the
same port on 127.0.0.1 and refuses every other target, so nothing leaves
the machine even if the client mishandled the proxy. The vault is named
https://kv.hsmsign.test:PORT and Entra ID https://login.hsmsign.test:PORT
(both the Azure emulator, whose TLS certificate also names *.hsmsign.test),
so only the proxy can reach them: a client that bypassed it would fail to
resolve the names.

Checked: a signature through a plain proxy (token, certificate and sign
requests all tunnelled, TLS end to end, connections reused), through a
proxy that wants credentials (given in the proxy URL, never printed), a
refused proxy login and a refused tunnel (one error line naming the proxy,
exit 87, input untouched, no retries), and
through an HTTPS proxy whose certificate is trusted through the same
SSL_CERT_FILE as the vault's, and not through one whose certificate is
not trusted.
"""
import os
import sys
import unittest

from hslib import HSMSIGN, pki, read, run

import test_azure

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "servers"))
from connect_proxy import ConnectProxy  # noqa: E402

PROXY_USER = "ci-runner"
PROXY_PASSWORD = "pr0xy-s3cret-Zq9"


class ProxyCase(test_azure.AzureCase):

    def setUp(self):
        super().setUp()
        # The vault's token audience for names under .hsmsign.test: the
        # client checks that the challenge's resource covers the vault host
        # (as https://vault.azure.net covers NAME.vault.azure.net).
        self.emu.config(resource="https://hsmsign.test")

    def port(self):
        return self.info["https"].rsplit(":", 1)[1]

    def proxied_env(self, proxy_url, **extra):
        port = self.port()
        return self.env(HTTPS_PROXY=proxy_url,
                        AZURE_AUTHORITY_HOST="https://login.hsmsign.test:%s" % port,
                        **extra)

    def sign_via(self, proxy_url, path, *args):
        vault = "https://kv.hsmsign.test:%s" % self.port()
        return run([HSMSIGN, "sign", "-kvu", vault, "-kvc", "codesign-rsa2048",
                    *self.secret_args(), "-fd", "sha256", *args, path],
                   env=self.proxied_env(proxy_url))

    def assertAllTunnelled(self, proxy):
        port = self.port()
        targets = set(proxy.connects())
        self.assertIn("kv.hsmsign.test:%s" % port, targets)
        self.assertIn("login.hsmsign.test:%s" % port, targets)
        self.assertEqual(targets, {"kv.hsmsign.test:%s" % port,
                                   "login.hsmsign.test:%s" % port})
        for e in proxy.entries():
            self.assertTrue(e["line"].startswith("CONNECT "), e)

    def test_plain_proxy(self):
        files = [self.copy(n) for n in ("hello64.exe", "hello32.exe", "lib64.dll")]
        with ConnectProxy() as proxy:
            r = self.sign_via(proxy.url(), *files[:1], *files[1:], "-mdop", "1")
        self.assertRc(r, 0)
        for f in files:
            self.assertVerifies(f)
        self.assertAllTunnelled(proxy)
        # One file at a time: one tunnel to each host, which the
        # certificate request and the three sign requests reuse.
        self.assertEqual(len(proxy.connects()), 2, proxy.connects())
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 3)
        self.assertEqual(self.emu.count("GET", "/certificates/", bearer=True), 1)

    def test_proxy_with_credentials(self):
        path = self.copy("hello64.exe")
        with ConnectProxy(auth=(PROXY_USER, PROXY_PASSWORD)) as proxy:
            r = self.sign_via(proxy.url(PROXY_USER, PROXY_PASSWORD), path, "--verbose")
        self.assertRc(r, 0)
        self.assertVerifies(path)
        self.assertAllTunnelled(proxy)
        self.assertTrue(all(e["authorized"] for e in proxy.entries()), proxy.entries())
        self.assertNotIn(PROXY_PASSWORD.encode(), r.stdout + r.stderr)

    def test_proxy_refuses_login(self):
        path = self.copy("hello64.exe")
        before = read(path)
        with ConnectProxy(auth=(PROXY_USER, PROXY_PASSWORD)) as proxy:
            r = self.sign_via(proxy.url(PROXY_USER, "wrong-" + PROXY_PASSWORD), path,
                              "--http-max-time", "5")
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        err = r.stderr.decode()
        self.assertIn("the proxy (HTTPS_PROXY) refused its credentials (HTTP 407)", err)
        self.assertNotIn(PROXY_PASSWORD, err)
        self.assertEqual(read(path), before)
        self.assertFalse(any(e["authorized"] for e in proxy.entries()))
        # Not retried: the same credentials would be refused again (the
        # vault and Entra ID are asked at once: one CONNECT to each).
        lines = [e["line"] for e in proxy.entries()]
        self.assertEqual(len(lines), len(set(lines)), lines)
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 0)

    def test_proxy_refuses_tunnel(self):
        # The test proxy refuses targets outside .hsmsign.test (403); .invalid
        # never resolves (RFC 6761), should anything bypass the proxy.
        path = self.copy("hello64.exe")
        before = read(path)
        vault = "https://kv.hsmsign.invalid:%s" % self.port()
        with ConnectProxy() as proxy:
            r = run([HSMSIGN, "sign", "-kvu", vault, "-kvc", "codesign-rsa2048",
                     *self.secret_args(), "-fd", "sha256", "--http-max-time", "5", path],
                    env=self.proxied_env(proxy.url()))
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertIn("the proxy (HTTPS_PROXY) refused the tunnel to kv.hsmsign.invalid "
                      "(HTTP 403)", r.stderr.decode())
        self.assertEqual(read(path), before)
        self.assertEqual(proxy.connects().count("kv.hsmsign.invalid:%s" % self.port()), 1)

    def test_https_proxy(self):
        path = self.copy("hello64.exe")
        tls = (os.path.join(self.state, "tls-server.pem"),
               os.path.join(self.state, "tls-server.key"))
        with ConnectProxy(tls=tls) as proxy:
            r = self.sign_via(proxy.url(), path)
        self.assertRc(r, 0)
        self.assertVerifies(path)
        self.assertAllTunnelled(proxy)

    def test_untrusted_https_proxy_is_refused(self):
        # TLS to the proxy is verified like TLS to the vault: a proxy whose
        # certificate no trusted root issued gets nothing, not even the
        # CONNECT line.
        # A certificate of the code-signing test PKI, which the TLS roots
        # given (the emulator's TLS CA) do not include.
        cert_path, key_path = pki("other-root.pem"), pki("other-root.key")
        path = self.copy("hello64.exe")
        before = read(path)
        with ConnectProxy(tls=(cert_path, key_path)) as proxy:
            r = self.sign_via(proxy.url(), path, "--http-max-time", "5")
        self.assertRc(r, 87)
        self.assertOneErrorLine(r)
        self.assertIn("TLS certificate of the proxy (HTTPS_PROXY) not trusted",
                      r.stderr.decode())
        self.assertEqual(read(path), before)
        self.assertEqual(proxy.entries(), [])
        self.assertEqual(self.emu.count("POST", "/keys/", bearer=True), 0)

    def test_proxy_never_sees_loopback_traffic(self):
        # The vault on 127.0.0.1 is reached directly, whatever HTTPS_PROXY
        # says (docs/cli.md): the proxy is not even contacted.
        path = self.copy("hello64.exe")
        with ConnectProxy() as proxy:
            r = run([HSMSIGN, "sign", "-kvu", self.info["https"], "-kvc", "codesign-rsa2048",
                     *self.secret_args(), "-fd", "sha256", path],
                    env=self.env(HTTPS_PROXY=proxy.url()))
        self.assertRc(r, 0)
        self.assertVerifies(path)
        self.assertEqual(proxy.entries(), [])


if __name__ == "__main__":
    unittest.main()
