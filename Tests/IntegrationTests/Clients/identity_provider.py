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

and a person's login on a device without a browser (RFC 8628), for `rolegate login --device`:
  POST /device (client_id, scope)           a device code and the user code to enter
  POST /control/approve {user_code, claims} the person approves: the next poll gets an ID token
  POST /token (grant_type=device_code, …)   authorization_pending until then
"""

import json
import secrets
import sys
import threading
import time
import urllib.parse
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
devices = {}  # device_code -> {"user_code", "client_id", "claims" (once approved)}


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
            self.answer(200, {
                "issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks", "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token", "device_authorization_endpoint": f"{ISSUER}/device",
            })
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
        raw = self.rfile.read(length)
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            return self.device_flow(form)
        request = json.loads(raw or b"{}")
        if self.path == "/control/approve":
            with lock:
                for device in devices.values():
                    if device["user_code"] == request["user_code"]:
                        device["claims"] = request["claims"]
                        return self.answer(200, {"approved": True})
            self.answer(404, {"error": "no such user code"})
        elif self.path == "/control/sign":
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

    def device_flow(self, form):
        if self.path == "/device":
            code = secrets.token_urlsafe(24)
            user_code = secrets.token_hex(4).upper()
            with lock:
                devices[code] = {"user_code": user_code, "client_id": form.get("client_id")}
            self.answer(200, {
                "device_code": code, "user_code": user_code, "verification_uri": f"{ISSUER}/activate",
                "interval": 1, "expires_in": 60,
            })
        elif self.path == "/token" and form.get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
            with lock:
                device = devices.get(form.get("device_code"))
                if device is None or device["client_id"] != form.get("client_id"):
                    return self.answer(400, {"error": "invalid_grant"})
                if "claims" not in device:
                    return self.answer(400, {"error": "authorization_pending"})
                del devices[form["device_code"]]
                _, private = key("device", "ES256")
                if "device" not in published:
                    published.append("device")
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": form["client_id"], "iat": now, "exp": now + 300, **device["claims"]}
            token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "device"})
            self.answer(200, {"id_token": token, "access_token": secrets.token_urlsafe(16), "token_type": "Bearer"})
        else:
            self.answer(400, {"error": "unsupported_grant_type"})


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(f"identity provider on {ISSUER}", flush=True)
server.serve_forever()
