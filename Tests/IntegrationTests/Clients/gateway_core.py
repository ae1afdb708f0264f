"""The gateway core's promises, on raw sockets against a running gateway (and, for the large
parameter, PostgreSQL directly beside it). Exits non-zero on the first failure; prints one line
per check and the measured times.

Usage: gateway_core.py HOST PORT SERVICE ROLEGATE_BINARY POLICY_DIR DIRECT_PORT
  The service's token in PGPASSWORD; the role's own login for DIRECT_PORT in DIRECT_PASSWORD
  and DIRECT_USER (the large-parameter comparison). ROLEGATE_BINARY runs in POLICY_DIR to
  issue and revoke the service's tokens.
"""
import os
import socket
import struct
import subprocess
import sys
import time

from checks import check, fail, passed
import wire

host, port, service, rolegate, policy_dir, direct_port = sys.argv[1:7]
port, direct_port = int(port), int(direct_port)
wire.configure(host, port, service, os.environ["PGPASSWORD"])


def rolegate_cli(*arguments):
    result = subprocess.run([rolegate, *arguments], cwd=policy_dir, capture_output=True, text=True, timeout=60)
    check(result.returncode == 0, f"rolegate {' '.join(arguments)}: {result.stderr}")
    return result.stdout.strip()


def new_token():
    """A fresh token for the service (a service holds one live token: the last one is revoked)."""
    subprocess.run([rolegate, "token", "revoke", "--service", service, "--reason", "core test: next case"],
                   cwd=policy_dir, capture_output=True, timeout=60)
    return rolegate_cli("token", "issue", service)


def token_id(token):
    return token.split("_")[1]


# --- Revocation at each point of the login ------------------------------------------------
# Each case revokes a fresh token at one point of the SCRAM exchange; the login must be refused
# as revoked, however long the client waited before proving.
for point, wait in [("before the client's first SCRAM message", 0), ("between client-first and client-final", 1.5)]:
    token = new_token()
    if wait == 0:
        rolegate_cli("token", "revoke", token_id(token), "--reason", "core test")
        time.sleep(1.2)  # past the verifier's staleness bound
        pending = wire.scram_begin(token)
    else:
        pending = wire.scram_begin(token)
        rolegate_cli("token", "revoke", token_id(token), "--reason", "core test")
        time.sleep(wait)
    pending.finish()
    wire.expect_error(pending.sock, "28000", f"revoked {point}", "revoked")

# A token revoked while its session waits for nothing more: the session ends (the known path).
token = new_token()
s, key = wire.login(token)
rows, error = wire.query(s, "SELECT 1")
check(error is None and rows == [["1"]], f"a fresh token's session does not work: {rows} {error}")
rolegate_cli("token", "revoke", token_id(token), "--reason", "core test")
s.settimeout(5)
kind, body = wire.read_message(s)
check(kind == b"E" and wire.error_fields(body).get("C") == "28000", f"a revoked session was not ended: {kind} {body}")
passed.append("a live session ends at its token's revocation")

# --- The client sees what PostgreSQL would tell it ----------------------------------------
token = new_token()
s, key, parameters = wire.login(token, extra=[("application_name", "core-test-app")], with_parameters=True)
check(parameters.get("application_name") == "core-test-app",
      f"ParameterStatus application_name is {parameters.get('application_name')!r}, not what the client set")
rows, _ = wire.query(s, "SELECT pg_backend_pid(), current_setting('application_name')")
check(rows[0][0] == str(key[0]), f"pg_backend_pid() {rows[0][0]} differs from BackendKeyData's {key[0]}")
check("rolegate:" in rows[0][1], f"the server does not see the token tag in application_name: {rows[0][1]}")
passed.append("ParameterStatus echoes the client's application_name; BackendKeyData names the real backend")

