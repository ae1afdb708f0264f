import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// The HTTP API keeps its own contract: the served openapi.yaml validates as OpenAPI 3.1, and
/// schemathesis (`--checks all`: server errors, status codes and bodies the document does not
/// list, schema-valid requests refused, schema-violating ones accepted, undeclared methods not
/// 405…) finds nothing with a data token and with admin tokens. `Clients/contract.py` drives it;
/// `Clients/schemathesis.toml` holds its one setting.
@Suite(.serialized, .ownThreads) struct ContractTests {
    static let policy =
        gatewayPolicy + """

              ops: {admin: true, token_ttl: 1h}
              ops-stateful: {admin: true, token_ttl: 1h}
            """

    /// A fixed seed and a bounded number of examples per operation: a finding reproduces, and the
    /// run takes well under a minute.
    static let seed = "24301"
    static let examples = "60"

    @Test func schemathesisFindsNothingWithDataAndAdminTokens() async throws {
        try requirePythonModule("schemathesis")
        try requirePythonModule("openapi_spec_validator")
        let port = try PostgresCluster.freePort()
        let gw = try await GatewayFixture(policy: Self.policy, serveArguments: ["--http", "127.0.0.1:\(port)"])
        defer { withExtendedLifetime(gw) {} }
        let admin = try gw.fixture.expectRolegate(["token", "issue", "ops"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let secondAdmin = try gw.fixture.expectRolegate(["token", "issue", "ops-stateful"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Clients/contract.py").path
        var environment = ProcessInfo.processInfo.environment
        environment["CONTRACT_ROLEGATE"] = RolegateBinary.path
        environment["CONTRACT_DIRECTORY"] = gw.fixture.directory
        environment["CONTRACT_ENVIRONMENT"] = String(
            decoding: try JSONSerialization.data(
                withJSONObject: gw.fixture.environment.merging(["ROLEGATE_CONFIG": gw.fixture.policyPath]) { $1 }),
            as: UTF8.self)
        let result = try await Subprocess.runDetached(
            TestClients.python,
            [
                script, "http://127.0.0.1:\(port)", try #require(gw.tokens["reports"]), admin, secondAdmin, Self.seed,
                Self.examples,
            ], environment: environment)
        print(result.stdout.split(separator: "\n").filter { $0.hasPrefix("contract:") }.joined(separator: "\n"))
        #expect(result.succeeded, "schemathesis found disagreements:\n\(result.stdout)\n\(result.stderr)")
        // The tester really ran: each run generated cases.
        #expect(result.stdout.components(separatedBy: "generated").count - 1 == 3, "\(result.stdout)")
        // No run may leave a secret in what it printed.
        for token in [admin, secondAdmin, gw.tokens["reports"] ?? "?"] {
            #expect(!result.stdout.contains(token) && !result.stderr.contains(token), "a token was printed")
        }
    }
}
