"""Hostile and malformed HTTP thrown at Rolegate's HTTP API on raw sockets: malformed JSON,
wrong types, deep nesting, huge headers, truncated and slow bodies. Every case must get a
clean 4xx problem (or a clean close), never a 5xx or a crash, and the API must answer a
proper request afterwards. Exits non-zero on the first failure.

Usage: hostile_http.py HOST PORT BODY_TIMEOUT_SECONDS   (a data token in TOKEN, an admin token in ADMIN_TOKEN)
"""
import json
import os
import socket
import sys
import time

from checks import check, fail, passed

host, port, body_timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
token = os.environ["TOKEN"]


def exchange(raw, timeout=15):
    """Sends raw bytes (optionally a list of (bytes, pause) pieces); returns (status, body) or (None, b'')."""
    s = socket.create_connection((host, port), timeout=timeout)
    pieces = raw if isinstance(raw, list) else [(raw, 0)]
    for piece, pause in pieces:
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            break  # the server answered early and stopped reading: read its answer
        time.sleep(pause)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if length and len(body) >= int(length[0].split(b":")[1]):
                    break
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    if not data.startswith(b"HTTP/1.1 "):
        return None, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def post(path, body, headers=None, auth=True, bearer=None):
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", "Connection: close"]
    if auth:
        lines.append(f"Authorization: Bearer {bearer or token}")
    lines += headers or []
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def expect(status_range, what, raw, code=None, **kwargs):
    status, body = exchange(raw, **kwargs)
    check(status is not None, f"{what}: no HTTP response")
    check(status in status_range, f"{what}: status {status} {body[:200]!r}")
    if code:
        try:
            problem = json.loads(body)
        except ValueError:
            fail(f"{what}: the body is not a JSON problem: {body[:200]!r}")
        check(problem.get("code") == code, f"{what}: code {problem.get('code')!r}, expected {code!r}")
    passed.append(f"{what} -> {status}")


def still_serving(after):
    status, body = exchange(post("/v1/query", json.dumps({"sql": "SELECT 41 + 1 AS answer"})))
    check(status == 200 and b"42" in body, f"after {after}: the API no longer serves ({status} {body[:200]!r})")


bad_request = range(400, 401)
for what, body in [
    ("malformed JSON", '{"sql": '),
    ("JSON of the wrong shape (a list)", "[]"),
    ("JSON null", "null"),
    ("sql as a number", '{"sql": 5}'),
    ("params as a string", '{"sql": "SELECT $1", "params": "x"}'),
    ("max_rows as a string", '{"sql": "SELECT 1", "max_rows": "many"}'),
    ("no sql at all", '{"params": []}'),
    ("a lone surrogate", '{"sql": "SELECT \'\\ud800\'"}'),
    ("invalid UTF-8", b'{"sql": "SELECT \'\xff\xfe\'"}'),
    ("JSON nested 100,000 deep", '{"sql": "SELECT 1", "params": [' + "[" * 100_000 + "]" * 100_000 + "]}"),
    ("an empty body", ""),
]:
    expect(bad_request, what, post("/v1/query", body), code="bad_request")
expect(range(400, 401), "a batch of the wrong shape", post("/v1/batch", '{"statements": "SELECT 1"}'), code="bad_request")
for what, body in [
    ("an admin body of the wrong types", '{"service": 7}'),
    ("an admin body naming no service", '{"ttl": "1h"}'),
    ("an admin body with a bad ttl", '{"service": "reports", "ttl": "forever"}'),
]:
    expect(range(400, 401), what, post("/admin/v1/tokens", body, bearer=os.environ["ADMIN_TOKEN"]))
still_serving("malformed bodies")

expect(range(401, 402), "a garbage bearer token", post("/v1/query", '{"sql": "SELECT 1"}', auth=False,
       headers=["Authorization: Bearer \u00ff\u00fe".encode("latin-1").decode("latin-1")]), code="token_invalid")
expect(range(413, 414), "a 5 MB body", post("/v1/query", '{"sql": "' + "x" * (5 << 20) + '"}'), code="body_too_large")
expect(range(413, 414), "a declared 3 GB body",
       ("POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token
        + "\r\nContent-Length: 3000000000\r\n\r\n{\"sql\"").encode(), code="body_too_large")

# Headers: one huge, many small. The server answers 431/400 or closes; it does not fall over.
for what, header_lines in [
    ("a 200 KB header", ["X-Big: " + "a" * 200_000]),
    ("10,000 headers", [f"X-H{i}: v" for i in range(10_000)]),
]:
    status, _ = exchange(post("/v1/query", '{"sql": "SELECT 1"}', headers=header_lines))
    check(status is None or 400 <= status < 500, f"{what}: status {status}")
    passed.append(f"{what} -> {status or 'closed'}")
still_serving("huge headers")

for what, raw in [
    ("a garbage request line", b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"),
    ("a bad Content-Length", b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
    ("a bad chunk size", b"POST /v1/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("both Content-Length and chunked",
     b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
]:
    status, _ = exchange(raw)
    check(status is None or 400 <= status < 500, f"{what}: status {status}")
    passed.append(f"{what} -> {status or 'closed'}")

# A body that stops half way: the client closes, the server must just drop it.
s = socket.create_connection((host, port), timeout=10)
s.sendall(post("/v1/query", '{"sql": "SELECT 1"}' + " " * 1000)[:-600])
s.close()
passed.append("a truncated body, then close")

# A slow body: a few bytes a second, never finishing within the body timeout.
full = post("/v1/query", '{"sql": "SELECT 1"}' + " " * 200)
head_end = full.index(b"\r\n\r\n") + 4
pieces = [(full[:head_end], 0)] + [(full[i : i + 2], 0.5) for i in range(head_end, head_end + int(body_timeout) * 4, 2)]
started = time.monotonic()
expect(range(408, 409), "a slow body", pieces, code="body_timeout", timeout=body_timeout + 30)
check(time.monotonic() - started < body_timeout + 10, "the slow body was not cut at the body timeout")
still_serving("slow and truncated bodies")

print(f"hostile http: all {len(passed)} checks passed")
for line in passed:
    print(f"  ok: {line}")
