import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

extension HeavyTests {
    /// Three `rolegate serve` processes on one PostgreSQL store behind a round-robin TCP load
    /// balancer, tried as an operator would: revoke through one and watch the sessions end on
    /// all three; cancel through the balancer; list and end sessions from any instance; stop
    /// one under load while the others carry on; every instance's audit chain verifies.
    @Suite(.serialized) struct MultiInstanceTests {
        struct Instance {
            var id: String
            var port: Int
            var httpPort: Int
            var process: RunningProcess
        }

        static func client(_ name: String) -> String {
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Clients/\(name)").path
        }

        @Test func threeInstancesShareRevocationCancelAndSessionsAndSurviveLosingOne() async throws {

            try requirePythonModule("psycopg")
            let storeDatabase = "rolegate_state"
            var storeURL = ""
            let policyWithStore = { (url: String) in HTTPTests.policy + "\nstore: \"\(url)\"\n" }
            let gw = try await GatewayFixture(policy: HTTPTests.policy) { fixture in
                _ = try fixture.cluster.psql("CREATE DATABASE \(storeDatabase)")
            }
            await gw.stop()
            storeURL = gw.fixture.cluster.url(
                user: gw.fixture.cluster.superuser, password: gw.fixture.cluster.superuserPassword,
                database: storeDatabase)
            try gw.fixture.writePolicy(policyWithStore(storeURL))
            var issued: [String: String] = [:]
            for service in ["reports", "notes", "ops"] {
                issued[service] = try gw.fixture.expectRolegate(["token", "issue", service]).stdout
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let tokens = issued
            var env = gw.fixture.environment
            env["ROLEGATE_CONFIG"] = gw.fixture.policyPath

            var instances: [Instance] = []
            for name in ["a", "b", "c"] {
                let port = try PostgresCluster.freePort()
                let httpPort = try PostgresCluster.freePort()
                let process = try Subprocess.launch(
                    RolegateBinary.path,
                    [
                        "serve", "--listen", "127.0.0.1:\(port)", "--http", "127.0.0.1:\(httpPort)", "--instance-id",
                        "gw-\(name)", "--shutdown-grace", "2s",
                    ], environment: env, output: gw.fixture.directory + "/serve-\(name).log")
                instances.append(Instance(id: "gw-\(name)", port: port, httpPort: httpPort, process: process))
            }
            defer { for instance in instances { instance.process.stop(signal: 9) } }
            for instance in instances {
                for _ in 0..<200 where !instance.process.output.contains("HTTP API on") {
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(instance.process.output.contains("instance \(instance.id)"), "\(instance.process.output)")
            }
            // Peers learn of each other on the next heartbeat.
            try await Task.sleep(for: .seconds(6))

            let balancerPort = try PostgresCluster.freePort()
            let balancer = try Subprocess.launch(
                TestClients.python,
                [Self.client("round_robin.py"), "\(balancerPort)"] + instances.map { "\($0.port)" },
                output: gw.fixture.directory + "/balancer.log")
            defer { balancer.stop(signal: 9) }
            for _ in 0..<100 where !balancer.output.contains("ready") { try await Task.sleep(for: .milliseconds(50)) }

            let psql: @Sendable (String, String, Int) async throws -> ProcessResult = { service, sql, port in
                var clientEnv = gw.environment
                clientEnv["PGPASSWORD"] = tokens[service]
                return try await Subprocess.runDetached(
                    gw.fixture.cluster.binaries.psql,
                    [
                        "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", "\(port)", "-U", service, "-d", "app", "-c",
                        sql,
                    ],
                    environment: clientEnv)
            }
            func admin(_ method: String, _ path: String, on instance: Instance) async throws -> (Int, [String: Any]) {
                let result = try await Subprocess.runDetached(
                    "curl",
                    [
                        "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H",
                        "Authorization: Bearer \(tokens["ops"]!)",
                        "http://127.0.0.1:\(instance.httpPort)\(path)",
                    ])
                let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
                let body = lines.dropLast().joined(separator: "\n")
                return (
                    Int(lines.last ?? "") ?? 0,
                    (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:]
                )
            }

            // Three sessions through the balancer land on three instances; any instance lists all.
            let sleepers = (0..<3).map { _ in
                Task { try await psql("reports", "SELECT pg_sleep(30)", balancerPort) }
            }
            var listed: [[String: Any]] = []
            for _ in 0..<50 where listed.count < 3 {
                try await Task.sleep(for: .milliseconds(100))
                listed =
                    (try await admin("GET", "/admin/v1/sessions", on: instances[0]).1["sessions"] as? [[String: Any]])
                    ?? []
            }
            #expect(Set(listed.compactMap { $0["instance"] as? String }) == ["gw-a", "gw-b", "gw-c"], "\(listed)")

            // The console is the same on every instance: a login made on A is a session on C, whose
            // sessions page lists the sessions of all three.
            let consoleLogin = try await Subprocess.runDetached(
                "curl",
                [
                    "-s", "-o", "/dev/null", "-D", "-", "--data-urlencode", "token=\(tokens["ops"]!)",
                    "http://127.0.0.1:\(instances[0].httpPort)/console/login",
                ])
            let consoleCookie = try #require(
                consoleLogin.stdout.split(whereSeparator: \.isNewline).first {
                    $0.lowercased().hasPrefix("set-cookie: rolegate_console=")
                }?
                .dropFirst("set-cookie: ".count).split(separator: ";").first.map(String.init),
                "\(consoleLogin.stdout)")
            let sessionsPage = try await Subprocess.runDetached(
                "curl",
                [
                    "-s", "-H", "Cookie: \(consoleCookie)",
                    "http://127.0.0.1:\(instances[2].httpPort)/console/sessions",
                ])
            let rows = sessionsPage.stdout.components(separatedBy: "<tr>").dropFirst(2)
            #expect(
                ["gw-a", "gw-b", "gw-c"].allSatisfy { id in rows.contains { $0.contains(">\(id)<") } },
                "the console on gw-c did not list every instance's sessions: \(sessionsPage.stdout.prefix(3000))")

            // Revoke through A: the sessions on A, B and C end.
            let reportsID = try TokenFormat.parse(tokens["reports"]!).id
            let clock = ContinuousClock()
            let revokedAt = clock.now
            let (revokeStatus, _) = try await admin("POST", "/admin/v1/tokens/\(reportsID)/revoke", on: instances[0])
            #expect(revokeStatus == 200)
            let answeredAfter = clock.now - revokedAt
            for sleeper in sleepers {
                let ended = try await sleeper.value
                #expect(ended.status != 0 && ended.stderr.contains("revoked"), "\(ended.stderr)")
            }
            print(
                "revocation through gw-a: this test saw the sessions on gw-a, gw-b and gw-c end within \(clock.now - revokedAt) (the revoke request itself took \(answeredAfter))"
            )
            // How fast, on the gateways' own clocks: the revocation and each session's end as
            // the instances recorded them in the shared audit log. Timed from this test process,
            // a CI machine running every suite at once added this process's own waiting: the
            // revoke request once took 9.8 s to come back although the gateway answered in 49 ms.
            // Measured alone this is ~40 ms; bench/ measures the latency itself (p99 ~115 ms).
            let parseTime = ISO8601DateFormatter()
            parseTime.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            var revocation: Date?
            var ends: [(instance: String, at: Date)] = []
            let deadline = clock.now + .seconds(60)
            repeat {
                let events = try AuditTests.events(gw, ["--token", reportsID])
                revocation = events.first { $0["kind"] as? String == "token" && $0["action"] as? String == "revoked" }
                    .flatMap { ($0["at"] as? String).flatMap(parseTime.date(from:)) }
                ends = events.compactMap { event in
                    guard event["kind"] as? String == "session", event["action"] as? String == "end",
                        (event["detail"] as? [String: String])?["reason"] == "token revoked",
                        let at = (event["at"] as? String).flatMap(parseTime.date(from:))
                    else { return nil }
                    return (event["instance"] as? String ?? "", at)
                }
                if revocation != nil, ends.count >= 3 { break }
                try await Task.sleep(for: .milliseconds(200))
            } while clock.now < deadline
            #expect(Set(ends.map(\.instance)) == ["gw-a", "gw-b", "gw-c"], "\(ends)")
            let lag = try #require(revocation).distance(to: ends.map(\.at).max() ?? .distantFuture)
            #expect(
                lag < 5,
                """
                the last session ended \(lag) s after the revocation (gateways' clocks); \
                logs: \(instances.map { "\($0.id): \($0.process.output.suffix(1500))" }.joined(separator: "\n"))
                """)

