import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// Faults: processes killed mid-write, a full disk under the audit log. Nothing a command
/// reported as done may be lost, the store must open cleanly, and the chain must verify.
@Suite(.serialized, .ownThreads) struct FaultTests {
    /// The JSON a `--format json` command printed (stdout and stderr share the file).
    static func json(_ output: String) -> Any? {
        guard let start = output.firstIndex(where: { $0 == "{" || $0 == "[" }),
            let end = output.lastIndex(where: { $0 == "}" || $0 == "]" }), start < end
        else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(output[start...end].utf8))
    }

    /// A PostgreSQL cluster of its own for the token store (so it can go down alone), and its URL.
    static func separateStore() throws -> (PostgresCluster, String) {
        let cluster = try PostgresCluster.start()
        return (
            cluster, cluster.url(user: cluster.superuser, password: cluster.superuserPassword, database: "postgres")
        )
    }

    /// `GET /readyz` of the HTTP API on `port`.
    @Sendable static func readiness(_ port: Int) async throws -> String {
        try await Subprocess.runDetached("curl", ["-s", "http://127.0.0.1:\(port)/readyz"]).stdout
    }

    static func startServe(_ gw: GatewayFixture, port: Int, log: String) async throws -> RunningProcess {
        var env = gw.fixture.environment
        env["ROLEGATE_CONFIG"] = gw.fixture.policyPath
        let serve = try Subprocess.launch(
            RolegateBinary.path, ["serve", "--listen", "127.0.0.1:\(port)", "--shutdown-grace", "1s"],
            environment: env, output: log)
        for _ in 0..<200 where !serve.output.contains("listening on") {
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(serve.output.contains("listening on"), "serve did not start after a kill -9: \(serve.output)")
        return serve
    }

    /// `kill -9` lands at random moments in `token issue`, `rotate` and `revoke`, and in a
    /// gateway writing statement audit under pgbench load, 100 times. Afterwards every
    /// token whose command reported success exists, every reported revocation holds, and
    /// the audit chains verify.
    @Test func killNineDuringTokenOperationsAndAuditWritesLosesNothing() async throws {
        let gw = try await GatewayFixture()
        await gw.stop()
        let directory = gw.fixture.directory
        var env = gw.fixture.environment
        env["ROLEGATE_CONFIG"] = gw.fixture.policyPath
        let port = try PostgresCluster.freePort()
        var serve = try await Self.startServe(gw, port: port, log: directory + "/serve-0.log")
        func load() throws -> RunningProcess {
            var loadEnv = gw.environment
            loadEnv["PGPASSWORD"] = gw.tokens["reports"]
            return try Subprocess.launch(
                "pgbench",
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "-U", "reports", "-n", "-c", "4", "-T", "60", "-f",
                    directory + "/load.sql", "app",
                ], environment: loadEnv, output: directory + "/pgbench.log")
        }
        try "SELECT count(*) FROM analytics.events;\n".write(
            toFile: directory + "/load.sql", atomically: true, encoding: .utf8)
        var pgbench = try load()

        // How long one command takes here (a debug build on a busy machine is slow).
        let clock = ContinuousClock()
        let timed = clock.now
        try gw.fixture.expectRolegate(["token", "list", "--format", "json"])
        var spread = max(50, Int(((clock.now - timed) * 3).timeInterval * 1000))
        var issued: Set<String> = []
        var revoked: Set<String> = []
        var completed = 0
        var killed = 0
        for round in 0..<100 {
            let arguments: [String]
            switch round % 3 {
            case 0: arguments = ["token", "issue", "notes", "--format", "json"]
            case 1: arguments = ["token", "rotate", "notes", "--grace", "0s", "--format", "json"]
            default:
                arguments = ["token", "revoke", "--service", "notes", "--reason", "fault test", "--format", "json"]
            }
            let command = try Subprocess.launch(
                RolegateBinary.path, arguments, environment: env, output: directory + "/op.log")
            // Up to a little past how long a command takes, so kills land before, during and after its commit.
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...spread)))
            let status = command.stop(signal: 9)
            let output = command.output
            // Keep the kills landing on both sides of the commit as the machine's load changes:
            // a kill that came too early widens the window, a command that finished narrows it.
            spread = status == 137 ? min(spread * 6 / 5, 10_000) : max(spread * 9 / 10, 50)
            switch status {
            case 0:
                completed += 1
                if let object = Self.json(output) as? [String: Any], let id = object["id"] as? String {
                    issued.insert(id)
                } else if let list = Self.json(output) as? [[String: Any]] {
                    revoked.formUnion(list.compactMap { $0["id"] as? String })
                } else {
                    Issue.record("round \(round): \(arguments[1]) succeeded without its JSON: \(output)")
                }
            case 2:
                completed += 1  // refused by the policy (e.g. a live token already): no claim made
            case 137:
                killed += 1
            default:
                Issue.record("round \(round): \(arguments[1]) failed with exit \(status): \(output)")
            }
            if round % 10 == 9 {
                #expect(serve.stop(signal: 9) == 137)
                pgbench.stop(signal: 9)
                serve = try await Self.startServe(gw, port: port, log: directory + "/serve-\(round).log")
                pgbench = try load()
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        pgbench.stop(signal: 9)
        serve.stop(signal: 9)
        #expect(
            completed > 10 && killed > 10,
            "the kills did not land both during and after commands: \(completed) completed, \(killed) killed (spread \(spread) ms)"
        )

        let list = try #require(
            Self.json(try gw.fixture.expectRolegate(["token", "list", "--all", "--format", "json"]).stdout)
                as? [[String: Any]])
        let states = Dictionary(
            list.compactMap { row in (row["id"] as? String).map { ($0, row["state"] as? String ?? "") } },
            uniquingKeysWith: { a, _ in a })
        for id in issued { #expect(states[id] != nil, "token \(id) was reported issued but is gone") }
        for id in revoked {
            #expect(states[id] == "revoked", "token \(id) was reported revoked but is \(states[id] ?? "gone")")
        }
        #expect(
            !issued.isEmpty && !revoked.isEmpty,
            "no command completed: issued \(issued.count), revoked \(revoked.count)")
        let verify = try gw.fixture.rolegate(["audit", "verify"])
        #expect(verify.status == 0, "audit verify after 100 kills: \(verify.stdout)\(verify.stderr)")
        let statements = try gw.fixture.expectRolegate([
            "audit", "--kind", "statement", "--limit", "5", "--format", "json",
        ])
        #expect(!statements.stdout.isEmpty, "no statement was audited under load")
    }
}

