"""Several HTTP requests on one connection, sent in one write (pipelined) and one after
another (keep-alive), mixing the data API (answered on the event loop) with the router's
routes: every answer must come back whole, once, in the order of its request. HTTP/1.0
connections stay open when asked to (the answers say `Connection: keep-alive`), else close.

With IDLE_SECONDS (the gateway's http_idle_timeout), also: a connection without a request
is closed after it, one whose request runs longer is not, and requests closer together
than it keep a connection open.

With --shutdown PID instead: the gateway (PID) is sent SIGTERM while one connection waits
between requests and another has a request running: the waiting one closes at once, the
running request is answered (saying `Connection: close`), then its connection closes too.

Usage: http_pipelining.py HOST PORT [IDLE_SECONDS | --shutdown PID]   (a data token of the `reports` service in TOKEN)
"""
import json
import os
import signal
import socket
import sys
import time
from email.utils import parsedate_to_datetime

from checks import check, fail, passed

host, port = sys.argv[1], int(sys.argv[2])
token = os.environ["TOKEN"]


def request(method, path, body=None, request_id=None, headers=(), bearer=None, chunked=False, version="1.1"):
    lines = [f"{method} {path} HTTP/{version}", f"Host: {host}"]
    if bearer is not False:
        lines.append(f"Authorization: Bearer {bearer or token}")
    if request_id:
        lines.append(f"X-Request-Id: {request_id}")
    lines += list(headers)
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        lines.append("Content-Type: application/json")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            half = len(data) // 2
            data = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (data[:half], data[half:])) + b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class Reader:
    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def response(self, to_head=False):
        """(status, headers, body) of the next answer (`to_head`: to a HEAD request, so without
        a body whatever its length says), or None when the server closed first."""
        while b"\r\n\r\n" not in self.buffer:
            if not self.more():
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if to_head else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self.more():
                fail(f"the answer to {headers.get('x-request-id')} ended early")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split(" ")[1]), headers, body


def rows(body):
    return json.loads(body)["rows"]


if len(sys.argv) > 4 and sys.argv[3] == "--shutdown":
    waiting = socket.create_connection((host, port), timeout=30)
    waiting_reader = Reader(waiting)
    waiting.sendall(request("POST", "/v1/query", {"sql": "SELECT 1 AS n"}, "before"))
    answer = waiting_reader.response()
    check(answer is not None and answer[0] == 200, f"the first request failed: {answer}")
    busy = socket.create_connection((host, port), timeout=30)
    busy.sendall(request("POST", "/v1/query", {"sql": "SELECT pg_sleep(2)::text AS slept, 7 AS n"}, "running"))
    time.sleep(0.5)
    os.kill(int(sys.argv[4]), signal.SIGTERM)
    # The waiting connection closes without waiting for the running request.
    started = time.monotonic()
    check(waiting_reader.response() is None, "a connection between requests got an answer after SIGTERM")
    closed_after = time.monotonic() - started
    answer = Reader(busy).response()
    answered_after = time.monotonic() - started
    check(answer is not None, "the running request was not answered at shutdown")
    status, headers, body = answer
    check(status == 200 and rows(body) == [["", 7]], f"the running request: {status} {body[:300]!r}")
    check(headers.get("connection") == "close", f"the last answer does not say it closes: {headers}")
    check(closed_after < answered_after, f"the waiting connection closed after {closed_after:.2f} s, "
          f"not before the running request's answer ({answered_after:.2f} s)")
    check(busy.recv(1) == b"", "the connection stayed open after its last answer")
    passed += ["a waiting connection closes at shutdown", "the running request is answered, then closed"]
    print("http pipelining: all " + str(len(passed)) + " checks passed")
    sys.exit(0)

sock = socket.create_connection((host, port), timeout=30)
sock.sendall(
    request("POST", "/v1/query", {"sql": "SELECT pg_sleep(0.3)::text AS slept, 1 AS n"}, "first")
    + request("GET", "/healthz", request_id="second", bearer=False)
    + request("POST", "/v1/query/", {"sql": "SELECT 2 AS n"}, "third")
    + request("GET", "/v1/query", request_id="fourth")
    + request("HEAD", "/v1/batch", request_id="fourth-head")
    + request("POST", "/v1/batch", {"statements": [{"sql": "SELECT 3 AS n"}, {"sql": "SELECT 4 AS n"}]}, "fifth",
              chunked=True)
    + request("POST", "/v1/query?x=1", {"sql": "SELECT 1"}, "sixth", bearer="rgt_not_a_token")
    + request("POST", "/v1/query", {"sql": "SELECT 5 AS n"}, "seventh", headers=["Connection: close"])
)
reader = Reader(sock)
expected = [
    ("first", 200, lambda b: rows(b) == [["", 1]]),
    ("second", 200, lambda b: json.loads(b)["status"] == "ok"),
    ("third", 200, lambda b: rows(b) == [[2]]),
    ("fourth", 405, lambda b: json.loads(b)["code"] == "method_not_allowed"),
    ("fourth-head", 405, lambda b: b == b""),
    ("fifth", 200, lambda b: [r["rows"] for r in json.loads(b)["results"]] == [[[3]], [[4]]]),
    ("sixth", 401, lambda b: json.loads(b)["code"] == "token_invalid"),
    ("seventh", 200, lambda b: rows(b) == [[5]]),
]
for request_id, status, body_ok in expected:
    answer = reader.response(to_head=request_id.endswith("-head"))
    check(answer is not None, f"pipelined: the connection closed before the answer to {request_id}")
    got_status, headers, body = answer
    check(headers.get("x-request-id") == request_id,
          f"pipelined: expected the answer to {request_id}, got {headers.get('x-request-id')} ({got_status} {body[:200]!r})")
    check(got_status == status, f"pipelined {request_id}: status {got_status}, expected {status}: {body[:200]!r}")
    check(body_ok(body), f"pipelined {request_id}: unexpected body {body[:300]!r}")
    expected_type = "application/json" if status < 400 else "application/problem+json"
    check(headers.get("content-type", "").startswith(expected_type), f"{request_id}: {headers}")
    check(headers.get("server") == "rolegate", f"{request_id}: server {headers.get('server')!r}")
    try:
        parsedate_to_datetime(headers.get("date", ""))
    except (TypeError, ValueError):
        fail(f"{request_id}: the Date header {headers.get('date')!r} does not parse")
    if request_id.startswith("fourth"):
        check(headers.get("allow") == "POST", f"405 without Allow: POST: {headers}")
    passed.append(f"pipelined {request_id} -> {got_status}")