            // Cancel through the balancer: psql's CancelRequest is a new connection, so it reaches
            // the next instance, which forwards it to the one holding the session.
            var cancelEnv = gw.environment
            cancelEnv["PGPASSWORD"] = tokens["notes"]
            let cancelStarted = clock.now
            let cancelled = try await Subprocess.runDetached(
                "timeout",
                [
                    "-s", "INT", "2", gw.fixture.cluster.binaries.psql, "-X", "-h", "127.0.0.1", "-p",
                    "\(balancerPort)",
                    "-U", "notes", "-d", "app", "-c", "SELECT pg_sleep(60)",
                ], environment: cancelEnv)
            #expect(cancelled.stderr.contains("canceling statement due to user request"), "\(cancelled.stderr)")
            // The statement runs 60 s: ending well before that, with the cancel message, is the cancel
            // (alone it takes ~2.1 s; under the full parallel CI run it has taken up to 14 s).
            let cancelTook = clock.now - cancelStarted
            print("cancel through the balancer: \(cancelTook) from the start (psql interrupts at 2 s)")
            #expect(cancelTook < .seconds(40))
            let metrics = try await Subprocess.runDetached(
                "/bin/sh",
                [
                    "-c",
                    instances.map { "curl -s http://127.0.0.1:\($0.httpPort)/metrics" }.joined(separator: "; "),
                ]
            ).stdout
            #expect(metrics.contains("rolegate_cancel_forwarded_total"), "no cancel was forwarded between instances")

