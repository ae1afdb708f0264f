import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// The audit log end to end: a scripted run through the gateway, read back with
/// `rolegate audit`, proven with `rolegate audit verify`, then tampered with.
@Suite(.serialized, .ownThreads) struct AuditTests {
    /// Events as `rolegate audit --format json` prints them, one object per line.
    static func events(_ gw: GatewayFixture, _ arguments: [String] = []) throws -> [[String: Any]] {
        let output = try gw.fixture.expectRolegate(["audit", "--format", "json", "--limit", "10000"] + arguments).stdout
        return try output.split(separator: "\n").map {
            try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    static func storeFiles(_ gw: GatewayFixture) throws -> String {
        let directory = gw.fixture.directory + "/.rolegate"
        return try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("state.db") }
            .map { String(decoding: try Data(contentsOf: URL(fileURLWithPath: directory + "/" + $0)), as: UTF8.self) }
            .joined()
    }

    static func sqlite(_ gw: GatewayFixture, _ sql: String) throws {
        try Subprocess.check(
            TestClients.python,
            [
                "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
                gw.fixture.directory + "/.rolegate/state.db", sql,
            ])
    }

    /// pgbench as `reports` (8 clients for `seconds`), returned once a hundred of its statements
    /// are in the audit log.
    static func loadUntilAudited(_ gw: GatewayFixture, seconds: Int) async throws -> Task<ProcessResult, any Error> {
        let script = gw.fixture.directory + "/load.sql"
        try "SELECT name FROM analytics.events WHERE id = 1;\n".write(toFile: script, atomically: true, encoding: .utf8)
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        let port = gw.port
        let load = Task {
            try await Subprocess.runDetached(
                "pgbench",
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "-U", "reports", "-n", "-f", script, "-c", "8", "-j", "2", "-T",
                    "\(seconds)", "app",
                ],
                environment: env)
        }
        var written = 0
        for _ in 0..<150 where written < 100 {
            try await Task.sleep(for: .milliseconds(100))
            written = try Self.events(gw, ["--kind", "statement", "--limit", "100"]).count
        }
        #expect(written >= 100, "the load never reached the audit log")
        return load
    }