extension FaultTests {
    /// The store (and so the audit log) lives on a 2 MB tmpfs that is then filled. Under
    /// `on_failure: block` the gateway says so in `/readyz` and its log, refuses statements
    /// once the bounded queue is full, never crashes, and catches up without losing an
    /// accepted event when space returns.
    @Test(.enabled(if: getuid() == 0, "mounting the small tmpfs needs root"))
    func aFullDiskUnderTheAuditLogBlocksThenRecoversWithNothingLost() async throws {
        let httpPort = try PostgresCluster.freePort()
        var mountPoint = ""
        let policy =
            gatewayPolicy + """

                audit:
                  on_failure: block
                  queue_size: 100
                """
        let gw = try await GatewayFixture(policy: policy, serveArguments: ["--http", "127.0.0.1:\(httpPort)"]) {
            fixture in
            mountPoint = fixture.directory + "/.rolegate"
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            try Subprocess.check("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", mountPoint])
        }
        defer {
            gw.server.stop(signal: 9)
            _ = try? Subprocess.run("umount", ["-l", mountPoint])
        }
        for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        let ready = { try await Self.readiness(httpPort) }
        #expect(try await gw.value("reports", "SELECT 'before'") == "before")
        #expect(try await ready().contains("\"status\":\"ready\""))

