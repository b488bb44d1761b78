#!/usr/bin/env python3
"""TLS at the front door and to backends, with real curl, openssl s_client and
wrk: TLS 1.2 and 1.3 with routes still split by user key, SNI choosing between
certificates, ALPN, TLS 1.0/1.1 refused, session resumption with tickets,
`switchyard check` refusing bad certificates, certificate rotation on SIGHUP
under load with zero failed requests, backends over TLS verified against a
given CA (a wrong CA is a connect failure), and half-open handshakes closed by
timeouts.tls_handshake while other clients are served. Certificates are made
by `openssl req` in the test's directory."""
import datetime
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

from harness import BIN, SLOW, GatewayTest, base_config, curl, free_port, main, wait_for

WRK_LINE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def run(*cmd, inp=None, env=None, timeout=30):
    r = subprocess.run(list(cmd), input=inp, capture_output=True, timeout=timeout * SLOW, env=env)
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


class Tls(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ca = self.make_ca("ca")

    # --- certificates -----------------------------------------------------------

    def make_ca(self, name):
        key, pem = self.env.path(name + ".key"), self.env.path(name + ".pem")
        rc, out = run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", pem, "-days", "2", "-subj", "/CN=Switchyard test CA " + name)
        self.assertEqual(rc, 0, out)
        return (pem, key)

    def make_cert(self, name, cn, sans, ca=None, kind="ec"):
        """A certificate for cn with DNS/IP subjectAltNames, signed by ca (default:
        the test's CA). Returns (cert, key) paths."""
        ca = ca or self.ca
        key, csr, pem = (self.env.path(name + ext) for ext in (".key", ".csr", ".pem"))
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" else \
            ["-newkey", "rsa:2048"]
        rc, out = run("openssl", "req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        self.assertEqual(rc, 0, out)
        ext = self.env.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\n" % ",".join(sans))
        rc, out = run("openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
                      "-days", "2", "-out", pem, "-extfile", ext)
        self.assertEqual(rc, 0, out)
        return (pem, key)

    # --- gateway -----------------------------------------------------------------------

    def tls_config(self, cert, extra_tls="", extra_top="", workers=2):
        text = base_config(self.port, self.legacy, self.new, percent=5000, workers=workers, extra_top=extra_top)
        listen = "  - address: 127.0.0.1:%d\n" % self.port
        return text.replace(listen, listen + "    tls: {cert: %s, key: %s%s}\n" % (cert[0], cert[1], extra_tls))

    def s_client(self, *args, inp=b"", env=None):
        return run("openssl", "s_client", "-connect", "127.0.0.1:%d" % self.port, *args, inp=inp, env=env)

    def subject(self, *args):
        rc, out = self.s_client(*args)
        m = re.search(r"^subject=.*?CN\s*=\s*([^,\n]+)", out, re.M)
        return m.group(1).strip() if m else out

    def https(self, host="gw.test"):
        """A keep-alive HTTPS client that trusts the test CA."""
        ctx = ssl.create_default_context(cafile=self.ca[0])
        ctx.check_hostname = False
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10 * SLOW, context=ctx)

    # --- the tests -------------------------------------------------------------------

    def test_versions_and_routing(self):
        """curl over TLS 1.2 and 1.3 (certificate verified with the CA, by name);
        the user-key split still lands users on both variants, each always on the same."""
        cert = self.make_cert("gw", "gw.test", ["DNS:gw.test", "IP:127.0.0.1"])
        self.gateway(self.tls_config(cert))
        url = "https://gw.test:%d/x" % self.port
        resolve = "gw.test:%d:127.0.0.1" % self.port
        for lo, hi, name in (("--tlsv1.2", "1.2", "TLSv1.2"), ("--tlsv1.3", "1.3", "TLSv1.3")):
            r = subprocess.run(["curl", "-sS", "-v", "--http1.1", lo, "--tls-max", hi, "--cacert", self.ca[0],
                                "--resolve", resolve, url, "-H", "X-User-Id: 7"], capture_output=True,
                               timeout=30 * SLOW)
            err = r.stderr.decode(errors="replace")
            self.assertEqual(r.returncode, 0, err)
            self.assertIn("SSL connection using " + name, err)
            self.assertRegex(r.stdout.decode(), r"hello from (legacy|new)")
        conn = self.https()
        seen = {}
        for u in range(120):
            for _ in range(2):
                conn.request("GET", "/x", headers={"X-User-Id": "u%d" % u})
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                seen.setdefault(u, set()).add(r.getheader("X-Backend"))
        conn.close()
        self.assertTrue(all(len(v) == 1 for v in seen.values()), "a user moved between variants")
        variants = set().union(*seen.values())
        self.assertEqual(variants, {"legacy", "new"})

    def test_sni_and_alpn(self):
        """The default certificate, a second one chosen by SNI (exact and
        wildcard names); ALPN: h2 first by default (curl --http2 gets HTTP/2
        over TLS, --http1.1 gets HTTP/1.1), h2 withdrawn when the listener's
        alpn leaves it out."""
        a = self.make_cert("a", "a.test", ["DNS:a.test"])
        b = self.make_cert("b", "b.test", ["DNS:b.test", "DNS:*.b.test"], kind="rsa")
        extra = ", certificates: [{cert: %s, key: %s}]" % b
        gw = self.gateway(self.tls_config(a, extra))
        self.assertEqual(self.subject("-servername", "b.test"), "b.test")
        self.assertEqual(self.subject("-servername", "x.b.test"), "b.test")
        self.assertEqual(self.subject("-servername", "a.test"), "a.test")
        self.assertEqual(self.subject("-servername", "other.test"), "a.test")
        self.assertEqual(self.subject("-noservername"), "a.test")
        rc, out = self.s_client("-alpn", "h2,http/1.1")
        self.assertIn("ALPN protocol: h2", out)
        # h2 by default, served by the HTTP/2 codec over TLS; HTTP/1.1 for who asks for it.
        for flag, want in (("--http1.1", "1.1 200"), ("--http2", "2 200")):
            r = subprocess.run(["curl", "-sS", "-k", flag, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                                "https://127.0.0.1:%d/x" % self.port], capture_output=True, timeout=30 * SLOW)
            self.assertEqual(r.stdout.decode(), want, r.stderr)
        # The backend is told the client came over TLS, by both protocols.
        for flag in ("--http1.1", "--http2"):
            r = subprocess.run(["curl", "-sS", "-k", flag, "https://127.0.0.1:%d/echo" % self.port],
                               capture_output=True, timeout=30 * SLOW)
            hdrs = {k.lower(): v for k, v in json.loads(r.stdout)["headers"]}
            self.assertEqual(hdrs.get("x-forwarded-proto"), "https", flag)
        # The listener's tls settings reload live (no restart): h2 is withdrawn once not listed.
        with open(gw.config_path) as f:
            text = f.read()
        with open(gw.config_path, "w") as f:
            f.write(text.replace(extra, extra + ", alpn: [http/1.1]"))
        gw.send_signal(signal.SIGHUP)
        wait_for(lambda: "ALPN protocol: http/1.1" in self.s_client("-alpn", "h2,http/1.1")[1], 20,
                 "h2 withdrawn after the reload")
        with open(gw.log_path) as f:
            self.assertNotIn("takes effect only after a restart", f.read())
        r = subprocess.run(["curl", "-sS", "-k", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                            "https://127.0.0.1:%d/x" % self.port], capture_output=True, timeout=30 * SLOW)
        self.assertEqual(r.stdout.decode(), "1.1 200", r.stderr)

    def test_old_versions_refused_and_resumption(self):
        """TLS 1.0 and 1.1 get a protocol_version alert (with OpenSSL's system
        policy out of the way, so it is the gateway's own floor that refuses);
        a session is resumed from its ticket under TLS 1.2 and 1.3."""
        cert = self.make_cert("gw", "gw.test", ["DNS:gw.test"])
        loose = self.env.path("openssl-loose.cnf")
        with open(loose, "w") as f:
            f.write("# no system policy: every protocol version the library has\n")
        env = dict(os.environ, OPENSSL_CONF=loose)
        self.env.start_gateway(self.tls_config(cert).replace("%(log)s", "off"), self.port, extra_env=env)
        for old in ("-tls1", "-tls1_1"):
            rc, out = self.s_client(old, "-cipher", "DEFAULT@SECLEVEL=0", env=env)
            self.assertNotEqual(rc, 0, out)
            self.assertIn("alert protocol version", out)
        req = b"GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
        for v in ("-tls1_2", "-tls1_3"):
            sess = self.env.path("sess%s.pem" % v)
            rc, out = self.s_client(v, "-ign_eof", "-sess_out", sess, inp=req)
            self.assertIn("\nNew, ", out)
            self.assertIn("hello from", out)
            rc, out = self.s_client(v, "-ign_eof", "-sess_in", sess, inp=req)
            self.assertIn("\nReused, ", out)
            self.assertIn("hello from", out)

    def test_ticket_keys_rotate(self):
        """With ticket_rotate: 1s a ticket resumes at once, and stops resuming
        (a full handshake instead) once its key has rotated out."""
        cert = self.make_cert("gw", "gw.test", ["DNS:gw.test"])
        self.gateway(self.tls_config(cert, ", ticket_rotate: 1s").replace("%(log)s", "off"))
        req = b"GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
        sess = self.env.path("sess.pem")
        rc, out = self.s_client("-tls1_3", "-ign_eof", "-sess_out", sess, inp=req)
        self.assertIn("\nNew, ", out)
        rc, out = self.s_client("-tls1_3", "-ign_eof", "-sess_in", sess, inp=req)
        self.assertIn("\nReused, ", out)
        wait_for(lambda: "\nNew, " in self.s_client("-tls1_3", "-ign_eof", "-sess_in", sess, inp=req)[1], 10,
                 "the ticket's key to rotate out", every=0.5)

    def test_check_refuses_bad_certificates(self):
        """`switchyard check` names the path and OpenSSL's reason for an expired
        certificate, a key that is not the certificate's, a missing file, a file
        that is not PEM."""
        good = self.make_cert("good", "gw.test", ["DNS:gw.test"])
        other = self.make_cert("other", "other.test", ["DNS:other.test"])
        expired = self.expired_cert()
        junk = self.env.path("junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        missing = self.env.path("missing.pem")
        cases = [
            ((expired, good[1]), expired, "certificate has expired"),
            ((good[0], other[1]), other[1], "does not match cert"),
            ((missing, good[1]), missing, "No such file or directory"),
            ((junk, good[1]), junk, "no start line"),
        ]
        rc, out = run(BIN, "check", "-c", self.env.write_config(self.tls_config(good).replace("%(log)s", "off")))
        self.assertEqual(rc, 0, out)
        for pair, path, reason in cases:
            cfg = self.env.write_config(self.tls_config(pair).replace("%(log)s", "off"), "bad.yaml")
            rc, out = run(BIN, "check", "-c", cfg)
            self.assertNotEqual(rc, 0, out)
            self.assertIn(path, out)
            self.assertIn(reason, out)

    def expired_cert(self):
        """A certificate whose validity ended yesterday (openssl req cannot date
        one in the past: python's cryptography signs it)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "expired.test")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=3))
                .not_valid_after(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
        path = self.env.path("expired.pem")
        with open(path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def test_sighup_rotation_under_load(self):
        """wrk over HTTPS (new and kept-alive connections) while the certificate
        files are replaced and SIGHUP reloads: no failed request, a connection
        made before keeps working, new handshakes get the new certificate."""
        cert = self.make_cert("gw", "before.test", ["DNS:gw.test"])
        # client_header 1s: the timers of connections idle across the reload fire
        # soon after it (they once read the replaced, freed config).
        gw = self.gateway(self.tls_config(cert, extra_top="timeouts: {client_header: 1s}").replace("%(log)s", "off"))
        self.assertEqual(self.subject(), "before.test")
        old = self.https()
        old.request("GET", "/x")
        self.assertEqual(old.getresponse().read()[:10], b"hello from")
        wrk = subprocess.Popen(["wrk", "-t1", "-c16", "-d%ds" % int(120 * SLOW), "--timeout", "%ds" % int(10 * SLOW),
                                "https://127.0.0.1:%d/x" % self.port], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        # A loop of fresh TLS connections (one request each) alongside.
        stop, fails, done = threading.Event(), [], [0]

        def fresh():
            while not stop.is_set():
                c = self.https()
                try:
                    c.request("GET", "/x", headers={"Connection": "close"})
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        fails.append(r.status)
                    done[0] += 1
                except Exception as e:  # noqa: every failure counts
                    fails.append(repr(e))
                finally:
                    c.close()
        t = threading.Thread(target=fresh)
        t.start()
        try:
            wait_for(lambda: done[0] >= 20, 30, "fresh TLS connections before the reload")
            new = self.make_cert("new", "after.test", ["DNS:gw.test"])
            for src, dst in zip(new, cert):
                os.replace(src, dst)
            old.request("GET", "/x")  # its deadline timer is armed 1 s from now, under the old config
            self.assertEqual(old.getresponse().read()[:10], b"hello from")
            gw.send_signal(signal.SIGHUP)
            wait_for(lambda: self.subject() == "after.test", 30, "the new certificate after SIGHUP")
            n = done[0]
            wait_for(lambda: done[0] >= n + 20, 30, "fresh TLS connections after the reload")
        finally:
            stop.set()
            t.join(30 * SLOW)
            wrk.send_signal(signal.SIGINT)
            out = wrk.communicate(timeout=30 * SLOW)[0]
        self.assertEqual(fails, [])
        m = WRK_LINE.search(out)
        self.assertIsNone(m, out)  # wrk prints the line only when a socket error happened
        self.assertNotIn("Non-2xx", out)
        total = re.search(r"(\d+) requests in", out)
        self.assertTrue(total and int(total.group(1)) > 0, out)
        time.sleep(1.5)  # not a readiness wait: the idle connection's 1 s deadline passes
        old.request("GET", "/x")
        self.assertEqual(old.getresponse().read()[:10], b"hello from")
        self.assertIn("before.test", str(old.sock.getpeercert(binary_form=False) or self.old_subject(old)))
        old.close()

    def old_subject(self, conn):
        der = conn.sock.getpeercert(binary_form=True)
        from cryptography import x509
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()

    def test_large_bodies(self):
        """Large bodies both ways through a TLS front and a TLS backend: every
        byte arrives (records split across the bounded buffers, partial writes
        retried, decrypted bytes left inside OpenSSL picked up)."""
        import hashlib
        cert = self.make_cert("gw", "gw.test", ["DNS:gw.test", "IP:127.0.0.1"])
        bcert = self.make_cert("backend", "backend.test", ["IP:127.0.0.1"])
        tls_port = self.env.start_backend("tlsb", args=["--tls-cert", bcert[0], "--tls-key", bcert[1]])
        text = self.tls_config(cert).replace("%(log)s", "off").replace(
            "  new: {endpoints: [127.0.0.1:%d]}" % self.new,
            "  new: {endpoints: [127.0.0.1:%d], tls: {ca: %s}}" % (tls_port, self.ca[0]))
        self.gateway(text)
        body = os.urandom(6 << 20)
        path = self.env.path("up.bin")
        with open(path, "wb") as f:
            f.write(body)
        for user, backend in (("42", "tlsb"), ("u-legacy", None)):  # 42 is a test user: the new (TLS) pool
            st, h, out = curl("--cacert", self.ca[0], "--http1.1", "--data-binary", "@" + path,
                              "https://127.0.0.1:%d/echo" % self.port, "-H", "X-User-Id: " + user,
                              "-H", "X-Switchyard-Variant: " + ("new" if backend else "legacy"))
            self.assertEqual(st, 200, out[:200])
            echo = __import__("json").loads(out)
            self.assertEqual(echo["body_length"], len(body))
            self.assertEqual(echo["body_sha256"], hashlib.sha256(body).hexdigest())
            if backend:
                self.assertEqual(echo["backend"], backend)
            st, h, out = curl("--cacert", self.ca[0], "--http1.1", "https://127.0.0.1:%d/big?size=%d" % (
                self.port, 9 << 20), "-H", "X-User-Id: " + user,
                "-H", "X-Switchyard-Variant: " + ("new" if backend else "legacy"))
            self.assertEqual((st, len(out)), (200, 9 << 20))
            self.assertEqual(out, b"x" * (9 << 20))

    def test_handshake_flood(self):
        """200 connections that never finish a handshake do not block others;
        timeouts.tls_handshake closes them."""
        cert = self.make_cert("gw", "gw.test", ["DNS:gw.test"])
        self.gateway(self.tls_config(cert, extra_top="timeouts: {tls_handshake: 1s}").replace("%(log)s", "off"))
        half = []
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", self.port))
            if i % 2:
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
            half.append(s)
        for _ in range(5):
            st, h, body = curl("-k", "https://127.0.0.1:%d/x" % self.port, timeout=10)
            self.assertEqual(st, 200)
        for s in half:
            s.settimeout(20 * SLOW)
            try:
                self.assertEqual(s.recv(4096)[:0], b"")
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            s.close()

    def test_tls_backends(self):
        """Backends over TLS: verified with the given CA (SNI sent, sessions
        resumed on new connections), also as https://localhost:port; a backend
        whose certificate the CA did not sign is a connect failure (502)."""
        bcert = self.make_cert("backend", "backend.test", ["DNS:backend.test", "DNS:localhost", "IP:127.0.0.1"])
        tls_port = self.env.start_backend("tlsb", args=["--tls-cert", bcert[0], "--tls-key", bcert[1]])
        other_ca = self.make_ca("other-ca")
        route = ("  - name: %s\n    match: {path_prefix: %s}\n    user_key: [{header: X-User-Id}]\n"
                 "    legacy: %s\n    new: %s\n    percent_bp: 0\n")
        admin = free_port()
        text = ("workers: 1\nlisten:\n  - address: 127.0.0.1:%d\naccess_log: off\n"
                "admin: {address: 127.0.0.1:%d}\n"
                "limits: {upstream_keepalive: 0}\n"
                "pools:\n"
                "  tls: {endpoints: [127.0.0.1:%d], tls: {ca: %s, sni: backend.test},\n"
                "        health: {path: /health, interval: 200ms, rise: 1, fall: 1}}\n"
                "  probed: {endpoints: [127.0.0.1:%d], tls: {ca: %s},\n"
                "           health: {path: /health, interval: 200ms, rise: 1, fall: 1}}\n"
                "  viaurl: {endpoints: ['https://localhost:%d'], tls: {ca: %s}}\n"
                "  wrongca: {endpoints: [127.0.0.1:%d], tls: {ca: %s}}\n"
                "routes:\n" % (self.port, admin, tls_port, self.ca[0], tls_port, other_ca[0], tls_port, self.ca[0], tls_port,
                               other_ca[0]))
        text += route % ("url", "/url", "viaurl", "viaurl") + route % ("wrong", "/wrong", "wrongca", "wrongca")
        text += route % ("nav", "/", "tls", "tls")
        self.env.allowed.append(r"pool wrongca is down")
        # legacy and new are both wrongca: a trip there has nowhere to roll back to, and says so
        self.env.allowed.append(r"rollback refused: legacy pool wrongca has no healthy endpoint")
        gw = self.gateway(text)
        reused = []
        for i in range(4):
            st, h, body = curl("http://127.0.0.1:%d/x" % self.port)
            self.assertEqual(st, 200, body)
            self.assertEqual(h.get("x-backend"), "tlsb")
            self.assertEqual(h.get("x-tls-sni"), "backend.test")
            reused.append(h.get("x-tls-reused"))
        self.assertEqual(reused[0], "0")
        self.assertIn("1", reused[1:], "no TLS session was resumed on a new upstream connection")
        st, h, body = curl("http://127.0.0.1:%d/url" % self.port)
        self.assertEqual(st, 200, body)
        self.assertEqual(h.get("x-tls-sni"), "localhost")
        # A certificate the CA did not sign: the handshake fails, which is a
        # failed connect: 502, and three in a row take the endpoint out.
        for _ in range(3):
            st, h, body = curl("http://127.0.0.1:%d/wrong" % self.port)
            self.assertEqual(st, 502, body)
        up = 'switchyard_endpoint_up{pool="wrongca",endpoint="127.0.0.1:%d"} 0' % tls_port
        wait_for(lambda: up in curl("http://127.0.0.1:%d/metrics" % admin)[2].decode(), 10,
                 "the wrong-CA endpoint ejected")
        with open(gw.log_path) as f:
            self.assertIn("TLS handshake failed: unable to get local issuer certificate", f.read())
        # Health probes speak TLS: the pool probed with the wrong CA is down
        # without any request, the one probed with the right CA is up.
        metric = 'switchyard_endpoint_up{pool="%s",endpoint="127.0.0.1:%d"} %d'
        wait_for(lambda: metric % ("probed", tls_port, 0) in curl("http://127.0.0.1:%d/metrics" % admin)[2].decode(),
                 10, "the endpoint probed with the wrong CA down")
        self.assertIn(metric % ("tls", tls_port, 1), curl("http://127.0.0.1:%d/metrics" % admin)[2].decode())
        with open(gw.log_path) as f:
            self.assertIn("(pool probed) is down: TLS handshake failed", f.read())


if __name__ == "__main__":
    main()
