"""Stalls a gateway's audit writer for a moment: holds SQLite's write lock on the gateway's
store until the gateway's audit queue is full (its `rolegate_audit_queue_depth` in /metrics
reaches CAPACITY), a little longer so that a statement is held back, then lets go. Prints
`locked` once it holds the lock and `released at queue depth N` at the end; exits 1 if the
queue never filled within 15 s.

Usage: audit_stall.py STORE_PATH METRICS_URL CAPACITY
"""
import sqlite3
import sys
import time
import urllib.request

path, metrics_url, capacity = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None, timeout=10)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)


def depth():
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("rolegate_audit_queue_depth "):
            return int(float(line.split()[1]))
    return 0


deadline = time.monotonic() + 15
reached = depth()
while reached < capacity and time.monotonic() < deadline:
    time.sleep(0.02)
    reached = depth()
time.sleep(0.3)
db.execute("COMMIT")
print(f"released at queue depth {reached}", flush=True)
sys.exit(0 if reached >= capacity else 1)