        // Fill the disk to the last byte.
        let filler = mountPoint + "/filler"
        _ = try? Subprocess.run("dd", ["if=/dev/zero", "of=\(filler)", "bs=4096"])
        let script = gw.fixture.directory + "/many.sql"
        try String(repeating: "SELECT 'audited while full';\n", count: 400).write(
            toFile: script, atomically: true, encoding: .utf8)
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        let blocked = try await Subprocess.runDetached(
            gw.fixture.cluster.binaries.psql,
            [
                "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "\(gw.port)", "-U", "reports", "-d",
                "app",
                "-f", script,
            ], environment: env)
        #expect(blocked.status != 0, "400 statements ran with a full disk and a 100-event queue")
        #expect(blocked.stderr.contains("audit log cannot be written"), "\(blocked.stderr)")
        let readiness = try await ready()
        #expect(
            readiness.contains("\"status\":\"not ready\"") && readiness.contains("audit writes are failing"),
            "\(readiness)")
        #expect(gw.server.output.contains("cannot write the audit log"), "\(gw.server.output.suffix(1000))")
        #expect(kill(gw.server.pid, 0) == 0, "the gateway died on a full disk")
        let ranWhileFull = blocked.stdout.components(separatedBy: "audited while full").count - 1

        // Space comes back: the queued events are written, statements run again.
        try FileManager.default.removeItem(atPath: filler)
        var recovered = false
        for _ in 0..<100 where !recovered {
            try await Task.sleep(for: .milliseconds(100))
            recovered = try await ready().contains("\"status\":\"ready\"")
        }
        #expect(recovered, "the audit log did not recover after space returned")
        #expect(try await gw.value("reports", "SELECT 'after'") == "after")
        try await Task.sleep(for: .milliseconds(300))
        let events = try AuditTests.events(gw, ["--kind", "statement"])
        let whileFull = events.filter { ($0["sql"] as? String) == "SELECT 'audited while full';" }.count
        #expect(
            whileFull >= ranWhileFull && whileFull > 0,
            "\(ranWhileFull) statements ran while full, \(whileFull) audited")
        #expect(gw.server.output.contains("audit log writes recovered"))
        #expect(try gw.fixture.rolegate(["audit", "verify"]).status == 0)

    }
}

extension FaultTests {
    /// The audit writer stalls (another process holds the store's write lock) until the queue
    /// is full, then catches up within the two seconds a held-back statement waits. Meanwhile
    /// the HTTP API refuses statements (503 `audit_unavailable`) rather than run them unaudited.
    /// Every wire statement must then run and be audited: the ones held back are sent on from a
    /// timer, not a read, and were once left unflushed (their clients waited forever), and the
    /// events of statements that were running when the queue filled were once dropped.
    @Test func statementsHeldBackByAFullAuditQueueRunOnceThereIsRoomAndAllAreAudited() async throws {
        try requirePythonModule("psycopg")
        let httpPort = try PostgresCluster.freePort()
        let policy =
            gatewayPolicy + """

                audit:
                  on_failure: block
                  queue_size: 100
                """
        let gw = try await GatewayFixture(policy: policy, serveArguments: ["--http", "127.0.0.1:\(httpPort)"])
        defer { withExtendedLifetime(gw) {} }
        for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        // Eight sessions, connected before the stall, so that some statements are running when
        // the queue fills; the script holds the store's write lock until it is full.
        let (sessions, perSession) = (8, 100)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Clients/audit_stall.py").path
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        let run = try await Subprocess.runDetached(
            "timeout",
            [
                "60", TestClients.python, script, "127.0.0.1", "\(gw.port)", "reports", "\(sessions)", "\(perSession)",
                gw.fixture.directory + "/.rolegate/state.db", "http://127.0.0.1:\(httpPort)", "100",
            ], environment: env)
        let output = run.stdout + run.stderr
        #expect(run.status == 0, "exit \(run.status) (124: a session hung): \(output)")
        #expect(output.contains("ran \(sessions * perSession) of \(sessions * perSession)"), "\(output)")
        #expect(output.contains("query while full: 503 audit_unavailable"), "\(output)")
        try await Task.sleep(for: .milliseconds(300))
        let audited = try AuditTests.events(gw, ["--kind", "statement"])
            .filter { ($0["sql"] as? String) == "SELECT 'held back, then run'" }.count
        #expect(audited == sessions * perSession, "\(audited) of \(sessions * perSession) statements audited")
        let metrics = try await Subprocess.runDetached("curl", ["-s", "http://127.0.0.1:\(httpPort)/metrics"]).stdout
        #expect(metrics.contains("rolegate_audit_events_dropped_total 0.0\n"), "\(metrics)")
        #expect(try gw.fixture.rolegate(["audit", "verify"]).status == 0)
    }
}

