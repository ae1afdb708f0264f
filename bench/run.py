#!/usr/bin/env python3
"""Rolegate benchmark harness: direct PostgreSQL vs pgbouncer vs the Rolegate gateway, side by
side on one machine, in one run, interleaved so drift hits all three alike.

    bench/run.sh            # the full run (about 30 minutes on 2 cores); writes bench/RESULTS.md
    bench/run.sh --quick    # a few seconds per case: proves the harness works (CI smoke test)
    bench/run.sh --only audit,http --seconds 5 --rounds 1   # some groups, for working on one number

Only ratios measured in the same run mean anything; nothing here asserts a number.
"""
import argparse
import glob, base64, hashlib, hmac, json, os, platform, re, shlex, shutil, signal, socket, statistics, struct, subprocess
import sys, tempfile, time
import urllib.request
from datetime import datetime, timezone

KEEP_MARKER = "<!-- kept across runs: the changes and what they bought -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(args, check=True, env=None, capture=True, input=None, timeout=None):
    r = subprocess.run(args, env=env, text=True, input=input, timeout=timeout,
                       stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def scram_secret(password, iterations=4096):
    """A SCRAM-SHA-256 secret as PostgreSQL stores it (RFC 5802, 7677), so one string can go
    both into pg_authid and into pgbouncer's auth_file."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(os.listdir("/usr/lib/postgresql"), reverse=True):
        path = f"/usr/lib/postgresql/{version}/bin/{name}"
        if os.path.exists(path):
            return path
    raise SystemExit(f"bench: {name} not found (apt-get install postgresql)")


def as_postgres(args):
    return ["runuser", "-u", "postgres", "--"] + args if os.geteuid() == 0 else args


class Bench:
    def __init__(self, quick):
        self.quick = quick
        self.dir = tempfile.mkdtemp(prefix="rolegate-bench-")
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.results = []  # (case, target, tps, p50_ms, p99_ms)
        self.rounds = {}  # (case, target) -> TPS of each round, in round order
        self.warmed = set()  # ports a case has run against
        self.notes = []
        self.others = []  # measurements that are not throughput: lines for the report

    # ---- setup -------------------------------------------------------------------------
    def start_postgres(self):
        self.pg_port = free_port()
        # The server's folder (data, log, socket) belongs to the user the server runs as.
        self.pg_root = f"{self.dir}/pg"
        data = f"{self.pg_root}/data"
        os.makedirs(self.pg_root)
        if os.geteuid() == 0:
            shutil.chown(self.pg_root, "postgres", "postgres")
        pwfile = f"{self.dir}/pw"
        with open(pwfile, "w") as f:
            f.write("benchsuper\n")
        os.chmod(pwfile, 0o644)
        sh(as_postgres([pg_bin("initdb"), "-D", data, "-U", "postgres", f"--pwfile={pwfile}", "--auth-local=trust",
                        "--auth-host=scram-sha-256", "-N", "-E", "UTF8", "--locale=C"]))
        self.make_certificate()
        for name in ("server.crt", "server.key"):
            shutil.copy(f"{self.dir}/{name}", f"{self.pg_root}/{name}")
            os.chmod(f"{self.pg_root}/{name}", 0o600)
            if os.geteuid() == 0:
                shutil.chown(f"{self.pg_root}/{name}", "postgres", "postgres")
        opts = (f"-p {self.pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.pg_root} "
                "-c max_connections=400 -c shared_buffers=128MB -c fsync=off -c synchronous_commit=off "
                f"-c ssl=on -c ssl_cert_file={self.pg_root}/server.crt -c ssl_key_file={self.pg_root}/server.key")
        sh(as_postgres([pg_bin("pg_ctl"), "-D", data, "-o", opts, "-l", f"{self.pg_root}/pg.log", "-w", "start"]))
        self.pg_data = data
        self.psql("CREATE ROLE bench_admin LOGIN CREATEROLE PASSWORD 'benchadmin'")
        self.psql("CREATE DATABASE bench OWNER bench_admin")
        # pgbouncer's user gets a SCRAM secret that PostgreSQL and pgbouncer's auth_file share (see
        # start_pgbouncer): the usual production setup, where pgbouncer checks a login without
        # computing PBKDF2 and logs in upstream with the client's proven key.
        self.pgb_secret = scram_secret("pgbpass")
        self.psql(f"CREATE ROLE pgb_user LOGIN PASSWORD '{self.pgb_secret}'")
        env = dict(os.environ, PGPASSWORD="benchadmin")
        scale = "1" if self.quick else "10"
        sh([pg_bin("pgbench"), "-i", "-q", "-s", scale, "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "bench_admin",
            "bench"], env=env)
        self.psql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO pgb_user", db="bench", user="bench_admin")

    def make_certificate(self):
        """A self-signed certificate for the TLS case (the same one for all three targets)."""
        if not shutil.which("openssl"):
            sh(["apt-get", "install", "-y", "-qq", "openssl"], capture=False)
        sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-keyout", f"{self.dir}/server.key", "-out", f"{self.dir}/server.crt"])
        os.chmod(f"{self.dir}/server.key", 0o644)

    def psql(self, sql, db="postgres", user="postgres"):
        return sh([pg_bin("psql"), "-X", "-q", "-A", "-t", "-h", self.pg_root, "-p", str(self.pg_port), "-U", user, "-d", db,
                   "-v", "ON_ERROR_STOP=1", "-c", sql]).stdout.strip()

    def start_rolegate(self):
        self.rolegate = os.environ.get("ROLEGATE") or f"{ROOT}/.build/release/rolegate"
        url = f"postgres://bench_admin:benchadmin@127.0.0.1:{self.pg_port}/bench?sslmode=disable"
        policy = f"""version: 1
databases:
  bench:
    url: {url}
roles:
  bench_ro:
    grants:
      - on: SCHEMA public
        privileges: [USAGE]
      - on: ALL TABLES IN SCHEMA public
        privileges: [SELECT]
  probe_ro:
    grants:
      - on: SCHEMA public
        privileges: [USAGE]
  bench_fast_ro:
    grants:
      - on: SCHEMA public
        privileges: [USAGE]
      - on: ALL TABLES IN SCHEMA public
        privileges: [SELECT]
services:
  bench: {{role: bench_ro, token_ttl: 24h}}
  bench-fast: {{role: bench_fast_ro, token_ttl: 24h, scram_iterations: 16}}
  probe: {{role: probe_ro, token_ttl: 24h}}
  ops: {{admin: true, token_ttl: 24h}}
"""
        with open(f"{self.dir}/rolegate.yaml", "w") as f:
            f.write(policy)
        with open(f"{self.dir}/rolegate-noaudit.yaml", "w") as f:
            f.write(policy + "audit:\n  enabled: false\n")
        self.env = dict(os.environ, ROLEGATE_CONFIG=f"{self.dir}/rolegate.yaml")
        sh([self.rolegate, "apply", "--yes"], env=self.env)
        self.token = sh([self.rolegate, "token", "issue", "bench"], env=self.env).stdout.strip()
        self.fast_token = sh([self.rolegate, "token", "issue", "bench-fast"], env=self.env).stdout.strip()
        self.gw_port, self.http_port, self.gw_noaudit_port = free_port(), free_port(), free_port()
        self.http_noaudit_port = free_port()
        # More `serve` options for both gateways, to compare settings (e.g. "--threads 1").
        extra = shlex.split(os.environ.get("ROLEGATE_SERVE_ARGS", ""))
        # Both gateways alike in everything but the audit (HTTP listener and TLS included).
        def serve(port, http_port):
            return [self.rolegate, "serve", "--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}",
                    "--pool-size", "100", "--max-client-connections", "20000", "--client-login-timeout", "120s",
                    "--tls-cert", f"{self.dir}/server.crt", "--tls-key", f"{self.dir}/server.key"] + extra
        self.gateway = self.launch(serve(self.gw_port, self.http_port), "gateway.log", self.env)
        noaudit_env = dict(self.env, ROLEGATE_CONFIG=f"{self.dir}/rolegate-noaudit.yaml")
        self.gateway_noaudit = self.launch(serve(self.gw_noaudit_port, self.http_noaudit_port), "gateway-noaudit.log",
                                           noaudit_env)
        self.wait_for(f"{self.dir}/gateway.log", "HTTP API on")
        self.wait_for(f"{self.dir}/gateway-noaudit.log", "HTTP API on")

    def start_pgbouncer(self):
        if not shutil.which("pgbouncer") and not os.path.exists("/usr/sbin/pgbouncer"):
            sh(["apt-get", "install", "-y", "-qq", "pgbouncer"], capture=False)
        self.pgb_port = free_port()
        # pgbouncer refuses to run as root: its folder belongs to the user it runs as.
        pgb = f"{self.dir}/pgb"
        os.makedirs(pgb)
        if os.geteuid() == 0:
            shutil.chown(pgb, "postgres", "postgres")
        conf = f"{pgb}/pgbouncer.ini"
        with open(f"{pgb}/userlist.txt", "w") as f:
            f.write(f'"pgb_user" "{self.pgb_secret}"\n')
        with open(conf, "w") as f:
            f.write(f"""[databases]
bench = host=127.0.0.1 port={self.pg_port} dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.pgb_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {pgb}/userlist.txt
pool_mode = session
default_pool_size = 100
max_client_conn = 1000
logfile = {pgb}/pgbouncer.log
pidfile = {pgb}/pgbouncer.pid
client_tls_sslmode = allow
client_tls_cert_file = {self.dir}/server.crt
client_tls_key_file = {self.dir}/server.key
server_tls_sslmode = disable
""")
        if os.geteuid() == 0:
            for name in ("pgbouncer.ini", "userlist.txt"):
                shutil.chown(f"{pgb}/{name}", "postgres", "postgres")
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.pgbouncer = self.launch(as_postgres([binary, conf]), "pgbouncer.out")
        self.wait_for(f"{pgb}/pgbouncer.log", "process up")

    def start_bare_relay(self):
        """The yardstick of the audit cases: bench/relay/bare_relay.swift, a single-threaded epoll
        byte relay with nothing else (no framing, auth or pool); clients log in to PostgreSQL through it."""
        relay = f"{ROOT}/bench/relay"
        binary = f"{self.dir}/bare-relay"
        sh(["swiftc", "-O", "-import-objc-header", f"{relay}/shim.h", f"{relay}/bare_relay.swift", "-o", binary])
        self.relay_port = free_port()
        self.launch([binary, str(self.relay_port), str(self.pg_port)], "bare-relay.out")
        self.wait_for(f"{self.dir}/bare-relay.out", "bare-relay: 127.0.0.1")

    def launch(self, args, log, env=None):
        out = open(f"{self.dir}/{log}", "w")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        return p

    def wait_for(self, path, text, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if os.path.exists(path) and text in open(path).read():
                return
            time.sleep(0.1)
        raise SystemExit(f"bench: {path} never said '{text}':\n" + (open(path).read() if os.path.exists(path) else ""))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if getattr(self, "pg_data", None):
            subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", self.pg_data, "-m", "immediate", "-w", "stop"]),
                           capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- measurements ------------------------------------------------------------------
    def targets(self):
        return {
            "direct": ("bench_admin", "benchadmin", self.pg_port),
            "pgbouncer": ("pgb_user", "pgbpass", self.pgb_port),
            "rolegate": ("bench", self.token, self.gw_port),
        }

    def pgbench(self, target, user, password, port, args, seconds, tls=False):
        # Every target offers TLS (for the TLS case); the other cases ask for plain TCP.
        env = dict(os.environ, PGPASSWORD=password, PGSSLMODE="require" if tls else "disable")
        prefix = f"{self.dir}/tx-{target}"
        for old in [f for f in os.listdir(self.dir) if f.startswith(f"tx-{target}")]:
            os.remove(f"{self.dir}/{old}")
        r = sh([pg_bin("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-T", str(seconds),
                "-l", "--log-prefix", prefix] + args + ["bench"], env=env, check=False)
        if r.returncode != 0 or "number of failed transactions: 0" not in r.stdout:
            self.notes.append(f"{target} {' '.join(args)}: pgbench reported a problem: {r.stderr.strip()[-300:]}")
        found = re.search(r"tps = ([0-9.]+) \(", r.stdout)
        tps = float(found.group(1)) if found else 0.0
        latencies = []
        for name in os.listdir(self.dir):
            if name.startswith(f"tx-{target}"):
                with open(f"{self.dir}/{name}") as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) >= 3:
                            latencies.append(int(parts[2]) / 1000.0)
                os.remove(f"{self.dir}/{name}")
        latencies.sort()
        p50 = latencies[len(latencies) // 2] if latencies else 0
        p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0
        return tps, p50, p99

    def compare(self, case, args, seconds, rounds, targets=None, tls=False):
        samples = {}
        order = list((targets or self.targets()).items())
        # A target's first case starts with a short unmeasured run (pools, caches and allocator
        # arenas of a gateway nothing has used yet), as the targets of the cases before it had.
        for target, (user, password, port) in order:
            if port not in self.warmed:
                self.warmed.add(port)
                self.pgbench(target, user, password, port, args, 2, tls)
        for index in range(rounds):
            # Each round starts with the next target, so no target always runs first (or right
            # after another one's load).
            for target, (user, password, port) in order[index % len(order):] + order[:index % len(order)]:
                samples.setdefault(target, []).append(self.pgbench(target, user, password, port, args, seconds, tls))
        for target, _ in order:
            values = samples[target]
            self.rounds[(case, target)] = [v[0] for v in values]
            tps = statistics.median(v[0] for v in values)
            p50 = statistics.median(v[1] for v in values)
            p99 = statistics.median(v[2] for v in values)
            self.results.append((case, target, tps, p50, p99))
            print(f"  {case:<28} {target:<18} {tps:>10.0f} tps   p50 {p50:6.3f} ms   p99 {p99:6.3f} ms", flush=True)

    def revocations(self, count):
        """Time from `token revoke` returning to the session's end, over `count` revocations."""
        times = []
        env = dict(self.env)
        for _ in range(count):
            token = sh([self.rolegate, "token", "issue", "probe"], env=env).stdout.strip()
            session = subprocess.Popen([pg_bin("psql"), "-X", "-h", "127.0.0.1", "-p", str(self.gw_port), "-U", "probe",
                                        "-d", "bench", "-c", "SELECT pg_sleep(30)"],
                                       env=dict(os.environ, PGPASSWORD=token), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            for _ in range(100):
                if self.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'probe_ro' AND state = 'active'") != "0":
                    break
                time.sleep(0.05)
            sh([self.rolegate, "token", "revoke", "--service", "probe"], env=env)
            revoked = time.monotonic()
            session.wait(timeout=30)
            times.append((time.monotonic() - revoked) * 1000)
        times.sort()
        p50, p99 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]
        self.others.append(f"Revocation to session end over {count} revocations: p50 {p50:.0f} ms, p99 {p99:.0f} ms.")
        print(f"  revoke → session end ({count}x): p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)

    def large_parameter(self, sizes, rounds):
        """One Bind with a single bytea parameter of each size (`SELECT length($1::bytea)`), through Rolegate
        and direct, back to back in each round: what reassembling and relaying one huge message costs."""
        sys.path.insert(0, f"{ROOT}/Tests/IntegrationTests/Clients")
        import wire  # the tests' raw protocol client (SCRAM login, framing)

        def one(endpoint, payload):
            sock = wire.login_to(endpoint)
            bind = (b"\0\0" + struct.pack("!hhhi", 1, 1, 1, len(payload)) + payload + struct.pack("!hh", 1, 0))
            started = time.monotonic()
            sock.sendall(wire.message(b"P", b"\0SELECT length($1::bytea)\0\0\0") + wire.message(b"B", bind)
                         + wire.message(b"E", b"\0\0\0\0\0") + wire.message(b"S", b""))
            length = None
            while True:
                kind, body = wire.read_message(sock)
                if kind is None or kind == b"E":
                    raise RuntimeError(f"large parameter failed at {endpoint.port}: {body!r}")
                if kind == b"D":
                    length = int(body[6:].decode())
                if kind == b"Z":
                    break
            elapsed = time.monotonic() - started
            sock.close()
            if length != len(payload):
                raise RuntimeError(f"a {len(payload)} byte parameter came back as {length}")
            return elapsed

        user, password, port = self.targets()["direct"]
        direct = wire.Endpoint("127.0.0.1", port, user, password, "bench")
        gateway = wire.Endpoint("127.0.0.1", self.gw_port, "bench", self.token, "bench")
        for size in sizes:
            payload = os.urandom(1 << 20) * (size >> 20)
            ratios, gateway_times, direct_times = [], [], []
            for index in range(rounds):
                pair = [("rolegate", gateway), ("direct", direct)]
                times = dict((name, one(endpoint, payload)) for name, endpoint in (pair if index % 2 == 0 else pair[::-1]))
                ratios.append(times["rolegate"] / times["direct"])
                gateway_times.append(times["rolegate"])
                direct_times.append(times["direct"])
            line = (f"One {size >> 20} MB bytea parameter: Rolegate {statistics.median(gateway_times):.2f} s, direct "
                    f"{statistics.median(direct_times):.2f} s, ratio {statistics.median(ratios):.2f}× "
                    f"({min(ratios):.2f}–{max(ratios):.2f}) over {rounds} round(s).")
            self.others.append(line)
            print("  " + line, flush=True)

    def micro_benchmark(self, product, arguments, what):
        """Runs a micro-benchmark target built next to the gateway binary; its last line of output is one
        JSON object. None (and a note) when it was not built."""
        binary = os.path.join(os.path.dirname(self.rolegate), product)
        if not os.path.exists(binary):
            self.notes.append(f"{binary} is missing (swift build --product {product}): {what} skipped")
            return None
        return json.loads(sh([binary] + [str(a) for a in arguments]).stdout.strip().splitlines()[-1])

    def token_verification(self, iterations):
        """Token verifications per second on one core (VerifyBench)."""
        r = self.micro_benchmark("VerifyBench", [iterations, 10], "token verification")
        if r is None:
            return
        same = r["unknown_id_per_s"] / r["wrong_secret_per_s"]
        self.others.append(
            f"Token verification on one core (medians of {r['rounds']:.0f} interleaved rounds): "
            f"{r['cached_valid_per_s']:,.0f}/s for a cached valid token "
            f"(rounds {r['cached_valid_lowest_round_per_s']:,.0f}–{r['cached_valid_highest_round_per_s']:,.0f}), "
            f"{r['unknown_id_per_s']:,.0f}/s for an unknown id, {r['wrong_secret_per_s']:,.0f}/s for a wrong secret "
            f"(unknown id / wrong secret = {same:.2f}×: one answer, the same work), "
            f"{r['uncached_lookup_per_s']:,.0f}/s uncached (a store read each).")
        print(f"  token verification: {r}", flush=True)

    def audit_cost(self, statements):
        """Statement audit's cost per statement apart from sockets (AuditBench)."""
        r = self.micro_benchmark("AuditBench", [statements, 5], "audit cost")
        if r is None:
            return
        self.others.append(
            f"Statement audit per statement, apart from sockets (AuditBench, medians of {r['rounds']:.0f} rounds, "
            f"`-M prepared` messages): on the event loop {r['event_loop_ns'] / 1000:.1f} µs of CPU "
            f"(the statement tracker alone {r['tracking_ns'] / 1000:.1f}; the rest builds and queues the event), "
            f"on the audit writer {r['writer_ns'] / 1000:.1f} µs "
            f"(rounds {r['writer_lowest_round_ns'] / 1000:.1f}–{r['writer_highest_round_ns'] / 1000:.1f}; "
            f"linking, hashing and storing in SQLite group commits of 1,500 events).")
        print(f"  audit cost: {r}", flush=True)

    def audit_store_snapshot(self):
        """The events in the store's audit chains (as `audit verify` counts them) and the store's bytes on disk."""
        out = sh([self.rolegate, "audit", "verify"], env=self.env).stdout
        events = sum(int(n) for n in re.findall(r": (\d+) events", out))
        size = sum(os.path.getsize(p) for p in glob.glob(f"{self.dir}/.rolegate/state.db*"))
        return events, size

    def audit_disk(self, before):
        """What the audit group's runs left in the store: bytes per event, and how fast the CLI walks
        and filters it (process start included)."""
        events0, size0 = before
        started = time.monotonic()
        events1, size1 = self.audit_store_snapshot()
        verify_seconds = time.monotonic() - started
        if events1 <= events0:
            self.notes.append("the audit group wrote no events")
            return
        last = json.loads(sh([self.rolegate, "audit", "--kind", "statement", "--limit", "1", "--format", "json"],
                             env=self.env).stdout.strip().splitlines()[-1])
        started = time.monotonic()
        sh([self.rolegate, "audit", "--token", last["token_id"], "--limit", "100"], env=self.env)
        token_seconds = time.monotonic() - started
        self.others.append(
            f"Audit storage after the audit cases: {(size1 - size0) / (events1 - events0):.0f} bytes per event on disk "
            f"({events1 - events0:,} events written by those runs, {(size1 - size0) / 1e6:.0f} MB); "
            f"`rolegate audit verify` walked all {events1:,} events in {verify_seconds:.1f} s "
            f"({events1 / verify_seconds / 1e6:.2f} M events/s, process start included); "
            f"`rolegate audit --token <the bench token> --limit 100` answered in {token_seconds * 1000:.0f} ms.")
        print(f"  audit disk: {self.others[-1]}", flush=True)

    def audit_store(self, events):
        """The audit log's storage on its own (AuditBench store): bytes per event, the verification walk,
        a token's newest events."""
        r = self.micro_benchmark("AuditBench", ["store", events], "audit store")
        if r is None:
            return
        self.others.append(
            f"Audit storage on its own (AuditBench store, {r['events']:,.0f} `-M prepared` statement events of "
            f"16 sessions at a time, group commits of 4,000, SQLite): {r['bytes_per_event']:.1f} bytes per event on "
            f"disk; the writer {r['writer_ns_per_event'] / 1000:.2f} µs of CPU per event; the verification walk "
            f"{r['verify_events_per_second'] / 1e6:.2f} M events/s ({r['verify_seconds']:.1f} s); a token's newest "
            f"100 events in {r['token_query_seconds'] * 1000:.0f} ms, a token with none in "
            f"{r['absent_token_query_seconds'] * 1000:.1f} ms.")
        print(f"  audit store: {r}", flush=True)

    def idle_connections(self, count):
        pid = self.gateway.pid
        def rss():
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        before = rss()
        sockets = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", self.gw_port))
            sockets.append(s)
        time.sleep(2)
        after = rss()
        for s in sockets:
            s.close()
        per = (after - before) * 1024 / count
        self.others.append(
            f"{count} idle client connections: gateway RSS {before} KiB → {after} KiB, {per / 1024:.1f} KiB each.")
        print(f"  {count} idle client connections: {before} KiB → {after} KiB, {per / 1024:.1f} KiB each", flush=True)

    def http(self, seconds, rounds):
        """/v1/query for a primary-key lookup (wrk, 16 connections) vs the same lookup on the wire
        (pgbench, 16 clients), the two back to back in each round."""
        if not shutil.which("wrk"):
            self.notes.append("wrk is not installed (apt-get install wrk): the HTTP case was skipped")
            return
        script = f"{self.dir}/query.lua"
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\n'
                    'wrk.body = \'{"sql": "SELECT abalance FROM pgbench_accounts WHERE aid = $1", "params": [42]}\'\n'
                    f'wrk.headers["Authorization"] = "Bearer {self.token}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        lookup = f"{self.dir}/lookup.sql"
        with open(lookup, "w") as f:
            f.write("SELECT abalance FROM pgbench_accounts WHERE aid = 42;\n")
        user, password, port = self.targets()["rolegate"]
        wire_args = ["-f", lookup, "-c", "16", "-j", "2", "-M", "extended"]

        def ms(output, label):
            m = re.search(rf"\s{label}%\s+([0-9.]+)(us|ms|s)", output)
            if not m:
                return 0
            value, unit = float(m.group(1)), m.group(2)
            return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

        http, wire = [], []
        for _ in range(rounds):
            r = sh(["wrk", "-t", "2", "-c", "16", "-d", f"{seconds}s", "--latency", "-s", script,
                    f"http://127.0.0.1:{self.http_port}/v1/query"])
            rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", r.stdout).group(1))
            http.append((rps, ms(r.stdout, "50"), ms(r.stdout, "99")))
            wire.append(self.pgbench("rolegate", user, password, port, wire_args, seconds))
        for case, target, values in [("/v1/query PK lookup, 16", "rolegate-http", http),
                                     ("wire PK lookup, 16", "rolegate", wire)]:
            tps, p50, p99 = (statistics.median(v[i] for v in values) for i in range(3))
            self.results.append((case, target, tps, p50, p99))
            self.rounds[(case, target)] = [v[0] for v in values]
            print(f"  {case:<28} {target:<18} {tps:>10.0f} tps   p50 {p50:6.3f} ms   p99 {p99:6.3f} ms", flush=True)

    # ---- report ------------------------------------------------------------------------
    @staticmethod
    def first_line(args):
        if not shutil.which(args[0]):
            return args[0] + " (not found)"
        r = sh(args, check=False)
        return ((r.stdout or "") + (r.stderr or "")).strip().splitlines()[0]

    def ratio(self, case, a, b):
        """The median over rounds of a's TPS over b's in the same round (a round runs every target
        back to back, so drift between rounds cancels), with the rounds' range when there are several."""
        ra, rb = self.rounds.get((case, a)), self.rounds.get((case, b))
        if not ra or not rb or len(ra) != len(rb) or not all(ra) or not all(rb):
            return "–"
        per_round = [x / y for x, y in zip(ra, rb)]
        text = f"{statistics.median(per_round):.2f}×"
        return text if len(per_round) == 1 else f"{text} ({min(per_round):.2f}–{max(per_round):.2f})"

    def report(self, seconds, rounds):
        lines = [
            "# Benchmark results", "",
            f"Run by `bench/run.sh{' --quick' if self.quick else ''}` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
            f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"{sh([pg_bin('postgres'), '--version']).stdout.strip()}; "
            f"{Bench.first_line(['pgbouncer', '--version'])}; "
            f"{Bench.first_line(['swift', '--version'])}",
            f"Each case: pgbench for {seconds} s, {rounds} round(s), targets interleaved (each round starting with the "
            "next one), median of rounds; PostgreSQL, pgbench and the proxy share the machine's cores. "
            "pgbouncer: session pooling, SCRAM client auth against a SCRAM secret in its auth_file (the one "
            "PostgreSQL has), so a login costs it no PBKDF2; Rolegate: its default 4,096 SCRAM rounds unless a case "
            "says otherwise.", "",
            "| case | target | TPS | p50 ms | p99 ms |", "| --- | --- | ---: | ---: | ---: |",
        ]
        for case, target, tps, p50, p99 in self.results:
            lines.append(f"| {case} | {target} | {tps:.0f} | {p50:.3f} | {p99:.3f} |")
        lines += ["", "## Ratios (same run)", "",
                  "Each ratio is the median of the rounds' own ratios (both sides measured back to back in one "
                  "round); the rounds' lowest and highest in brackets.", "",
                  "| case | Rolegate / pgbouncer | Rolegate / direct |", "| --- | ---: | ---: |"]
        for case in dict.fromkeys(r[0] for r in self.results):
            if not case.startswith("audit ") and any(r[1] == "pgbouncer" for r in self.results if r[0] == case):
                lines.append(f"| {case} | {self.ratio(case, 'rolegate', 'pgbouncer')} | {self.ratio(case, 'rolegate', 'direct')} |")
        audit = [c for c in dict.fromkeys(r[0] for r in self.results) if c.startswith("audit ")]
        for case in audit:
            lines.append(f"| {case}: audit on / off | {self.ratio(case, 'rolegate', 'rolegate-noaudit')} | |")
            lines.append(f"| {case}: Rolegate without statement audit | {self.ratio(case, 'rolegate-noaudit', 'pgbouncer')} | |")
            if any(r[1] == "bare-relay" for r in self.results if r[0] == case):
                lines.append(f"| {case}: bare relay (no framing, auth or pool) | {self.ratio(case, 'bare-relay', 'pgbouncer')} | |")
                lines.append(f"| {case}: Rolegate without statement audit / bare relay | "
                             f"{self.ratio(case, 'rolegate-noaudit', 'bare-relay')} | |")
        if any(r[1] == "rolegate-http" for r in self.results):
            per_round = [h / w for h, w in zip(self.rounds[("/v1/query PK lookup, 16", "rolegate-http")],
                                               self.rounds[("wire PK lookup, 16", "rolegate")]) if w]
            if per_round:
                spread = f" ({min(per_round):.2f}–{max(per_round):.2f})" if len(per_round) > 1 else ""
                lines.append(f"| /v1/query / wire, PK lookup, 16 | {statistics.median(per_round):.2f}×{spread} | |")
        if self.others:
            lines += ["", "## Other measurements", ""] + [f"- {o}" for o in self.others]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


GROUPS = ["simple", "extended", "prepared", "connect", "tls", "audit", "http", "revoke", "idle", "verify",
          "auditcost", "auditstore", "large"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds per case: a smoke test of the harness")
    parser.add_argument("--output", default=None, help="where to write the results (default bench/RESULTS.md; "
                        "--quick writes nothing unless given)")
    parser.add_argument("--only", default=None, help="comma-separated groups to run (for working on one number): "
                        + ", ".join(GROUPS) + "; a partial run writes nothing unless --output is given")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per pgbench run (default 10, 2 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case (default 3, 1 with --quick)")
    args = parser.parse_args()
    seconds, rounds = (2, 1) if args.quick else (10, 3)
    seconds, rounds = args.seconds or seconds, args.rounds or rounds
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    if only - set(GROUPS):
        parser.error(f"unknown group(s) {', '.join(sorted(only - set(GROUPS)))}; known: {', '.join(GROUPS)}")
    bench = Bench(args.quick)
    try:
        print("bench: starting PostgreSQL, Rolegate and pgbouncer ...", flush=True)
        bench.start_postgres()
        bench.start_rolegate()
        bench.start_pgbouncer()
        if "audit" in only:
            bench.start_bare_relay()
        clients = [16] if args.quick else [1, 16, 64]
        for mode in ["simple", "extended", "prepared"]:
            if mode not in only:
                continue
            for c in clients:
                bench.compare(f"-S -M {mode}, {c} clients", ["-S", "-M", mode, "-c", str(c), "-j", "2" if c > 1 else "1"],
                              seconds, rounds)
        if "connect" in only:
            bench.compare("-S -C (connect each), 16", ["-S", "-C", "-c", "16", "-j", "2"], seconds, rounds)
            # The same with the service's scram_iterations lowered to 16 (libpq accepts it; pgjdbc
            # does not, hence not the default): the client no longer spends ~2.5 ms on PBKDF2.
            fast = dict(bench.targets(), rolegate=("bench-fast", bench.fast_token, bench.gw_port))
            bench.compare("-S -C, 16, scram_iterations 16", ["-S", "-C", "-c", "16", "-j", "2"], seconds, rounds, fast)
        if "tls" in only:
            bench.compare("TLS -S -M simple, 16", ["-S", "-M", "simple", "-c", "16", "-j", "2"], seconds, rounds,
                          tls=True)
            bench.compare("TLS -S -C (connect each), 16", ["-S", "-C", "-c", "16", "-j", "2"], seconds, rounds,
                          tls=True)
        # pgbouncer too: its ratio to Rolegate without statement audit (the other cases run Rolegate's
        # default, audit on); and the bare relay, what relaying alone costs on this machine.
        if "audit" in only:
            before = bench.audit_store_snapshot()
            noaudit = {"rolegate": bench.targets()["rolegate"],
                       "rolegate-noaudit": ("bench", bench.token, bench.gw_noaudit_port),
                       "pgbouncer": bench.targets()["pgbouncer"],
                       # Transparent: its clients log in to PostgreSQL as the direct target does.
                       "bare-relay": (*bench.targets()["direct"][:2], bench.relay_port)}
            for mode in ["simple", "extended", "prepared"]:
                bench.compare(f"audit -S -M {mode}, 16", ["-S", "-M", mode, "-c", "16", "-j", "2"], seconds, rounds,
                              noaudit)
            bench.audit_disk(before)
        if "http" in only:
            bench.http(seconds, rounds)
        if "revoke" in only:
            bench.revocations(5 if args.quick else 100)
        if "idle" in only:
            bench.idle_connections(500 if args.quick else 10_000)
        if "verify" in only:
            bench.token_verification(20_000 if args.quick else 1_000_000)
        if "auditcost" in only:
            bench.audit_cost(2_000 if args.quick else 50_000)
        if "auditstore" in only:
            bench.audit_store(200_000 if args.quick else 10_000_000)
        if "large" in only:
            bench.large_parameter([8 << 20] if args.quick else [50 << 20, 200 << 20], 1 if args.quick else 3)
        report = bench.report(seconds, rounds)
        print("\n" + report)
        partial = only != set(GROUPS) or args.seconds or args.rounds
        output = args.output or (None if args.quick or partial else f"{ROOT}/bench/RESULTS.md")
        if output:
            # The hand-written history below the marker survives each run.
            kept = ""
            if os.path.exists(output):
                previous = open(output).read()
                if KEEP_MARKER in previous:
                    kept = previous[previous.index(KEEP_MARKER):]
            with open(output, "w") as f:
                f.write(report + ("\n" + kept if kept else ""))
            print(f"bench: wrote {output}")
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
