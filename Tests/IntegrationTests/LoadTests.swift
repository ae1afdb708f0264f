import Foundation
import PostgresCluster
import RolegateTestSupport
import Testing

/// Suites that load the whole machine (1,000 clients) or time events across processes (three
/// gateways): nested here so they run one after the other, never beside each other, while the
/// rest of the suites still run in parallel with them.
@Suite(.serialized, .ownThreads) enum HeavyTests {}

extension HeavyTests {
    /// Many clients at once: 1,000 concurrent sessions across three services for a few seconds
    /// (`ROLEGATE_LOAD_SECONDS=60 swift test --filter LoadTests` for the longer run).
    @Suite(.serialized) struct LoadTests {
        @Test func aThousandConcurrentClientsAcrossThreeServicesWithoutAnUnexpectedError() async throws {
            try requirePythonModule("psycopg")
            let seconds = ProcessInfo.processInfo.environment["ROLEGATE_LOAD_SECONDS"] ?? "5"
            let gw = try await GatewayFixture(
                serveArguments: [
                    "--pool-size", "400", "--max-client-connections", "1200", "--max-client-connections-per-service",
                    "400", "--client-login-timeout", "60s",
                ]
            ) { fixture in
                // One server connection per session: PostgreSQL must take 1,000 of them.
                try fixture.cluster.stopServer()
                fixture.cluster.maxConnections = 1100
                try fixture.cluster.startServer()
            }
            defer { withExtendedLifetime(gw) {} }
            var env = gw.environment
            for (service, token) in gw.tokens { env["TOKEN_\(service.uppercased())"] = token }
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/load_client.py").path
            let result = try await Subprocess.runDetached(
                TestClients.python, [script, "127.0.0.1", "\(gw.port)", "1000", seconds, "\(gw.server.pid)"],
                environment: env)
            print(result.stdout.split(separator: "\n").first { $0.hasPrefix("load:") } ?? "")
            #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
            #expect(result.stdout.contains("load: all checks passed"), "\(result.stdout)")
            #expect(result.stdout.contains("load: 1000/1000 clients connected"), "\(result.stdout)")
            // Nothing left behind: every server connection went back to the pool or was closed.
            try await Task.sleep(for: .milliseconds(500))
            let active = try gw.fixture.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE usename IN ('events_reader', 'invoice_writer', 'notes_rw') AND state <> 'idle'"
            )
            #expect(active == "0", "\(active) server connections still busy after the clients left")
        }
    }
}
