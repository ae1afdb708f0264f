"""Raw PostgreSQL protocol for the test clients: framing, SCRAM-SHA-256 logins, simple queries
and checked errors, on plain sockets (no driver between the test and the bytes)."""
import base64
import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass

from checks import check, fail, passed


@dataclass
class Endpoint:
    host: str
    port: int
    user: str
    secret: str
    database: str = "app"


target = Endpoint("127.0.0.1", 0, "", "")


def configure(host, port, service, token):
    """Where connect() and login() go by default: the gateway, as `service` with `token`."""
    global target
    target = Endpoint(host, int(port), service, token)


def connect(endpoint=None):
    endpoint = endpoint or target
    s = socket.create_connection((endpoint.host, endpoint.port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    chunks, remaining = [], n
    while remaining:
        chunk = s.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_message(s):
    header = recv_exact(s, 5)
    if header is None:
        return None, None
    kind, length = header[:1], struct.unpack("!i", header[1:])[0]
    body = recv_exact(s, length - 4)
    return kind, body


def message(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def expect_error(s, sqlstate, what, message_part=None):
    """The next message is an ErrorResponse with this SQLSTATE, and then the connection closes."""
    kind, body = read_message(s)
    check(kind == b"E", f"{what}: expected an ErrorResponse, got {kind!r} {body!r}")
    fields = error_fields(body)
    check(fields.get("C") == sqlstate, f"{what}: expected SQLSTATE {sqlstate}, got {fields}")
    if message_part:
        check(message_part in fields.get("M", ""), f"{what}: message {fields.get('M')!r} lacks {message_part!r}")
    s.settimeout(5)
    try:
        rest = s.recv(1)
    except ConnectionResetError:
        rest = b""
    check(rest == b"", f"{what}: the connection stayed open after the FATAL error")
    passed.append(what)
    s.close()


def startup_packet(user, database="app", extra=None):
    params = [("user", user), ("database", database)] + (extra or [])
    body = struct.pack("!i", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


class ScramLogin:
    """A SCRAM-SHA-256 login in two halves: begin() sends the startup and client-first and reads
    the server-first; finish() sends the proof. A test can act in between."""

    def __init__(self, endpoint, extra=None):
        self.endpoint = endpoint
        self.sock = connect(endpoint)
        self.sock.sendall(startup_packet(endpoint.user, endpoint.database, extra))
        kind, body = read_message(self.sock)
        check(kind == b"R" and struct.unpack("!i", body[:4])[0] == 10, f"expected AuthenticationSASL, got {kind} {body}")
        nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={nonce}"
        first = ("n,," + self.first_bare).encode()
        self.sock.sendall(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        kind, body = read_message(self.sock)
        check(kind == b"R" and struct.unpack("!i", body[:4])[0] == 11, f"expected SASLContinue, got {kind} {body}")
        self.server_first = body[4:].decode()
        self.attrs = dict(part.split("=", 1) for part in self.server_first.split(","))

    def final(self):
        attrs = self.attrs
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.endpoint.secret.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def finish(self, final=None):
        self.sock.sendall(message(b"p", (final or self.final()).encode()))

    def ready(self):
        """Reads up to ReadyForQuery: (BackendKeyData (pid, secret), ParameterStatus by name)."""
        key, parameters = None, {}
        while True:
            kind, body = read_message(self.sock)
            check(kind is not None, "the gateway closed the connection during a proper login")
            if kind == b"E":
                fail(f"a proper login was refused: {error_fields(body)}")
            if kind == b"K":
                key = struct.unpack("!ii", body)
            if kind == b"S":
                name, value = body.split(b"\0")[:2]
                parameters[name.decode()] = value.decode()
            if kind == b"Z":
                return key, parameters


def scram_begin(token):
    return ScramLogin(Endpoint(target.host, target.port, target.user, token, target.database))


def login(token=None, extra=None, with_parameters=False):
    """A whole login to the gateway: (socket, backend key[, parameters])."""
    endpoint = target if token is None else Endpoint(target.host, target.port, target.user, token, target.database)
    attempt = ScramLogin(endpoint, extra)
    attempt.finish()
    key, parameters = attempt.ready()
    return (attempt.sock, key, parameters) if with_parameters else (attempt.sock, key)


def login_to(endpoint):
    attempt = ScramLogin(endpoint)
    attempt.finish()
    attempt.ready()
    return attempt.sock


def query(s, sql):
    """Runs a simple query; returns (rows as lists of str, error fields or None)."""
    s.sendall(message(b"Q", sql.encode() + b"\0"))
    rows, error = [], None
    while True:
        kind, body = read_message(s)
        check(kind is not None, f"connection closed during {sql[:60]!r}")
        if kind == b"D":
            count = struct.unpack("!h", body[:2])[0]
            offset, row = 2, []
            for _ in range(count):
                length = struct.unpack("!i", body[offset : offset + 4])[0]
                offset += 4
                row.append(None if length < 0 else body[offset : offset + length].decode())
                offset += max(length, 0)
            rows.append(row)
        elif kind == b"E":
            error = error_fields(body)
        elif kind == b"Z":
            return rows, error
