import Foundation
import PostgresCluster
import RolegateCore
import RolegateTokens
import Testing

/// A policy for the gateway tests: three services, three roles of different power.
let gatewayPolicy = """
    version: 1
    databases:
      app:
        url: ${APP_ADMIN_URL}
    roles:
      events_reader:
        grants:
          - on: SCHEMA analytics
            privileges: [USAGE]
          - on: ALL TABLES IN SCHEMA analytics
            privileges: [SELECT]
      invoice_writer:
        grants:
          - on: SCHEMA billing
            privileges: [USAGE]
          - on: TABLE billing.invoices
            privileges: [SELECT, INSERT, UPDATE]
          - on: SEQUENCE billing.invoices_id_seq
            privileges: [USAGE]
          - on: TABLE billing.customers
            privileges: [SELECT]
            columns: [id, email]
      notes_rw:
        grants:
          - on: TABLE public.notes
            privileges: [SELECT, INSERT]
    services:
      reports: {role: events_reader, token_ttl: 1h, scram_iterations: 16}   # libpq clients take a low count
      invoicing: {role: invoice_writer, token_ttl: 1h}
      notes: {role: notes_rw, token_ttl: 1h}
    """

/// A cluster with the policy applied, a token per service, and `rolegate serve` running
/// as its own process on a free port. Clients are the real `psql` and `pgbench`.
final class GatewayFixture: @unchecked Sendable {
    let fixture: Fixture
    let server: RunningProcess
    let port: Int
    var tokens: [String: String] = [:]

    /// `prepare` runs on the new cluster before the policy is applied.
    init(
        policy text: String = gatewayPolicy, serveArguments: [String] = [],
        prepare: (Fixture) throws -> Void = { _ in }
    ) async throws {
        fixture = try Fixture()
        try prepare(fixture)
        try fixture.writePolicy(text)
        try fixture.expectRolegate(["apply", "--yes"])
        for service in ["reports", "invoicing", "notes"] where text.contains("\n  \(service):") {
            tokens[service] = try fixture.expectRolegate(["token", "issue", service]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        port = try PostgresCluster.freePort()
        var env = fixture.environment
        env["ROLEGATE_CONFIG"] = fixture.policyPath
        server = try Subprocess.launch(
            RolegateBinary.path,
            ["serve", "--listen", "127.0.0.1:\(port)", "--client-login-timeout", "2s", "--shutdown-grace", "1s"]
                + serveArguments,
            environment: env, output: fixture.directory + "/serve.log")
        for _ in 0..<100 where !server.output.contains("listening on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(server.output.contains("listening on"), "rolegate serve did not start: \(server.output)")
    }

    func stop() async {
        server.stop()
    }

    /// Tests end with `defer { withExtendedLifetime(gw) {} }`: the fixture lives to the end of the
    /// test and this deinit tears it down (then ``Fixture``'s: the cluster and the folder) before the
    /// test returns. A `Task` that stopped it after the test could outlive the run's last test, and
    /// that test's folder stayed in the temporary directory.
    deinit { server.stop(signal: 9) }
    var environment: [String: String] { ["PATH": fixture.environment["PATH"]!, "PGCONNECT_TIMEOUT": "10"] }

    /// `psql -c sql` through the gateway as `service` with `token` (its own by default).
    func psql(
        _ service: String, _ sql: String, token: String? = nil, database: String = "app", extra: [String] = []
    )
        async throws -> ProcessResult
    {
        var env = environment
        env["PGPASSWORD"] = token ?? tokens[service] ?? ""
        return try await Subprocess.runDetached(
            fixture.cluster.binaries.psql,
            [
                "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "\(port)", "-U", service,
                "-d", database,
            ]
                + extra + ["-c", sql],
            environment: env)
    }

    /// The single value `sql` returns, or a test failure with psql's error.
    func value(
        _ service: String, _ sql: String, sourceLocation: Testing.SourceLocation = #_sourceLocation
    ) async throws
        -> String
    {
        let result = try await psql(service, sql)
        #expect(result.status == 0, "\(sql): \(result.stderr)", sourceLocation: sourceLocation)
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
