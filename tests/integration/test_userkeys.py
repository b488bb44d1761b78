#!/usr/bin/env python3
"""User keys from a JWT (HS256, RS256, ES256; expired, bad signature, wrong
algorithm, alg none, unverified mode) and from a JSON body field (nested path,
number and string ids, oversized and invalid bodies, chunked, Expect), through
the gateway with real curl. A token or body that yields no key sends the user
to legacy; the request itself is always forwarded intact."""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time

from harness import GatewayTest, base_config, curl, free_port, main

SECRET = b"hs256-secret-0123456789abcdef"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(payload, alg="HS256", key=SECRET, sign=None, header=None):
    h = b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    p = b64(json.dumps(payload).encode())
    data = (h + "." + p).encode()
    if sign is not None:
        sig = sign(data)
    elif alg == "HS256":
        sig = hmac.new(key, data, hashlib.sha256).digest()
    else:
        sig = b""
    return h + "." + p + "." + b64(sig)


def der_to_raw(der):
    """ECDSA DER (SEQUENCE of two INTEGERs) to JWS r || s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


class UserKeys(GatewayTest):
    def openssl(self, *args, data=None):
        return subprocess.run(["openssl"] + list(args), input=data, capture_output=True, check=True).stdout

    def setUp(self):
        super().setUp()
        d = self.env.dir
        self.secret = os.path.join(d, "hs.key")
        with open(self.secret, "wb") as f:
            f.write(SECRET + b"\n")
        self.rsa, self.rsa_pub = os.path.join(d, "rsa.pem"), os.path.join(d, "rsa.pub")
        self.ec, self.ec_pub = os.path.join(d, "ec.pem"), os.path.join(d, "ec.pub")
        self.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", self.rsa)
        self.openssl("pkey", "-in", self.rsa, "-pubout", "-out", self.rsa_pub)
        self.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self.ec)
        self.openssl("pkey", "-in", self.ec, "-pubout", "-out", self.ec_pub)

    def start(self, route_extra, user_key):
        cfg = base_config(self.port, self.legacy, self.new, percent=0).replace(
            "    user_key: [{header: X-User-Id}, {cookie: uid}, {query: user}]\n", "    user_key: %s\n" % user_key)
        cfg = cfg.replace("    expose_variant: true\n", "    expose_variant: true\n" + route_extra)
        self.gateway(text=cfg)

    def variant(self, tok):
        s, h, b = curl(self.url + "/x", "-H", "Authorization: Bearer " + tok)
        self.assertEqual(s, 200)
        return h["x-switchyard-variant"]

    def test_hs256(self):
        self.start("    jwt: {alg: HS256, key_file: %s}\n" % self.secret, "[{jwt: sub}]")
        now = int(time.time())
        self.assertEqual(self.variant(token({"sub": "42", "exp": now + 60})), "new")
        self.assertEqual(self.variant(token({"sub": 42})), "new")                      # integer claim
        self.assertEqual(self.variant(token({"sub": "42", "exp": now - 5})), "legacy")  # expired
        self.assertEqual(self.variant(token({"sub": "42", "nbf": now + 600})), "legacy")
        self.assertEqual(self.variant(token({"sub": "42"}, key=b"another-secret-0123456789")), "legacy")
        self.assertEqual(self.variant(token({"sub": "42"}, alg="none")), "legacy")      # alg none
        self.assertEqual(self.variant(token({"sub": "42"}, header={"alg": "RS256"},
                                            sign=lambda d: hmac.new(SECRET, d, hashlib.sha256).digest())), "legacy")
        self.assertEqual(self.variant("not.a.token"), "legacy")
        self.assertEqual(self.variant("garbage"), "legacy")

    def test_rs256_and_es256(self):
        self.start("    jwt: {alg: RS256, key_file: %s}\n" % self.rsa_pub, "[{jwt: sub}]")
        rs = lambda d: self.openssl("dgst", "-sha256", "-sign", self.rsa, data=d)
        self.assertEqual(self.variant(token({"sub": "42"}, alg="RS256", sign=rs)), "new")
        tampered = token({"sub": "42"}, alg="RS256", sign=rs).split(".")
        tampered[1] = b64(json.dumps({"sub": "admin-7"}).encode())
        self.assertEqual(self.variant(".".join(tampered)), "legacy")
        # An HS256 token made with the public key as the secret (alg confusion).
        with open(self.rsa_pub, "rb") as f:
            pub = f.read()
        self.assertEqual(self.variant(token({"sub": "42"}, key=pub)), "legacy")
        self.env.stop(self.env.gateways.pop())
        self.start("    jwt: {alg: ES256, key_file: %s}\n" % self.ec_pub, "[{jwt: sub}]")
        es = lambda d: der_to_raw(self.openssl("dgst", "-sha256", "-sign", self.ec, data=d))
        self.assertEqual(self.variant(token({"sub": "admin-7"}, alg="ES256", sign=es)), "new")
        self.assertEqual(self.variant(token({"sub": "admin-7"}, alg="ES256", sign=lambda d: b"\1" * 64)), "legacy")

    def test_unverified_only_when_asked(self):
        self.start("    jwt_verify: false\n", "[{jwt: uid}]")
        self.assertEqual(self.variant(token({"uid": "42"}, alg="none")), "new")

    def post(self, body, *extra):
        s, h, b = curl(self.url + "/echo", "-H", "Content-Type: application/json", "--data-binary", body, *extra)
        return s, h, json.loads(b)

    def test_json_body(self):
        self.start("    json_body_limit: 1KiB\n", "[{header: X-User-Id}, {json: message.from.id}]")
        update = {"update_id": 1, "message": {"from": {"id": 42, "name": "a"}, "text": "hi"}}
        s, h, d = self.post(json.dumps(update))
        self.assertEqual((s, h["x-switchyard-variant"]), (200, "new"))
        body = json.dumps(update).encode()
        self.assertEqual((d["body_length"], d["body_sha256"]), (len(body), hashlib.sha256(body).hexdigest()))
        s, h, d = self.post(json.dumps({"message": {"from": {"id": "admin-7"}}}))
        self.assertEqual(h["x-switchyard-variant"], "new")
        # The header comes first in the route's order.
        s, h, d = self.post(json.dumps(update), "-H", "X-User-Id: 1")
        self.assertEqual(h["x-switchyard-variant"], "legacy")
        # Chunked, and with Expect: 100-continue.
        s, h, d = self.post(json.dumps(update), "-H", "Transfer-Encoding: chunked", "-H", "Expect: 100-continue")
        self.assertEqual((s, h["x-switchyard-variant"], d["body_length"]), (200, "new", len(body)))
        # Too big, or not JSON: no key (legacy), forwarded whole, counted.
        big = json.dumps({"message": {"from": {"id": 42}}, "pad": "x" * 5000}).encode()
        s, h, d = self.post(big.decode())
        self.assertEqual((s, h["x-switchyard-variant"]), (200, "legacy"))
        self.assertEqual((d["body_length"], d["body_sha256"]), (len(big), hashlib.sha256(big).hexdigest()))
        s, h, d = self.post('{"message": {"from": {"id": 42}')
        self.assertEqual((s, h["x-switchyard-variant"]), (200, "legacy"))
        s, h, d = self.post(json.dumps({"message": {"from": {}}}))
        self.assertEqual(h["x-switchyard-variant"], "legacy")
        # A GET without a body is not held.
        s, h, b = curl(self.url + "/x")
        self.assertEqual((s, h["x-switchyard-variant"]), (200, "legacy"))

    def test_json_body_large_upload_streams_after_the_limit(self):
        self.start("", "[{json: message.from.id}]")
        path = self.env.path("big.json")
        blob = b'{"message": {"from": {"id": 42}}, "pad": "' + b"y" * (3 << 20) + b'"}'
        with open(path, "wb") as f:
            f.write(blob)
        s, h, d = self.post("@" + path)
        self.assertEqual((s, h["x-switchyard-variant"], d["body_length"], d["body_sha256"]),
                         (200, "legacy", len(blob), hashlib.sha256(blob).hexdigest()))
        s, h, d = self.post("@" + path, "-H", "Transfer-Encoding: chunked")
        self.assertEqual((d["body_length"], d["body_sha256"]), (len(blob), hashlib.sha256(blob).hexdigest()))


if __name__ == "__main__":
    main()
