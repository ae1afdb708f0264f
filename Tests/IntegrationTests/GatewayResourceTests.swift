import Foundation
import PostgresCluster
import RolegateTestSupport
import Testing

/// The gateway's resources over time: memory across many connections and huge results,
/// and what SIGTERM does to the sessions in flight.
@Suite(.serialized, .ownThreads) struct GatewayResourceTests {
    /// Resident memory of a process, in KiB (Linux).
    static func residentKiB(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
        return line.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
    }

    /// Open file descriptors of a process (Linux).
    static func openDescriptors(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// `count` connect-query-disconnect cycles with pgbench -C.
    static func connectCycles(_ gw: GatewayFixture, count: Int, script: String) async throws -> ProcessResult {
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        return try await Subprocess.runDetached(
            "pgbench",
            [
                "-h", "127.0.0.1", "-p", "\(gw.port)", "-U", "reports", "-n", "-C", "-f", script, "-c", "4", "-j", "2",
                "-t", "\(count / 4)", "app",
            ],
            environment: env)
    }

    @Test func memoryStaysFlatOver10000ConnectCycles() async throws {
        let gw = try await GatewayFixture()
        defer { withExtendedLifetime(gw) {} }
        let script = gw.fixture.directory + "/one.sql"
        try "SELECT count(*) FROM analytics.events;\n".write(toFile: script, atomically: true, encoding: .utf8)
        // Warm up: pools, caches and allocator arenas reach their working size.
        let warmup = try await Self.connectCycles(gw, count: 1000, script: script)
        #expect(warmup.status == 0, "\(warmup.stderr)")
        let before = try #require(Self.residentKiB(gw.server.pid))
        let descriptorsBefore = Self.openDescriptors(gw.server.pid)
        let run = try await Self.connectCycles(gw, count: 10_000, script: script)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("number of transactions actually processed: 10000"), "\(run.stdout)")
        let after = try #require(Self.residentKiB(gw.server.pid))
        print("gateway RSS over 10,000 connect/disconnect cycles: \(before) KiB -> \(after) KiB")
        // Leaking even 1 KiB per connection would show as 10 MB.
        #expect(after - before < 8 * 1024, "grew from \(before) KiB to \(after) KiB")
        // No socket or file left open: at most the pool's idle server connections differ. The
        // last clients' sockets may still be closing when pgbench exits: give them a moment.
        var descriptorsAfter = Self.openDescriptors(gw.server.pid)
        let settle = ContinuousClock.now + .seconds(5)
        while descriptorsAfter - descriptorsBefore > 8, ContinuousClock.now < settle {
            try await Task.sleep(for: .milliseconds(100))
            descriptorsAfter = Self.openDescriptors(gw.server.pid)
        }
        print("gateway open file descriptors: \(descriptorsBefore) -> \(descriptorsAfter)")
        #expect(
            descriptorsBefore > 0 && descriptorsAfter - descriptorsBefore <= 8,
            "\(descriptorsBefore) -> \(descriptorsAfter)")
        // And every session slot was given back.
        #expect(try await gw.value("reports", "SELECT 1") == "1")
    }

    @Test func hundredsOfMegabytesStreamThroughWithoutBufferingThem() async throws {
        let gw = try await GatewayFixture()
        defer { withExtendedLifetime(gw) {} }
        let before = try #require(Self.residentKiB(gw.server.pid))
        // ~300 MB of COPY data and ~100 MB of rows, written to a pipe the client drains.
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        let copy = try await Subprocess.runDetached(
            "/bin/sh",
            [
                "-c",
                "'\(gw.fixture.cluster.binaries.psql)' -X -q -h 127.0.0.1 -p \(gw.port) -U reports -d app -c \"COPY (SELECT repeat('x', 1000) FROM generate_series(1, 300000)) TO STDOUT\" | wc -c",
            ],
            environment: env)
        #expect(copy.status == 0, "\(copy.stderr)")
        #expect(Int(copy.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == 300_000 * 1001)
        let rows = try await Subprocess.runDetached(
            "/bin/sh",
            [
                "-c",
                "'\(gw.fixture.cluster.binaries.psql)' -X -q -A -t -h 127.0.0.1 -p \(gw.port) -U reports -d app -v FETCH_COUNT=0 -c \"SELECT g, repeat('y', 1000) FROM generate_series(1, 100000) g\" | wc -l",
            ],
            environment: env)
        #expect(rows.status == 0, "\(rows.stderr)")
        #expect(Int(rows.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == 100_000)
        let after = try #require(Self.residentKiB(gw.server.pid))
        print("gateway RSS while streaming 400 MB: \(before) KiB -> \(after) KiB")
        #expect(after - before < 32 * 1024, "grew from \(before) KiB to \(after) KiB")
    }

    @Test func sigtermLetsSessionsFinishThenEndsTheRest() async throws {
        let gw = try await GatewayFixture(serveArguments: ["--shutdown-grace", "10s"])
        defer { withExtendedLifetime(gw) {} }
        // Both queries must be running when the signal comes, however slowly a loaded machine
        // starts psql: the long one first, then the "short" one, which waits for an advisory
        // lock the test holds, so it runs until the test lets it finish. (A short sleep could
        // end between two polls of a loaded machine, and the wait never saw both running.)
        let holding = "SELECT pg_sleep(600), 4242 AS holder"
        async let holder = gw.fixture.cluster.psqlDetached(
            "SELECT pg_advisory_lock(4242);\n\(holding);", database: "app")
        try await Self.waitForActive(gw, [holding], user: gw.fixture.cluster.superuser)
        async let long = gw.psql("reports", "SELECT pg_sleep(120)")
        try await Self.waitForActive(gw, ["SELECT pg_sleep(120)"])
        async let short = gw.psql("reports", "SELECT pg_advisory_lock(4242), 'finished'")
        try await Self.waitForActive(gw, ["SELECT pg_sleep(120)", "SELECT pg_advisory_lock(4242), 'finished'"])
        let signalled = ContinuousClock.now
        kill(gw.server.pid, SIGTERM)
        try await Task.sleep(for: .milliseconds(100))
        // New clients are no longer accepted.
        let late = try await gw.psql("reports", "SELECT 1")
        #expect(late.status != 0)
        // The session in the middle of a query finishes it: the lock is let go now.
        let released = try await gw.fixture.cluster.psqlDetached(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE rtrim(query, ';') = '\(holding)'",
            database: "app")
        #expect(released == "t", "the lock's holder was not found: \(released)")
        _ = try? await holder
        let finished = try await short
        #expect(finished.status == 0, "\(finished.stderr)")
        #expect(finished.stdout.contains("finished"))
        // The one that would run for two minutes is ended at the deadline, with the reason.
        let ended = try await long
        #expect(ended.status != 0)
        #expect(ended.stderr.contains("the gateway is shutting down"), "\(ended.stderr)")
        #expect(ContinuousClock.now - signalled < .seconds(40), "not ended at the 10 s grace")
        // And the gateway exits cleanly.
        #expect(gw.server.stop(signal: 0) == 0, "\(gw.server.output)")
    }

    /// A login still in its SCRAM exchange when SIGTERM comes is refused when it completes:
    /// the shutdown ends only the sessions it knows, so none may start behind its back.
    @Test func aLoginCompletedAfterSIGTERMIsRefused() async throws {
        let gw = try await GatewayFixture(serveArguments: [
            "--shutdown-grace", "4s", "--client-login-timeout", "20s",
        ])
        defer { withExtendedLifetime(gw) {} }
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        let result = try await Subprocess.runDetached(
            TestClients.python,
            [
                SecurityTests.client("hostile_wire.py"), "127.0.0.1", "\(gw.port)", "reports", "\(gw.server.pid)",
                "--login-during-shutdown",
            ],
            environment: env)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("login during shutdown: refused by name"), "\(result.stdout)")
        #expect(gw.server.stop(signal: 0) == 0, "\(gw.server.output)")
    }

    /// Waits (up to a minute) until each of `queries` runs in a session of the gateway's role.
    static func waitForActive(
        _ gw: GatewayFixture, _ queries: [String], user: String = "events_reader"
    ) async throws {
        let list = queries.map { "'" + $0.replacingOccurrences(of: "'", with: "''") + "'" }.joined(separator: ", ")
        let sql =
            "SELECT count(DISTINCT rtrim(query, ';')) FROM pg_stat_activity WHERE usename = '\(user)' "
            + "AND state = 'active' AND rtrim(query, ';') IN (\(list))"
        let deadline = ContinuousClock.now + .seconds(60)
        while try await gw.fixture.cluster.psqlDetached(sql, database: "app") != "\(queries.count)" {
            try #require(ContinuousClock.now < deadline, "not all running after a minute: \(queries)")
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
