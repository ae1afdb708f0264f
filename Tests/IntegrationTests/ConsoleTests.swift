import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// The console as people use it, in headless Chromium against a real gateway and PostgreSQL
/// (`Clients/console_admin.py`): an admin plans, reads privileges, issues a token and sees it
/// once, watches and ends psql's session, revokes the token after a confirmation, filters and
/// exports the audit log, and has "verify" name an edited event; a viewer can act on nothing,
/// by button or by forged POST. Screenshots of every page at desktop and phone width are
/// written to `$ROLEGATE_SCREENSHOTS` (or the temporary directory)/rolegate-console-admin.
/// Among the heavy tests: a browser is the busiest client of the suite, and two at once (or one
/// beside a load test) starve the timing-sensitive tests of a 2-core machine.
extension HeavyTests {
    @Suite struct ConsoleTests {
        static let policy =
            gatewayPolicy.replacingOccurrences(
                of: "services:\n",
                with: """
                      batch_rw:
                        grants:
                          - on: TABLE public.notes
                            privileges: [SELECT]
                    services:

                    """)
                + """

                  ops: {admin: true, token_ttl: 1h}
                  batch: {role: batch_rw, token_ttl: 1h, scram_iterations: 16}
                console:
                  operator: [service:notes]
                  viewer: [service:reports]
                """

        @Test func anAdminAndAViewerUseTheConsoleInABrowser() async throws {
            try requireBrowser()
            let httpPort = try PostgresCluster.freePort()
            let gw = try await GatewayFixture(policy: Self.policy, serveArguments: ["--http", "127.0.0.1:\(httpPort)"])
            defer { withExtendedLifetime(gw) {} }
            for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
                try await Task.sleep(for: .milliseconds(50))
            }
            let admin = try gw.fixture.expectRolegate(["token", "issue", "ops"]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let screenshots =
                (ProcessInfo.processInfo.environment["ROLEGATE_SCREENSHOTS"] ?? NSTemporaryDirectory())
                + "/rolegate-console-admin"
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/console_admin.py").path
            var env = ProcessInfo.processInfo.environment
            env["CONSOLE_ADMIN_TOKEN"] = admin
            env["CONSOLE_VIEWER_TOKEN"] = gw.tokens["reports"]
            let browser = try await Subprocess.runDetached(
                TestClients.python,
                [
                    script, "http://127.0.0.1:\(httpPort)", gw.fixture.directory + "/.rolegate/state.db",
                    gw.fixture.cluster.binaries.psql, "\(gw.port)", gw.fixture.directory + "/serve.log", screenshots,
                ], environment: env)
            print(browser.stdout.split(separator: "\n").filter { $0.hasPrefix("console:") }.joined(separator: "\n"))
            #expect(browser.status == 0, "\(browser.stdout)\n\(browser.stderr)")

            // Each action went through the admin API's code and into the audit log with who did it.
            try await Task.sleep(for: .milliseconds(500))
            let tokenEvents = try AuditTests.events(gw, ["--kind", "token"])
            let adminID = try #require(
                tokenEvents.first { $0["service"] as? String == "ops" && $0["action"] as? String == "issued" }?[
                    "token_id"]
                    as? String)
            let by = "http:console:ops/\(adminID)"
            for action in ["issued", "revoked"] {
                #expect(
                    tokenEvents.contains {
                        $0["service"] as? String == "batch" && $0["action"] as? String == action
                            && ($0["detail"] as? [String: String])?["by"] == by
                    }, "no \(action) event by \(by): \(tokenEvents)")
            }
            let ended = try AuditTests.events(gw, ["--kind", "session"])
            #expect(
                ended.contains {
                    $0["action"] as? String == "end" && $0["service"] as? String == "batch"
                        && ($0["detail"] as? [String: String])?["ended_by"] == "console:ops/\(adminID)"
                }, "no session end by the console's admin: \(ended)")
            let policyEvents = try AuditTests.events(gw, ["--kind", "policy"])
            #expect(
                policyEvents.contains {
                    $0["action"] as? String == "in_sync"
                        && ($0["detail"] as? [String: String])?["by"]
                            == "console:ops/\(adminID)"
                })
        }
    }
}
