"""Hostile and malformed PostgreSQL wire input thrown at a running Rolegate gateway, on raw
sockets: every case must get a clean error (or a clean close), never a crash, and the
gateway must serve a proper client afterwards. Also: cancel keys cannot be reused or
forged, and a client that stops reading its results does not grow the gateway's memory.
Exits non-zero on the first failure.

Usage: hostile_wire.py HOST PORT SERVICE GATEWAY_PID   (the service's token in PGPASSWORD)
       hostile_wire.py HOST PORT SERVICE GATEWAY_PID --login-during-shutdown
         (only: a login whose last step comes after SIGTERM is refused by name; stops the gateway)
"""
import os
import signal
import socket
import struct
import sys
import threading
import time

from checks import check, fail, passed
import wire
from wire import connect, error_fields, expect_error, message, query, read_message, recv_exact, startup_packet

host, port, service, gateway_pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
token = os.environ["PGPASSWORD"]


wire.configure(host, port, service, token)


def scram_login(user=service, secret=None, tamper=None):
    """Logs in with SCRAM-SHA-256. `tamper(final_text, attrs)` may rewrite the client-final
    message; returns (socket, backend key (pid, secret), client-final) or the socket after
    sending a tampered final."""
    attempt = wire.ScramLogin(wire.Endpoint(host, port, user, token if secret is None else secret))
    final = attempt.final()
    if tamper:
        final = tamper(final, attempt.attrs)
        attempt.finish(final)
        return attempt.sock, None, final
    attempt.finish(final)
    key, _ = attempt.ready()
    return attempt.sock, key, final


def still_serving(after):
    s, _, _ = scram_login()
    rows, error = query(s, "SELECT 41 + 1")
    check(error is None and rows == [["42"]], f"after {after}: the gateway no longer serves ({rows}, {error})")
    s.sendall(message(b"X", b""))
    s.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    fail("no VmRSS for the gateway")


def send_cancel(key):
    s = connect()
    s.sendall(struct.pack("!iiii", 16, 80877102, key[0], key[1]))
    s.settimeout(5)
    check(s.recv(1) == b"", "a cancel request was answered instead of closed")
    s.close()


if sys.argv[5:] == ["--login-during-shutdown"]:
    # An idle session holds the shutdown in its grace; another login sends its proof only
    # after the signal. It must be refused by name, not admitted into a shutting-down gateway.
    held, _, _ = scram_login()

    def prove_after_the_signal(final, attrs):
        os.kill(gateway_pid, signal.SIGTERM)
        time.sleep(1)
        return final

    s, _, _ = scram_login(tamper=prove_after_the_signal)
    expect_error(s, "57P03", "a login completed after SIGTERM", "shutting down")
    expect_error(held, "57P01", "an idle session at the end of the grace", "shutting down")
    print("login during shutdown: refused by name; " + ", ".join(passed))
    sys.exit(0)

# --- Framing of the startup packet -------------------------------------------------------
for what, raw in [
    ("startup length 0", struct.pack("!i", 0)),
    ("startup length 3", struct.pack("!i", 3)),
    ("startup length negative", struct.pack("!i", -1)),
    ("startup length 2 GB", struct.pack("!I", 0x7FFFFFFF) + b"\0" * 64),
    ("startup packet over 10,000 bytes", struct.pack("!ii", 20_000, 196608) + b"x" * 20_000),
    ("startup packet without terminator", None),
]:
    s = connect()
    if raw is None:
        body = struct.pack("!i", 196608) + b"user\0" + service.encode() + b"\0database\0app"
        raw = struct.pack("!i", len(body) + 4) + body
    s.sendall(raw)
    expect_error(s, "08P01", what)

s = connect()
s.sendall(struct.pack("!ii", 8, 80877103) + startup_packet(service))
expect_error(s, "08P01", "bytes after SSLRequest before the TLS handshake", "unencrypted data")

s = connect()
s.sendall(struct.pack("!ii", 8, 80877104))
check(s.recv(1) == b"N", "GSSENCRequest not declined with N")
s.sendall(struct.pack("!i", 8) + struct.pack("!i", 2 << 16))
expect_error(s, "0A000", "protocol version 2 after a declined GSSENCRequest")

s = connect()
s.sendall(startup_packet(service, extra=[("replication", "database")]))
expect_error(s, "0A000", "a replication connection")

s = connect()
s.sendall(startup_packet(""))
expect_error(s, "28000", "an empty user name")

