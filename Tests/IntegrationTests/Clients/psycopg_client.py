"""psycopg 3 through the Rolegate gateway: COPY in and out, a server-side cursor,
conn.cancel() of a long statement, pipeline mode, 10,000 parameters and 50 MB values. Exits non-zero on any failure.

Usage: psycopg_client.py HOST PORT SERVICE DATABASE   (token in PGPASSWORD)
"""
import os
import sys
import threading
import time

import psycopg

host, port, service, database = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
conninfo = dict(host=host, port=port, user=service, dbname=database, password=os.environ["PGPASSWORD"], sslmode="disable")


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}")
        sys.exit(1)


with psycopg.connect(**conninfo, autocommit=True) as conn:
    # COPY in, then out.
    with conn.cursor() as cur:
        with cur.copy("COPY public.notes (id, body) FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i, f"row {i}"))
        cur.execute("SELECT count(*), sum(id) FROM public.notes")
        check(cur.fetchone() == (1000, 499500), "COPY FROM STDIN stored 1000 rows")
        out = []
        with cur.copy("COPY (SELECT id FROM public.notes ORDER BY id) TO STDOUT") as copy:
            for row in copy.rows():
                out.append(int(row[0]))
        check(out == list(range(1000)), "COPY TO STDOUT returned every row in order")

    # A server-side (named) cursor, fetched in batches inside a transaction.
    with conn.transaction():
        with conn.cursor(name="big") as cur:
            cur.itersize = 100
            cur.execute("SELECT id FROM public.notes ORDER BY id")
            total = sum(1 for _ in cur)
            check(total == 1000, f"server-side cursor returned {total} rows")

    # Pipeline mode: several statements sent before any result is read.
    with conn.pipeline():
        cursors = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
    check([c.fetchone()[0] for c in cursors] == [i * 2 for i in range(50)], "pipelined results in order")

    # 10,000 bound parameters in one statement: one large Bind message.
    placeholders = ",".join(["%s"] * 10000)
    row = conn.execute(f"SELECT count(*), sum(x) FROM unnest(ARRAY[{placeholders}]::int[]) AS x", list(range(10000))).fetchone()
    check(row == (10000, 49995000), f"10,000 parameters: {row}")

    # A 50 MB value each way in single messages.
    big = "x" * 50_000_000
    check(conn.execute("SELECT length(%s::text), %s::text", (big, "y" * 1000)).fetchone() == (50_000_000, "y" * 1000), "50 MB parameter")
    check(len(conn.execute("SELECT repeat('z', 50000000)").fetchone()[0]) == 50_000_000, "50 MB column")

    # conn.cancel() of pg_sleep(30) from another thread returns quickly.
    timer = threading.Timer(0.5, conn.cancel)
    started = time.monotonic()
    timer.start()
    try:
        conn.execute("SELECT pg_sleep(30)")
        check(False, "pg_sleep(30) was not cancelled")
    except psycopg.errors.QueryCanceled:
        pass
    elapsed = time.monotonic() - started
    check(elapsed < 1.5, f"cancel took {elapsed:.2f}s (0.5s of it is the timer)")
    # The session is still usable after the cancel.
    check(conn.execute("SELECT 1").fetchone() == (1,), "session usable after cancel")

# A wrong token: SQLSTATE 28P01.
try:
    psycopg.connect(**{**conninfo, "password": "rgt_wrong"})
    check(False, "a wrong token connected")
except psycopg.OperationalError as error:
    check("password authentication failed" in str(error), f"wrong token message: {error}")

print("psycopg: all checks passed")
