"""A webhook receiver that does what Rolegate's documentation asks of one, for AccessRequestTests:
it checks each delivery's Rolegate-Signature (HMAC-SHA256 over "<t>.<body>" with the shared
secret), refuses a timestamp more than five minutes away and a delivery id it has already
accepted (a replay), and answers 503 to the first delivery it gets (so Rolegate must retry).

    webhook_receiver.py PORT SECRET

GET /deliveries lists what it accepted: [{"id", "event", "body", "signature", "attempt"}]; every
refusal is counted in GET /refusals.
"""

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, SECRET = int(sys.argv[1]), sys.argv[2].encode()
lock = threading.Lock()
accepted = []
refusals = {"bad_signature": 0, "stale": 0, "replay": 0}
seen = set()
first = [True]


def verify(header, body):
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    timestamp = fields.get("t", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return "stale"
    expected = hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, fields.get("v1", "")) else "bad_signature"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            self.answer(200, accepted if self.path == "/deliveries" else refusals)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            if first[0]:
                first[0] = False
                return self.answer(503, {"error": "try again"})
            problem = verify(self.headers.get("Rolegate-Signature", ""), body)
            delivery = self.headers.get("Rolegate-Delivery", "")
            if problem is None and delivery in seen:
                problem = "replay"
            if problem:
                refusals[problem] += 1
                return self.answer(409 if problem == "replay" else 401, {"error": problem})
            seen.add(delivery)
            accepted.append({
                "id": delivery, "event": self.headers.get("Rolegate-Event", ""), "body": json.loads(body),
                "signature": self.headers.get("Rolegate-Signature", ""), "raw": body.decode(),
            })
        self.answer(200, {"ok": True})


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(f"webhook receiver on {PORT}", flush=True)
server.serve_forever()