    @Test func aScriptedRunIsRecordedProvableAndTamperEvident() async throws {
        let gw = try await GatewayFixture()
        let reportsID = try TokenFormat.parse(gw.tokens["reports"]!).id
        let notesID = try TokenFormat.parse(gw.tokens["notes"]!).id

        // --follow sees a statement within a second of it running.
        let follow = try Subprocess.launch(
            RolegateBinary.path, ["audit", "--follow", "--kind", "statement", "--format", "json", "--limit", "1"],
            environment: gw.fixture.environment.merging(["ROLEGATE_CONFIG": gw.fixture.policyPath]) { $1 },
            output: gw.fixture.directory + "/follow.log")
        defer { follow.stop(signal: 9) }
        try await Task.sleep(for: .milliseconds(500))

        #expect(try await gw.value("reports", "SELECT count(*) FROM analytics.events") == "2")
        let denied = try await gw.psql("reports", "SELECT * FROM billing.invoices")
        #expect(denied.stderr.contains("permission denied"))
        #expect(try await gw.psql("notes", "INSERT INTO public.notes VALUES (1, 'audited')").status == 0)
        let wrong = try await gw.psql("reports", "SELECT 1", token: gw.tokens["notes"])
        #expect(wrong.stderr.contains("password authentication failed"))
        try gw.fixture.expectRolegate(["token", "revoke", notesID, "--reason", "audit test"])

        // Latency on a loaded 2-core machine is noisy: the best of three markers must show within 1 s.
        let clock = ContinuousClock()
        var latencies: [Duration] = []
        for attempt in 1...3 {
            let marker = "follow-marker-\(attempt)"
            #expect(try await gw.value("reports", "SELECT '\(marker)'") == marker)
            let ran = clock.now  // the statement has run (psql has its result)
            while clock.now - ran < .seconds(5), !follow.output.contains(marker) {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(follow.output.contains(marker), "--follow did not show the statement: \(follow.output)")
            latencies.append(clock.now - ran)
            if latencies.last! < .seconds(1) { break }
        }
        #expect(latencies.min()! < .seconds(1), "--follow took \(latencies)")

        await gw.stop()  // SIGTERM: sessions end, the queue is flushed
        let events = try Self.events(gw)
        func find(_ kind: String, _ action: String, _ where: ([String: Any]) -> Bool = { _ in true }) -> [String: Any]?
        {
            events.first { $0["kind"] as? String == kind && $0["action"] as? String == action && `where`($0) }
        }
        let allowed = find("statement", "ok") { $0["sql"] as? String == "SELECT count(*) FROM analytics.events" }
        #expect(allowed?["service"] as? String == "reports")
        #expect(allowed?["token_id"] as? String == reportsID)
        #expect(allowed?["role"] as? String == "events_reader")
        #expect(allowed?["rows"] as? Int == 1)
        let refused = find("statement", "error") { $0["sql"] as? String == "SELECT * FROM billing.invoices" }
        #expect(refused?["sql_state"] as? String == "42501")
        #expect(refused?["token_id"] as? String == reportsID)
        let insert = find("statement", "ok") { ($0["sql"] as? String)?.hasPrefix("INSERT INTO public.notes") == true }
        #expect(insert?["service"] as? String == "notes" && insert?["token_id"] as? String == notesID)
        #expect((insert?["detail"] as? [String: String])?["command"] == "INSERT 0 1")
        let badLogin = find("auth", "refused") { $0["service"] as? String == "reports" }
        #expect(badLogin?["sql_state"] as? String == "28P01")
        #expect(badLogin?["token_id"] is NSNull)
        #expect(find("auth", "allowed") { $0["token_id"] as? String == reportsID } != nil)
        let session = find("session", "end") { $0["token_id"] as? String == notesID }
        #expect((session?["detail"] as? [String: String])?["reason"] == "client quit")
        #expect((session?["detail"] as? [String: String])?["statements"] == "1")
        #expect(find("token", "issued") { $0["token_id"] as? String == reportsID } != nil)
        #expect(find("token", "revoked") { $0["token_id"] as? String == notesID } != nil)
        let applied = find("policy", "applied")
        #expect((applied?["sql"] as? String)?.contains("PASSWORD '***'") == true)
        // Filters.
        #expect(try Self.events(gw, ["--service", "notes", "--kind", "statement"]).count == 1)
        #expect(try Self.events(gw, ["--token", reportsID, "--kind", "auth"]).count >= 3)
        let notesSession = try #require(session?["session_id"] as? String)
        let oneSession = try Self.events(gw, ["--session", notesSession])
        #expect(
            oneSession.map { "\($0["kind"] ?? "") \($0["action"] ?? "")" } == [
                "auth allowed", "session start", "statement ok", "session end",
            ], "\(oneSession)")

        // No token secret anywhere: not in the events, not in the store's files.
        let everything =
            try gw.fixture.expectRolegate(["audit", "--limit", "10000"]).stdout + (try Self.storeFiles(gw))
        for token in gw.tokens.values {
            let secret = String(token.dropFirst(TokenFormat.prefix.count + TokenFormat.idLength + 1))
            #expect(!everything.contains(secret))
        }

        // Intact, then edited, then with an event deleted.
        let verified = try gw.fixture.rolegate(["audit", "verify"])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        let statementSequence = try #require(refused?["sequence"] as? Int)
        let instance = try #require(refused?["instance"] as? String)
        // Behind the store's back: the statement's text in its block edited, then put back.
        let tampering = AuditTampering.sqlite(path: gw.fixture.directory + "/.rolegate/state.db")
        let original = try tampering.readBlock(instance: instance, containing: Int64(statementSequence))
        try tampering.alter(instance: instance, sequence: Int64(statementSequence)) { $0.sql = "SELECT 1" }
        let edited = try gw.fixture.rolegate(["audit", "verify"])
        #expect(edited.status == 2)
        #expect(
            edited.stdout.contains("event #\(statementSequence)") && edited.stdout.contains("altered"),
            "\(edited.stdout)")
        try tampering.restore(original)
        #expect(try gw.fixture.rolegate(["audit", "verify"]).status == 0)
        try tampering.delete(instance: instance, sequence: Int64(statementSequence - 1))
        let deleted = try gw.fixture.rolegate(["audit", "verify"])
        #expect(deleted.status == 2)
        #expect(
            deleted.stdout.contains("event #\(statementSequence - 1)") && deleted.stdout.contains("missing"),
            "\(deleted.stdout)")
    }

    /// SIGTERM under load: the gateway stops accepting, sessions get their grace and then
    /// `57P01`, the audit queue is flushed (every session that started has its end), the chain
    /// verifies and the process exits 0.
    @Test func sigtermUnderLoadEndsSessionsWith57P01FlushesTheAuditAndExitsZero() async throws {
        let gw = try await GatewayFixture()
        let load = try await Self.loadUntilAudited(gw, seconds: 30)
        #expect(gw.server.stop(signal: SIGTERM) == 0, "\(gw.server.output)")
        let pgbench = try await load.value
        // Each client was ended by the gateway with 57P01 (pgbench names the message), none otherwise.
        let errors = pgbench.stderr.split(separator: "\n").filter { $0.contains("FATAL") || $0.contains("ERROR") }
        #expect(!errors.isEmpty, "pgbench saw no session end: \(pgbench.stderr)")
        #expect(
            errors.allSatisfy { $0.contains("shutting down") },
            "sessions ended otherwise: \(errors.joined(separator: "\n"))")
        #expect(gw.server.output.contains("shutting down (sessions have"), "\(gw.server.output)")

        let sessions = try Self.events(gw, ["--kind", "session"])
        let starts = sessions.filter { $0["action"] as? String == "start" }.compactMap { $0["session_id"] as? String }
        let ends = sessions.filter { $0["action"] as? String == "end" }
        #expect(
            starts.count >= 8 && Set(starts) == Set(ends.compactMap { $0["session_id"] as? String }),
            "\(sessions.count) session events")
        // pgbench's own first connection quits by itself; every session of the load ends by the shutdown.
        let reasons = ends.map { ($0["detail"] as? [String: String])?["reason"] ?? "" }
        #expect(reasons.filter { $0 == "shutdown" }.count >= 8, "\(reasons)")
        #expect(reasons.allSatisfy { $0 == "shutdown" || $0 == "client quit" }, "\(reasons)")
        let verified = try gw.fixture.rolegate(["audit", "verify"])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }

    /// `kill -9` under load: every event the writer had reported written (committed) before the
    /// kill is in the store afterwards, the chain verifies, and a new gateway continues it.
    @Test func aGatewayKilledMidLoadLeavesAChainThatVerifies() async throws {
        let httpPort = try PostgresCluster.freePort()
        let gw = try await GatewayFixture(serveArguments: ["--http", "127.0.0.1:\(httpPort)"])
        // Kill it mid-load: once statements are reaching the store, while pgbench keeps going.
        let load = try await Self.loadUntilAudited(gw, seconds: 20)
        // What the writer has committed so far (it keeps writing until the kill).
        let metrics = try await Subprocess.runDetached("curl", ["-s", "http://127.0.0.1:\(httpPort)/metrics"]).stdout
        let written = try #require(
            metrics.split(separator: "\n").first { $0.hasPrefix("rolegate_audit_events_written_total ") }
                .flatMap { Double($0.split(separator: " ").last!) }, "\(metrics)")
        #expect(gw.server.stop(signal: 9) == 128 + 9)
        _ = try await load.value
        // `ok     chain <instance>: <N> events, last #<M>`: the killed gateway's chain is the longest.
        let verifiedAfterKill = try gw.fixture.expectRolegate(["audit", "verify"]).stdout
        let stored =
            verifiedAfterKill.split(separator: "\n").compactMap { line -> Int? in
                guard let colon = line.range(of: ": ") else { return nil }
                return Int(line[colon.upperBound...].prefix { $0.isNumber })
            }.max() ?? 0
        #expect(stored >= Int(written), "\(stored) events stored, \(Int(written)) reported written before the kill")
        #expect(Int(written) > 100, "only \(written) events were written before the kill")

        // A new gateway on the same store continues its chain.
        var serveEnv = gw.fixture.environment
        serveEnv["ROLEGATE_CONFIG"] = gw.fixture.policyPath
        let port = try PostgresCluster.freePort()
        let restarted = try Subprocess.launch(
            RolegateBinary.path, ["serve", "--listen", "127.0.0.1:\(port)"], environment: serveEnv,
            output: gw.fixture.directory + "/serve2.log")
        for _ in 0..<100 where !restarted.output.contains("listening on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        var client = gw.environment
        client["PGPASSWORD"] = gw.tokens["reports"]
        let after = try await Subprocess.runDetached(
            gw.fixture.cluster.binaries.psql,
            [
                "-X", "-A", "-t", "-h", "127.0.0.1", "-p", "\(port)", "-U", "reports", "-d", "app", "-c",
                "SELECT 'after'",
            ],
            environment: client)
        #expect(after.stdout.contains("after"), "\(after.stderr)")
        #expect(restarted.stop() == 0)

        let verified = try gw.fixture.rolegate(["audit", "verify"])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        let statements = try Self.events(gw, ["--kind", "statement"])
        #expect(statements.count > 100, "only \(statements.count) statements were recorded before the kill")
        #expect(statements.contains { $0["sql"] as? String == "SELECT 'after'" })
    }
}