extension FaultTests {
    /// PostgreSQL stops for 10 s while 8 clients share a pool of 3 server connections, then
    /// returns: clean errors meanwhile, no crash, and every client through again without a
    /// restart (a pool slot lost in the outage would leave clients waiting forever).
    @Test func postgresStopsForTenSecondsUnderLoadAndServiceResumes() async throws {
        try requirePythonModule("psycopg")
        let gw = try await GatewayFixture(serveArguments: ["--pool-size", "3", "--client-login-timeout", "30s"])
        defer { withExtendedLifetime(gw) {} }
        let ready = gw.fixture.directory + "/server-back"
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Clients/outage_client.py").path
        let load = Task {
            try await Subprocess.runDetached(
                TestClients.python, [script, "127.0.0.1", "\(gw.port)", "reports", "8", "25", ready], environment: env)
        }
        try await Task.sleep(for: .seconds(2))
        try gw.fixture.cluster.stopServer()
        try await Task.sleep(for: .seconds(10))
        #expect(kill(gw.server.pid, 0) == 0, "the gateway died while PostgreSQL was down")
        try gw.fixture.cluster.startServer()
        _ = FileManager.default.createFile(atPath: ready, contents: Data())
        let result = try await load.value
        #expect(
            result.status == 0, "\(result.stdout)\n\(result.stderr)\ngateway log:\n\(gw.server.output.suffix(3000))")
        #expect(result.stdout.contains("8/8 clients recovered"), "\(result.stdout)")
        // No slot leaked: the pool still holds at most 3 server connections for the role.
        let backends = try gw.fixture.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'events_reader'")
        #expect((Int(backends) ?? 99) <= 3, "\(backends) server connections for a pool of 3")
    }
}

extension FaultTests {
    /// The PostgreSQL store goes down (its own cluster): open sessions go on, new logins are
    /// refused once the cache is past its staleness bound (never served from a stale cache),
    /// the log and `/readyz` say so, and when the store is back logins resume and the audit
    /// queued meanwhile is written with a chain that verifies.
    @Test func aPostgresStoreOutageFailsClosedForLoginsAndRecovers() async throws {
        let (storeCluster, storeURL) = try Self.separateStore()
        defer { storeCluster.stop() }
        let httpPort = try PostgresCluster.freePort()
        let gw = try await GatewayFixture(
            policy: gatewayPolicy + "\nstore: \"\(storeURL)\"\n", serveArguments: ["--http", "127.0.0.1:\(httpPort)"])
        defer { withExtendedLifetime(gw) {} }
        for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        let ready = { try await Self.readiness(httpPort) }
        #expect(try await gw.value("reports", "SELECT 'store up'") == "store up")
        #expect(try await ready().contains("\"status\":\"ready\""))

        // A session that started before the outage and runs through it.
        let open = Task { try await gw.psql("reports", "SELECT pg_sleep(6), 'outlived the outage'") }
        try await Task.sleep(for: .seconds(1))
        try storeCluster.stopServer()
        try await Task.sleep(for: .seconds(2))
        let refused = try await gw.psql("reports", "SELECT 1")
        #expect(refused.status != 0 && refused.stderr.contains("token store is unavailable"), "\(refused.stderr)")
        let readiness = try await ready()
        #expect(readiness.contains("\"status\":\"not ready\"") && readiness.contains("token_feed"), "\(readiness)")
        #expect(gw.server.output.contains("cannot read the token store"), "\(gw.server.output.suffix(1500))")
        // A log line with the instance and the component it comes from (swift-log metadata).
        #expect(
            gw.server.output.split(separator: "\n").contains {
                $0.contains("cannot read the token store") && $0.contains("component=token-feed")
                    && $0.contains("instance=") && $0.contains("warning rolegate.gateway")
            }, "\(gw.server.output.suffix(1500))")
        let outlived = try await open.value
        #expect(outlived.status == 0 && outlived.stdout.contains("outlived the outage"), "\(outlived.stderr)")
        #expect(kill(gw.server.pid, 0) == 0)

