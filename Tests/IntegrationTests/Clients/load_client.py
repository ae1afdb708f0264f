"""Many concurrent wire clients across three services, each running a mixed read/write
workload through the gateway for a while. Counts every outcome: anything but the expected
results and the expected permission errors is a failure; a client must never see another
service's data; the gateway's memory must stay level. Exits non-zero on any failure.

Usage: load_client.py HOST PORT CLIENTS SECONDS GATEWAY_PID
       (tokens in TOKEN_REPORTS, TOKEN_INVOICING, TOKEN_NOTES)
"""
import asyncio
import os
import resource
import sys
import time

import psycopg

host, port, clients, seconds, gateway_pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
services = ["reports", "invoicing", "notes"]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
stats = {"connected": 0, "transactions": 0, "denied_as_expected": 0}
failures = []


def rss_kib():
    with open(f"/proc/{gateway_pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def client(number, start_at, stop_at):
    service = services[number % 3]
    await asyncio.sleep(max(0, start_at - time.monotonic()))
    try:
        conn = await psycopg.AsyncConnection.connect(
            host=host, port=port, user=service, dbname="app", password=os.environ[f"TOKEN_{service.upper()}"],
            sslmode="disable", autocommit=True, connect_timeout=60)
    except Exception as error:
        failures.append(f"client {number} ({service}) could not connect: {error}")
        return
    stats["connected"] += 1
    n = 0
    try:
        async with conn:
            while time.monotonic() < stop_at:
                n += 1
                async with conn.cursor() as cur:
                    if service == "reports":
                        await cur.execute("SELECT current_user, count(*) FROM analytics.events")
                        row = await cur.fetchone()
                        if row[0] != "events_reader" or row[1] != 2:
                            failures.append(f"reports saw {row}")
                        forbidden = "SELECT * FROM billing.invoices LIMIT 1"
                    elif service == "invoicing":
                        await cur.execute(
                            "INSERT INTO billing.invoices (customer_id, amount) VALUES (1, %s) RETURNING amount, current_user",
                            (number * 100000 + n,))
                        row = await cur.fetchone()
                        if row[0] != number * 100000 + n or row[1] != "invoice_writer":
                            failures.append(f"invoicing got back {row}")
                        forbidden = "SELECT * FROM public.notes LIMIT 1"
                    else:
                        key = number * 100000 + n
                        await cur.execute("INSERT INTO public.notes (id, body) VALUES (%s, %s)", (key, f"client {number}"))
                        await cur.execute("SELECT body, current_user FROM public.notes WHERE id = %s", (key,))
                        row = await cur.fetchone()
                        if row != (f"client {number}", "notes_rw"):
                            failures.append(f"notes read back {row}")
                        forbidden = "SELECT * FROM analytics.events LIMIT 1"
                    stats["transactions"] += 1
                    if n % 10 == 0:
                        # Another service's data: refused by PostgreSQL, every time.
                        try:
                            await cur.execute(forbidden)
                            failures.append(f"{service} read another service's table: {forbidden}")
                        except psycopg.errors.InsufficientPrivilege:
                            stats["denied_as_expected"] += 1
    except Exception as error:
        failures.append(f"client {number} ({service}): {type(error).__name__}: {error}")


async def main():
    now = time.monotonic()
    # Connections arrive over the first seconds (as a fleet starting up would).
    ramp = min(10.0, clients / 100)
    stop_at = now + ramp + seconds
    samples = []

    async def sample():
        while time.monotonic() < stop_at:
            await asyncio.sleep(1)
            samples.append(rss_kib())

    await asyncio.gather(sample(), *(client(i, now + ramp * i / clients, stop_at) for i in range(clients)))
    return samples


samples = asyncio.run(main())
print(f"load: {stats['connected']}/{clients} clients connected, {stats['transactions']} transactions, "
      f"{stats['denied_as_expected']} cross-service reads refused; gateway RSS samples (KiB): {samples}")
steady = samples[len(samples) // 2:] if len(samples) >= 4 else samples
if steady and max(steady) - min(steady) > 64 * 1024:
    failures.append(f"gateway memory not level under steady load: {min(steady)} -> {max(steady)} KiB")
if stats["connected"] != clients:
    failures.append(f"only {stats['connected']} of {clients} clients connected")
for failure in failures[:20]:
    print(f"FAIL: {failure}")
if failures:
    print(f"{len(failures)} failures")
    sys.exit(1)
print("load: all checks passed")