# A notification's sender is the pid the client was given (psycopg and JDBC skip their own by it).
wire.query(s, "LISTEN core_channel")
# A session's own notifications arrive with the answer to its NOTIFY, before ReadyForQuery.
s.sendall(wire.message(b"Q", b"NOTIFY core_channel, 'hello'\0"))
sender = None
while True:
    kind, body = wire.read_message(s)
    if kind == b"A":
        sender = struct.unpack("!i", body[:4])[0]
    if kind == b"Z":
        break
check(sender == key[0], f"the notification names process {sender}, the client was given {key[0]}")
passed.append("a NotificationResponse names the process the client was given")

# pg_terminate_backend of its own reported process: the client sees the server's FATAL and the close.
other, other_key = wire.login(token)
rows, error = wire.query(s, f"SELECT pg_terminate_backend({other_key[0]})")
check(error is None and rows == [["t"]], f"pg_terminate_backend of the session's own process: {rows} {error}")
other.settimeout(5)
kind, body = wire.read_message(other)
check(kind == b"E" and wire.error_fields(body).get("C") == "57P01",
      f"the terminated session did not get the server's 57P01: {kind} {body}")
check(wire.read_message(other) == (None, None), "the terminated session stayed open")
passed.append("pg_terminate_backend reaches the session's server process and the client sees it end")

# --- FunctionCall is a statement ----------------------------------------------------------
rows, _ = wire.query(s, "SELECT 'pg_backend_pid'::regproc::oid")
pid_oid = int(rows[0][0])


def function_call(oid, arguments=()):
    body = struct.pack("!ih", oid, 0) + struct.pack("!h", len(arguments))
    for argument in arguments:
        body += struct.pack("!i", len(argument)) + argument
    return wire.message(b"F", body + struct.pack("!h", 0))


s.sendall(function_call(pid_oid))
kind, body = wire.read_message(s)
check(kind == b"V", f"FunctionCall answered {kind}")
check(body[4:].decode() == str(key[0]), f"FunctionCall pg_backend_pid gave {body[4:]!r}")
check(wire.read_message(s)[0] == b"Z", "no ReadyForQuery after the FunctionCall")
# Pipelined between queries: every answer in order, each statement its own.
s.sendall(wire.message(b"Q", b"SELECT 'before-call'\0") + function_call(pid_oid)
          + function_call(999_999_999) + wire.message(b"Q", b"SELECT 'after-call'\0"))
seen = []
for _ in range(4):
    while True:
        kind, body = wire.read_message(s)
        if kind in (b"D", b"V", b"E"):
            seen.append(kind)
        if kind == b"Z":
            break
check(seen == [b"D", b"V", b"E", b"D"], f"pipelined answers: {seen}")
passed.append("FunctionCall answered, alone and pipelined between queries")
s.sendall(wire.message(b"X", b""))
s.close()

# --- A client that pipelines and vanishes; the next session is clean -----------------------
def next_session_is_clean(token, what):
    """A new session's query gets its own answer and nothing left over from another client."""
    s, _ = wire.login(token)
    rows, error = wire.query(s, "SELECT 'fresh'")
    check(error is None and rows == [["fresh"]], f"{what}: the next session read {rows} {error}")
    s.sendall(wire.message(b"X", b""))
    s.close()


token = new_token()
s, _ = wire.login(token)
s.sendall(b"".join(wire.message(b"Q", b"SELECT pg_sleep(0.01), generate_series(1, 2000)\0") for _ in range(50)))
s.close()
for attempt in range(3):
    next_session_is_clean(token, "after a vanished pipelining client")
passed.append("a vanished pipelining client leaves nothing for the next sessions")

# The same, leaving after the first answer: the server still owes the rest, so the connection is
# not handed to the next session (which would read the previous client's answers).
for attempt in range(5):
    s, _ = wire.login(token)
    # The second and third answers come a second apart: a reset that took the second's
    # ReadyForQuery for its own would hand the connection on with the third still to come, to a
    # session that logs in meanwhile.
    s.sendall(wire.message(b"Q", b"SELECT 'first'\0") + wire.message(b"Q", b"SELECT pg_sleep(1), 'stale'\0")
              + wire.message(b"Q", b"SELECT pg_sleep(1), 'stale too'\0"))
    while wire.read_message(s)[0] != b"Z":
        pass
    s.close()
    time.sleep(1.3)
    next_session_is_clean(token, "after a client gone with answers owed")