        try storeCluster.startServer()
        var back = false
        for _ in 0..<100 where !back {
            try await Task.sleep(for: .milliseconds(100))
            back = try await ready().contains("\"status\":\"ready\"")
        }
        let afterwards = try await ready()
        #expect(back, "not ready again after the store returned: \(afterwards)")
        #expect(try await gw.value("reports", "SELECT 'store back'") == "store back")
        #expect(gw.server.output.contains("token store is reachable again"))
        try await Task.sleep(for: .milliseconds(500))
        let events = try AuditTests.events(gw, ["--kind", "statement"])
        #expect(events.contains { ($0["sql"] as? String)?.contains("outlived the outage") == true })
        #expect(try gw.fixture.rolegate(["audit", "verify"]).status == 0)
    }
}

extension FaultTests {
    /// `store_outage_policy: end_sessions`: while the token store cannot be read, nothing runs
    /// on tokens that cannot be checked: open sessions end too.
    @Test func storeOutagePolicyEndSessionsEndsOpenSessions() async throws {
        let (storeCluster, storeURL) = try Self.separateStore()
        defer { storeCluster.stop() }
        let policy = gatewayPolicy + "\nstore: \"\(storeURL)\"\ngateway:\n  store_outage_policy: end_sessions\n"
        let gw = try await GatewayFixture(policy: policy)
        defer { withExtendedLifetime(gw) {} }
        let open = Task { try await gw.psql("reports", "SELECT pg_sleep(20)") }
        try await Task.sleep(for: .seconds(1))
        let clock = ContinuousClock()
        let stopped = clock.now
        try storeCluster.stopServer()
        let ended = try await open.value
        #expect(ended.status != 0 && ended.stderr.contains("token store cannot be read"), "\(ended.stderr)")
        #expect(clock.now - stopped < .seconds(8), "the session outlived the outage by \(clock.now - stopped)")
        try storeCluster.startServer()
        var back = false
        for _ in 0..<50 where !back {
            try await Task.sleep(for: .milliseconds(200))
            back = (try await gw.psql("reports", "SELECT 1")).status == 0
        }
        #expect(back, "logins did not resume after the store returned")
    }

    /// `server_connect_timeout`: a server (or a balancer in front of it) that takes the TCP
    /// connection and never answers fails the login at that bound, not the 10 s default.
    @Test func aServerThatNeverAnswersFailsTheLoginAtTheConnectTimeout() async throws {
        let gw = try await GatewayFixture()
        defer { withExtendedLifetime(gw) {} }
        let script = """
            import socket, sys
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
            print(s.getsockname()[1], flush=True)
            held = []
            while True: held.append(s.accept())
            """
        let listener = try Subprocess.launch(
            TestClients.python, ["-c", script], output: gw.fixture.directory + "/silent.log")
        defer { listener.stop(signal: 9) }
        var silentPort: Int?
        for _ in 0..<100 where silentPort == nil {
            try await Task.sleep(for: .milliseconds(50))
            silentPort = Int(listener.output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let port = try #require(silentPort, "the silent listener did not start: \(listener.output)")
        var env = gw.fixture.environment
        env["APP_ADMIN_URL"] = gw.fixture.adminURL.replacingOccurrences(
            of: ":\(gw.fixture.cluster.port)/", with: ":\(port)/")
        env["ROLEGATE_CONFIG"] = gw.fixture.policyPath
        let listen = try PostgresCluster.freePort()
        let server = try Subprocess.launch(
            RolegateBinary.path,
            ["serve", "--listen", "127.0.0.1:\(listen)", "--server-connect-timeout", "1s", "--shutdown-grace", "1s"],
            environment: env, output: gw.fixture.directory + "/serve-silent.log")
        defer { server.stop(signal: 9) }
        for _ in 0..<100 where !server.output.contains("listening on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        var psqlEnv = gw.environment
        psqlEnv["PGPASSWORD"] = gw.tokens["reports"]
        let clock = ContinuousClock()
        let started = clock.now
        let result = try await Subprocess.runDetached(
            gw.fixture.cluster.binaries.psql,
            ["-X", "-h", "127.0.0.1", "-p", "\(listen)", "-U", "reports", "-d", "app", "-c", "SELECT 1"],
            environment: psqlEnv)
        let waited = clock.now - started
        #expect(
            result.status != 0 && result.stderr.contains("did not complete the login within 1 s"), "\(result.stderr)")
        #expect(waited < .seconds(6), "the login failed only after \(waited)")
    }
}