# --- The SCRAM exchange ------------------------------------------------------------------
s, _, _ = scram_login(tamper=lambda final, attrs: final.replace(attrs["r"], attrs["r"][:-4] + "AAAA"))
expect_error(s, "28P01", "SCRAM client-final with a wrong nonce")
s, _, _ = scram_login(tamper=lambda final, attrs: final[:-10])
expect_error(s, "28P01", "SCRAM client-final with a truncated proof")
s, _, _ = scram_login(tamper=lambda final, attrs: final.split(",p=")[0])
expect_error(s, "28P01", "SCRAM client-final without a proof")
s, _, _ = scram_login(tamper=lambda final, attrs: "\xff\xfe garbage")
expect_error(s, "28P01", "SCRAM client-final of garbage")
s, _, _ = scram_login(secret="rg_wrong_token_entirely", tamper=lambda final, attrs: final)
expect_error(s, "28P01", "SCRAM with a wrong token")
# A client-final from a successful exchange, replayed into a new one: its nonce is stale.
good, _, recorded = scram_login()
good.close()
s, _, _ = scram_login(tamper=lambda final, attrs: recorded)
expect_error(s, "28P01", "a replayed SCRAM client-final (reused nonce)")

s = connect()
s.sendall(startup_packet(service))
read_message(s)
s.sendall(message(b"p", b"SCRAM-SHA-1\0" + struct.pack("!i", 3) + b"n,,"))
expect_error(s, "28000", "an unsupported SASL mechanism")

s = connect()
s.sendall(startup_packet(service))
read_message(s)
s.sendall(message(b"Q", b"SELECT 1\0"))
expect_error(s, "08P01", "a query instead of the password message")

s = connect()
s.sendall(startup_packet(service))
read_message(s)
s.sendall(b"p" + struct.pack("!i", 0x7FFFFFFF) + b"x" * 100)
expect_error(s, "08P01", "a 2 GB password message")

# --- A client that says nothing (login timeout) -------------------------------------------
s = connect()
expect_error(s, "08P01", "a client that sends nothing", "did not complete")
s = connect()
s.sendall(startup_packet(service)[:9])
expect_error(s, "08P01", "a client that stops in the middle of the startup packet", "did not complete")

# --- After login ----------------------------------------------------------------------------
s, _, _ = scram_login()
big = "x" * (10 * 1024 * 1024)
rows, error = query(s, f"SELECT length('{big}')")
check(error is None and rows == [[str(len(big))]], f"a 10 MB query: {rows} {error}")
passed.append("a 10 MB query")
s.sendall(b"Q" + struct.pack("!i", 3))
expect_error(s, "08P01", "a message length of 3 after login")

s, _, _ = scram_login()
s.sendall(b"Q" + struct.pack("!I", 0xFFFFFFF0))
expect_error(s, "08P01", "a negative message length after login")

s, _, _ = scram_login()
s.sendall(b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"SELECT")
expect_error(s, "08P01", "a 2 GB message length after login")
still_serving("malformed messages after login")

# --- Cancel keys -----------------------------------------------------------------------------
first, first_key, _ = scram_login()
first.sendall(message(b"X", b""))
first.close()
time.sleep(0.2)
second, second_key, _ = scram_login()
check(first_key != second_key, "two sessions were handed the same cancel key")
timer = threading.Timer(0.5, lambda: (send_cancel(first_key), send_cancel((second_key[0], second_key[1] ^ 1))))
timer.start()
rows, error = query(second, "SELECT pg_sleep(1.5), 'finished'")
timer.join()
check(error is None and rows and rows[0][1] == "finished", f"an old or forged cancel key cancelled a query: {error}")
passed.append("an earlier session's cancel key and a forged key cancel nothing")
timer = threading.Timer(0.5, lambda: send_cancel(second_key))
timer.start()
rows, error = query(second, "SELECT pg_sleep(5)")
timer.join()
check(error is not None and error.get("C") == "57014", f"the session's own cancel key did not cancel: {error}")
passed.append("the session's own cancel key cancels")
second.close()

# --- A client that stops reading its results --------------------------------------------------
s, _, _ = scram_login()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
before = rss_kib(gateway_pid)
s.sendall(message(b"Q", b"SELECT repeat('x', 1000) FROM generate_series(1, 400000)\0"))
time.sleep(4)  # 400 MB of results are waiting; we read none of them
grown = rss_kib(gateway_pid) - before
check(grown < 64 * 1024, f"the gateway buffered {grown} KiB for a client that does not read")
passed.append(f"a client that stops reading (gateway RSS +{grown} KiB while 400 MB wait)")
s.close()
still_serving("a client that stopped reading")

print(f"hostile wire: all {len(passed)} checks passed")
for line in passed:
    print(f"  ok: {line}")
