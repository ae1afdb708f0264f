"""Sessions through a gateway whose audit writer stalls for a moment.

Opens SESSIONS connections through the gateway first, then holds SQLite's write lock on the
gateway's store (so its audit writer cannot write), logs in once more, and has every session
run STATEMENTS statements, one at a time. Once the gateway's audit queue is full (`rolegate_audit_queue_depth`
in /metrics reaches CAPACITY) it sends one statement to the HTTP API, waits a little so that
statements are held back, and lets go. Held-back statements wait up to 2 s for room, so every
statement must succeed.

Prints `ran N of M`, `query while full: STATUS CODE (answered in S s)`, `released at queue
depth D` and any errors; exits 0 when the queue filled, every statement ran and the HTTP
answer took under a second (a verification must not wait for the store's write lock).

Usage: audit_stall.py HOST PORT SERVICE SESSIONS STATEMENTS STORE_PATH HTTP_BASE CAPACITY
(token in PGPASSWORD)
"""
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg

host, port, service = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sessions, statements = int(sys.argv[4]), int(sys.argv[5])
store_path, http_base, capacity = sys.argv[6], sys.argv[7], int(sys.argv[8])
token = os.environ["PGPASSWORD"]
SQL = "SELECT 'held back, then run'"

connections = [
    psycopg.connect(host=host, port=port, user=service, dbname="app", password=token, sslmode="disable",
                    connect_timeout=20, autocommit=True)
    for _ in range(sessions)
]
lock = threading.Lock()
ran = 0
errors = []


def session(conn):
    global ran
    try:
        for _ in range(statements):
            if conn.execute(SQL).fetchone() != ("held back, then run",):
                raise RuntimeError("wrong result")
            with lock:
                ran += 1
    except Exception as error:
        with lock:
            errors.append(f"{type(error).__name__}: {error}")


def depth():
    text = urllib.request.urlopen(http_base + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("rolegate_audit_queue_depth "):
            return int(float(line.split()[1]))
    return 0


def query_while_full():
    request = urllib.request.Request(
        http_base + "/v1/query", data=json.dumps({"sql": "SELECT 'while full'"}).encode(), method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return f"{status} {json.loads(body).get('code', '-')}"


db = sqlite3.connect(store_path, isolation_level=None, timeout=10)
db.execute("BEGIN IMMEDIATE")
# A login while the store is locked: it must work (logins only read the store), and its use of
# the token is then written in the background, where that write waits for the lock. Reads of
# the token store (the HTTP query's token below) must not queue behind it.
psycopg.connect(host=host, port=port, user=service, dbname="app", password=token, sslmode="disable",
                connect_timeout=5).close()
time.sleep(0.3)
threads = [threading.Thread(target=session, args=(conn,)) for conn in connections]
for thread in threads:
    thread.start()
deadline = time.monotonic() + 15
reached = depth()
while reached < capacity and time.monotonic() < deadline:
    time.sleep(0.02)
    reached = depth()
asked = time.monotonic()
answer = query_while_full() if reached >= capacity else "-"
answered_in = time.monotonic() - asked
time.sleep(0.3)
db.execute("COMMIT")
for thread in threads:
    thread.join()
print(f"ran {ran} of {sessions * statements}")
print(f"query while full: {answer} (answered in {answered_in:.2f} s)")
print(f"released at queue depth {reached}")
for error in errors:
    print(f"error: {error}")
sys.exit(0 if reached >= capacity and ran == sessions * statements and not errors and answered_in < 1 else 1)
