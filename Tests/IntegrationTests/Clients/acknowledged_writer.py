"""Writes rows through the gateway (a new connection per row, as a load balancer spreads
them) for a while and prints the ids whose INSERT was acknowledged. Connection errors are
expected while an instance stops; a row counts only when its commit was acknowledged.

Usage: acknowledged_writer.py HOST PORT SECONDS FIRST_ID   (the notes token in PGPASSWORD)
"""
import os
import sys
import time

import psycopg

host, port, seconds, first = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
acknowledged, errors = [], 0
stop_at = time.monotonic() + seconds
next_id = first
while time.monotonic() < stop_at:
    try:
        with psycopg.connect(host=host, port=port, user="notes", dbname="app", password=os.environ["PGPASSWORD"],
                             sslmode="disable", connect_timeout=10, autocommit=True) as conn:
            conn.execute("INSERT INTO public.notes (id, body) VALUES (%s, 'acknowledged')", (next_id,))
            acknowledged.append(next_id)
    except psycopg.Error:
        errors += 1
    next_id += 1
print(f"acknowledged {len(acknowledged)} errors {errors}")
print("ids " + ",".join(map(str, acknowledged)))
