"""Clients under load while PostgreSQL goes away and comes back. Each client loops: connect
through the gateway, run a few statements, disconnect. While the server is down every
failure must be a clean connection error (no hang past the timeout, no wrong result); once
it is back (the file READY_FILE appears), every client must succeed again within 15 s and
then run without a single error: a leaked pool slot would show as clients stuck waiting.
Exits non-zero on any failure.

Usage: outage_client.py HOST PORT SERVICE CLIENTS SECONDS READY_FILE   (token in PGPASSWORD)
"""
import os
import sys
import threading
import time

import psycopg

host, port, service, clients, seconds, ready_file = (
    sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
lock = threading.Lock()
stats = {"ok": 0, "clean_errors": 0, "after_recovery_errors": []}
recovered_at = {}
failures = []
stop_at = time.monotonic() + seconds


def client(number):
    while time.monotonic() < stop_at:
        back = os.path.exists(ready_file)
        try:
            with psycopg.connect(host=host, port=port, user=service, dbname="app", password=os.environ["PGPASSWORD"],
                                 sslmode="disable", connect_timeout=20, autocommit=True) as conn:
                for i in range(5):
                    row = conn.execute("SELECT %s::int + 1", (i,)).fetchone()
                    if row != (i + 1,):
                        failures.append(f"client {number}: wrong result {row}")
            with lock:
                stats["ok"] += 1
                if back:
                    recovered_at.setdefault(number, time.monotonic())
        except psycopg.OperationalError as error:
            with lock:
                if number in recovered_at and time.monotonic() - recovered_at[number] > 2:
                    stats["after_recovery_errors"].append(f"client {number}: {error}")
                else:
                    stats["clean_errors"] += 1
            time.sleep(0.1)
        except Exception as error:
            failures.append(f"client {number}: {type(error).__name__}: {error}")
            return


threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for thread in threads:
    thread.start()
ready_seen = None
while any(t.is_alive() for t in threads):
    if ready_seen is None and os.path.exists(ready_file):
        ready_seen = time.monotonic()
    time.sleep(0.05)
print(f"outage: {stats['ok']} sessions ok, {stats['clean_errors']} clean connection errors during the outage, "
      f"{len(recovered_at)}/{clients} clients recovered")
if ready_seen is None:
    failures.append("the server never came back (READY_FILE missing)")
else:
    late = [n for n in range(clients) if recovered_at.get(n, float("inf")) - ready_seen > 15]
    if late:
        failures.append(f"clients {late} did not get through within 15 s after the server came back (a leaked pool slot?)")
failures += stats["after_recovery_errors"][:10]
if stats["clean_errors"] == 0:
    failures.append("no client noticed the outage")
for failure in failures:
    print(f"FAIL: {failure}")
sys.exit(1 if failures else 0)