check(headers.get("connection") == "close", f"the last answer does not say it closes: {headers}")
check(reader.response() is None and not reader.more(), "the connection stayed open after Connection: close")
sock.close()

# Keep-alive, one request after another, data API and router alternating.
sock = socket.create_connection((host, port), timeout=30)
reader = Reader(sock)
for i in range(200):
    if i % 10 == 9:
        sock.sendall(request("GET", "/healthz", request_id=f"k{i}", bearer=False))
        answer = reader.response()
        check(answer is not None and answer[0] == 200 and answer[1].get("x-request-id") == f"k{i}",
              f"keep-alive {i}: {answer}")
        continue
    sock.sendall(request("POST", "/v1/query", {"sql": "SELECT $1::int AS n", "params": [i]}, f"k{i}"))
    answer = reader.response()
    check(answer is not None, f"keep-alive: the connection closed at request {i}")
    status, headers, body = answer
    check(status == 200 and headers.get("x-request-id") == f"k{i}" and rows(body) == [[i]],
          f"keep-alive {i}: {status} {headers.get('x-request-id')} {body[:200]!r}")
passed.append("200 requests on one kept-alive connection")
sock.close()

# HTTP/1.0: a connection stays open only when the request asks for it and the answer says so.
sock = socket.create_connection((host, port), timeout=30)
reader = Reader(sock)
for i, (path, body) in enumerate([("/v1/query", {"sql": "SELECT 6 AS n"}), ("/healthz", None),
                                  ("/v1/query", {"sql": "SELECT 7 AS n"})]):
    sock.sendall(request("POST" if body else "GET", path, body, f"old{i}", headers=["Connection: keep-alive"],
                         bearer=False if body is None else None, version="1.0"))
    answer = reader.response()
    check(answer is not None and answer[0] == 200, f"HTTP/1.0 keep-alive {path}: {answer}")
    check(answer[1].get("connection", "").lower() == "keep-alive",
          f"HTTP/1.0 keep-alive {path}: the answer does not say keep-alive: {answer[1]}")
    passed.append(f"HTTP/1.0 keep-alive {path}")
sock.sendall(request("POST", "/v1/query", {"sql": "SELECT 8 AS n"}, "old-last", version="1.0"))
answer = reader.response()
check(answer is not None and answer[0] == 200 and rows(answer[2]) == [[8]], f"HTTP/1.0 without keep-alive: {answer}")
check(reader.response() is None and not reader.more(), "an HTTP/1.0 connection without keep-alive stayed open")
passed.append("HTTP/1.0 without keep-alive closes")
sock.close()
if len(sys.argv) > 3:
    idle = float(sys.argv[3])

    def closed_after(sock):
        """Seconds until the server closes `sock` (which sends nothing meanwhile)."""
        started = time.monotonic()
        sock.settimeout(idle * 8)
        try:
            data = sock.recv(1)
        except socket.timeout:
            fail(f"a connection idle for {idle * 8:.0f} s was not closed")
        check(data == b"", f"unexpected bytes from an idle connection: {data!r}")
        return time.monotonic() - started

    sock = socket.create_connection((host, port), timeout=30)
    elapsed = closed_after(sock)
    check(elapsed >= idle * 0.8, f"a connection without a request was closed after {elapsed:.1f} s (idle timeout {idle} s)")
    passed.append(f"no request: closed after {elapsed:.1f} s")

    sock = socket.create_connection((host, port), timeout=30)
    reader = Reader(sock)
    sock.sendall(request("POST", "/v1/query", {"sql": f"SELECT pg_sleep({idle * 1.5})::text AS slept"}, "slow"))
    answer = reader.response()
    check(answer is not None and answer[0] == 200, f"a request longer than the idle timeout was cut: {answer}")
    for i in range(4):
        time.sleep(idle * 0.5)
        sock.sendall(request("GET", "/healthz", request_id=f"i{i}", bearer=False) if i % 2 else
                     request("POST", "/v1/query", {"sql": "SELECT 1 AS n"}, f"i{i}"))
        answer = reader.response()
        check(answer is not None and answer[0] == 200, f"request {i} at half the idle timeout: {answer}")
    elapsed = closed_after(sock)
    check(elapsed >= idle * 0.8, f"closed {elapsed:.1f} s after the last answer (idle timeout {idle} s)")
    passed.append(f"busy, then idle: closed after {elapsed:.1f} s")

print("http pipelining: all " + str(len(passed)) + " checks passed")
