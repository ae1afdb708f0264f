"""A workload identity provider on loopback, for IdentityTests: it publishes its signing keys
as a JWKS document (through OpenID discovery) and signs the JWTs the test asks for, with its
own keys, the way GitHub Actions or a Kubernetes API server would.

    identity_provider.py PORT

Routes:
  GET  /.well-known/openid-configuration   issuer and jwks_uri
  GET  /jwks                                the published keys (Cache-Control: max-age=300); counted
  POST /control/sign {claims, kid, alg?}    a JWT signed with key `kid` (created on first use;
                                            `publish: false` keeps it out of the JWKS)
  POST /control/rotate {kid}                publish only a new key `kid` from now on
  GET  /control/stats                       {"jwks_fetches": N}
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PORT = int(sys.argv[1])
ISSUER = f"http://127.0.0.1:{PORT}"
lock = threading.Lock()
keys = {}  # kid -> (alg, private key)
published = []  # kids in the JWKS
fetches = 0


def key(kid, alg):
    if kid not in keys:
        if alg.startswith("RS"):
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"no key type for {alg}")
        keys[kid] = (alg, private)
    return keys[kid]


def jwk(kid):
    alg, private = keys[kid]
    public = private.public_key()
    if alg.startswith("RS"):
        document = json.loads(RSAAlgorithm.to_jwk(public))
    elif alg == "ES256":
        document = json.loads(ECAlgorithm.to_jwk(public))
    else:
        document = json.loads(OKPAlgorithm.to_jwk(public))
    document.update({"kid": kid, "alg": alg, "use": "sig"})
    return document


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=None):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global fetches
        if self.path == "/.well-known/openid-configuration":
            self.answer(200, {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
        elif self.path == "/jwks":
            with lock:
                fetches += 1
                document = {"keys": [jwk(kid) for kid in published]}
            self.answer(200, document, {"Cache-Control": "public, max-age=300"})
        elif self.path == "/control/stats":
            with lock:
                self.answer(200, {"jwks_fetches": fetches})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/control/sign":
            kid = request["kid"]
            alg = request.get("alg", "RS256")
            with lock:
                _, private = key(kid, alg)
                if request.get("publish", True) and kid not in published:
                    published.append(kid)
            token = jwt.encode(request["claims"], private, algorithm=alg, headers={"kid": kid})
            self.answer(200, {"jwt": token})
        elif self.path == "/control/rotate":
            with lock:
                key(request["kid"], request.get("alg", "RS256"))
                published[:] = [request["kid"]]
            self.answer(200, {"published": published})
        else:
            self.answer(404, {"error": "not found"})


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(f"identity provider on {ISSUER}", flush=True)
server.serve_forever()