passed.append("a client gone after the first of three pipelined answers leaves no answer to the next session")

# --- A message type PostgreSQL refuses once logged in ---------------------------------------
# A password message mid-session ends the session at the gateway with 08P01, as PostgreSQL would;
# it never reaches the server, whose backend (which would have died of it) serves on in the pool.
s, key = wire.login(token)
rows, error = wire.query(s, "SELECT pg_backend_pid()")
check(error is None, f"pg_backend_pid(): {error}")
backend = rows[0][0]
s.sendall(wire.message(b"p", b"not a password now\0"))
wire.expect_error(s, "08P01", "a password message mid-session is refused with 08P01",
                  "invalid frontend message type 'p'")
time.sleep(0.5)
s, _ = wire.login(token)
rows, error = wire.query(s, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}")
check(error is None and rows == [["1"]],
      f"the server connection died of a client's protocol violation (backend {backend}: {rows} {error})")
s.sendall(wire.message(b"X", b""))
s.close()
passed.append("a client's protocol violation does not cost the pooled server connection")


# --- One large parameter: through the gateway and direct -----------------------------------
def large_parameter(sock, size):
    sql = b"SELECT length($1::bytea)"
    payload = os.urandom(1024) * (size // 1024)
    bind = b"\0\0" + struct.pack("!hh", 1, 1) + struct.pack("!h", 1) + struct.pack("!i", len(payload)) + payload
    bind += struct.pack("!hh", 1, 0)
    started = time.monotonic()
    sock.sendall(wire.message(b"P", b"\0" + sql + b"\0" + struct.pack("!h", 0)) + wire.message(b"B", bind)
                 + wire.message(b"E", b"\0" + struct.pack("!i", 0)) + wire.message(b"S", b""))
    result = None
    while True:
        kind, body = wire.read_message(sock)
        check(kind is not None, f"connection closed during a {size} byte parameter")
        if kind == b"E":
            fail(f"a {size} byte parameter failed: {wire.error_fields(body)}")
        if kind == b"D":
            result = int(body[6:].decode())
        if kind == b"Z":
            break
    check(result == len(payload), f"a {len(payload)} byte parameter came out as {result}")
    return time.monotonic() - started


direct = wire.Endpoint(host, direct_port, os.environ["DIRECT_USER"], os.environ["DIRECT_PASSWORD"], "app")
token = new_token()
for size in (50_000_000,):
    via, _ = wire.login(token)
    straight = wire.login_to(direct)
    gateway_seconds = large_parameter(via, size)
    direct_seconds = large_parameter(straight, size)
    print(f"large parameter {size // 1_000_000} MB: gateway {gateway_seconds:.2f} s, direct {direct_seconds:.2f} s, "
          f"ratio {gateway_seconds / direct_seconds:.2f}")
    via.close()
    straight.close()
passed.append("a 50 MB parameter crosses the gateway whole")

# Large messages the other way and as query text pass through as they arrive, whole.
s, _ = wire.login(token)
rows, error = wire.query(s, "SELECT length(repeat('x', 30000000)), repeat('y', 30000000)")
check(error is None and rows[0][0] == "30000000" and rows[0][1] == "y" * 30_000_000,
      f"a 30 MB value did not come back whole: {error}")
literal = "z" * 2_500_000
rows, error = wire.query(s, f"SELECT length('{literal}'), 'big-query-marker'")
check(error is None and rows == [["2500000", "big-query-marker"]], f"a 2.5 MB query: {rows[:1]} {error}")
rows, error = wire.query(s, "SELECT 'after the large messages'")
check(rows == [["after the large messages"]], f"the session after the large messages: {rows} {error}")
s.close()
passed.append("a 30 MB value and a 2.5 MB query pass through whole, and the session goes on")

print("gateway core: all " + str(len(passed)) + " checks passed: " + "; ".join(passed))