            // End a session held by another instance through A's admin API.
            let cPort = instances[2].port
            let victim = Task { try await psql("notes", "SELECT pg_sleep(30), 'the victim'", cPort) }
            var victimID: String?
            for _ in 0..<50 where victimID == nil {
                try await Task.sleep(for: .milliseconds(100))
                let sessions =
                    (try await admin("GET", "/admin/v1/sessions", on: instances[0]).1["sessions"] as? [[String: Any]])
                    ?? []
                victimID =
                    sessions.first {
                        ($0["instance"] as? String) == "gw-c"
                            && ($0["statement"] as? String)?.contains("the victim") == true
                    }?["id"] as? String
            }
            let id = try #require(victimID)
            #expect(try await admin("DELETE", "/admin/v1/sessions/\(id)", on: instances[0]).0 == 204)
            let victimResult = try await victim.value
            #expect(victimResult.status != 0 && victimResult.stderr.contains("administrator"), "\(victimResult.stderr)")

            // Stop B under load: acknowledged writes all land, A and C carry on.
            var writerEnv = gw.environment
            writerEnv["PGPASSWORD"] = tokens["notes"]
            let writer = Task {
                try await Subprocess.runDetached(
                    TestClients.python,
                    [Self.client("acknowledged_writer.py"), "127.0.0.1", "\(balancerPort)", "6", "100000"],
                    environment: writerEnv)
            }
            try await Task.sleep(for: .seconds(2))
            #expect(instances[1].process.stop() == 0, "instance B did not stop cleanly: \(instances[1].process.output)")
            let written = try await writer.value
            #expect(written.status == 0, "\(written.stderr)")
            let acknowledged =
                written.stdout.split(separator: "\n").first { $0.hasPrefix("ids ") }.map {
                    $0.dropFirst(4).split(separator: ",").compactMap { Int($0) }
                } ?? []
            #expect(acknowledged.count > 20, "\(written.stdout)")
            let present = try gw.fixture.sql(
                "SELECT count(*) FROM public.notes WHERE id = ANY('{\(acknowledged.map(String.init).joined(separator: ","))}'::int[])"
            )
            #expect(
                present == "\(acknowledged.count)", "acknowledged \(acknowledged.count) rows, \(present) are stored")
            #expect(try await psql("notes", "SELECT 'still serving'", balancerPort).stdout.contains("still serving"))

            // C is killed outright (kill -9): A alone carries on, and C's chain still verifies up to
            // its last committed append.
            #expect(instances[2].process.stop(signal: 9) == 137)
            #expect(try await psql("notes", "SELECT 'A alone'", balancerPort).stdout.contains("A alone"))

            // Every instance's chain verifies (B's was flushed at its clean stop).
            let verify = try gw.fixture.rolegate(["audit", "verify"])
            #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
            for id in ["gw-a", "gw-b", "gw-c"] { #expect(verify.stdout.contains(id), "\(verify.stdout)") }
        }
    }
}
