#!/usr/bin/env python3
"""The numbers behind bench/CAPACITY.md: what a PostgreSQL state store absorbs from gateway
instances under load. Starts a throwaway PostgreSQL holding both the benchmark database and
the store, runs 1 and then 2 `rolegate serve` instances on that store with statement audit
on, drives `pgbench -S -M prepared` through them, and measures per instance and in total:
statements per second (= audit events per second), store transactions per second (group
commits), events per commit, bytes per stored event, the change feed poll rate, and the
store's write volume.

    ROLEGATE=.build/release/rolegate bench/capacity.py [--seconds 20] [--output bench/CAPACITY.md]

It rewrites only the block between the measured-numbers markers in the output file.
"""
import argparse, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, Bench, free_port, pg_bin, sh  # noqa: E402

BEGIN = "<!-- measured by bench/capacity.py: begin -->"
END = "<!-- measured by bench/capacity.py: end -->"


def store_stats(bench):
    row = bench.psql(
        "SELECT xact_commit, tup_inserted, tup_fetched, "
        "(SELECT count(*) FROM rolegate_audit) + (SELECT COALESCE(SUM(event_count), 0) FROM rolegate_audit_blocks), "
        "pg_total_relation_size('rolegate_audit') + pg_total_relation_size('rolegate_audit_blocks') "
        "+ pg_total_relation_size('rolegate_audit_keys') "
        "FROM pg_stat_database WHERE datname = current_database()", db="rolegate_state")
    commits, inserted, fetched, events, size = (int(x) for x in row.split("|"))
    return {"commits": commits, "inserted": inserted, "fetched": fetched, "events": events, "bytes": size}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--output", default=f"{ROOT}/bench/CAPACITY.md")
    args = parser.parse_args()
    bench = Bench(quick=False)
    rows = []
    try:
        bench.start_postgres()
        bench.psql("CREATE DATABASE rolegate_state")
        rolegate = os.environ.get("ROLEGATE") or f"{ROOT}/.build/release/rolegate"
        store = f"postgres://postgres:benchsuper@127.0.0.1:{bench.pg_port}/rolegate_state?sslmode=disable"
        url = f"postgres://bench_admin:benchadmin@127.0.0.1:{bench.pg_port}/bench?sslmode=disable"
        with open(f"{bench.dir}/rolegate.yaml", "w") as f:
            f.write(f"""version: 1
store: "{store}"
databases:
  bench: {{url: "{url}"}}
roles:
  bench_ro:
    grants:
      - {{on: SCHEMA public, privileges: [USAGE]}}
      - {{on: ALL TABLES IN SCHEMA public, privileges: [SELECT]}}
services:
  bench: {{role: bench_ro, token_ttl: 24h}}
""")
        env = dict(os.environ, ROLEGATE_CONFIG=f"{bench.dir}/rolegate.yaml")
        sh([rolegate, "apply", "--yes"], env=env)
        token = sh([rolegate, "token", "issue", "bench"], env=env).stdout.strip()
        ports = []
        for count in (1, 2):
            while len(ports) < count:
                port = free_port()
                name = f"gw-{len(ports) + 1}"
                bench.launch([rolegate, "serve", "--listen", f"127.0.0.1:{port}", "--instance-id", name,
                              "--pool-size", "100"], f"{name}.log", env)
                bench.wait_for(f"{bench.dir}/{name}.log", "listening on")
                ports.append(port)
            time.sleep(2)
            before = store_stats(bench)
            started = time.time()
            # 16 clients in all, split over the instances, all at once.
            runs = [bench.launch([pg_bin("pgbench"), "-n", "-S", "-M", "prepared", "-c", str(16 // count), "-j", "1",
                                  "-T", str(args.seconds), "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "bench"],
                                 f"pgbench-{count}-{port}.log", dict(os.environ, PGPASSWORD=token)) for port in ports]
            for run in runs:
                run.wait()
            time.sleep(1)  # the last group commits land
            elapsed = time.time() - started - 1
            after = store_stats(bench)
            tps = 0.0
            for port in ports:
                text = open(f"{bench.dir}/pgbench-{count}-{port}.log").read()
                found = [line for line in text.splitlines() if line.startswith("tps = ")]
                tps += float(found[0].split()[2]) if found else 0.0
            events = after["events"] - before["events"]
            commits = after["commits"] - before["commits"]
            grown = after["bytes"] - before["bytes"]
            rows.append({
                "instances": count, "tps": tps, "events_s": events / elapsed, "commits_s": commits / elapsed,
                "per_commit": events / max(1, commits), "bytes_event": grown / max(1, events),
                "mb_hour": grown / elapsed * 3600 / 1e6, "fetched_s": (after["fetched"] - before["fetched"]) / elapsed,
            })
            r = rows[-1]
            print(f"capacity: {count} instance(s): {tps:.0f} statements/s, {r['events_s']:.0f} audit events/s, "
                  f"{r['commits_s']:.0f} store commits/s ({r['per_commit']:.0f} events each), "
                  f"{r['bytes_event']:.0f} bytes/event, {r['mb_hour']:.0f} MB/hour", flush=True)
    finally:
        bench.stop()

    version = sh([pg_bin("postgres"), "--version"]).stdout.strip()
    table = [BEGIN, "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.uname().nodename} "
             f"({os.cpu_count()} cores; {version}); store, benchmark database, gateways and pgbench share the machine; "
             f"`pgbench -S -M prepared`, 16 clients split over the instances, {args.seconds} s, statement audit on.", "",
             "| instances | statements/s (= audit events/s) | store transactions/s (audit commits + feed polls + heartbeats) | audit events per store transaction | bytes per event (table + indexes) | store growth |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        table.append(f"| {r['instances']} | {r['events_s']:.0f} | {r['commits_s']:.0f} | {r['per_commit']:.0f} | "
                     f"{r['bytes_event']:.0f} | {r['mb_hour']:.0f} MB/hour |")
    table += ["", END]
    text = open(args.output).read() if os.path.exists(args.output) else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + "\n".join(table) + text[text.index(END) + len(END):]
    else:
        text += "\n" + "\n".join(table) + "\n"
    with open(args.output, "w") as f:
        f.write(text)
    print(f"capacity: wrote {args.output}")


if __name__ == "__main__":
    main()
