import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// The gateway core's promises on paths ordinary clients do not walk, on raw sockets
/// (Clients/gateway_core.py): revocation at each point of the login, what the client is told
/// (application_name, its backend's process id, notifications, pg_terminate_backend),
/// FunctionCall alone and pipelined, a pipelining client that vanishes, and a 50 MB parameter
/// beside PostgreSQL direct. Then the audit log must hold every FunctionCall with its function.
@Suite(.serialized, .ownThreads) struct GatewayCoreTests {
    @Test func rawSocketCasesHoldAndEveryFunctionCallIsAudited() async throws {
        // One event loop: every session shares one pool, so a server connection given back is the
        // one the next session gets (the pipelining case needs that to be able to fail).
        // A login timeout longer than the fixture's 2 s: one case waits 1.5 s between SCRAM's
        // messages after running `rolegate token revoke`, which alone took over half a second on
        // a CI machine running every suite (the timeout then answered instead of the revocation).
        let gw = try await GatewayFixture(serveArguments: ["--threads", "1", "--client-login-timeout", "10s"])
        defer { withExtendedLifetime(gw) {} }
        var env = gw.fixture.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        env["DIRECT_USER"] = "rolegate_admin"
        env["DIRECT_PASSWORD"] = gw.fixture.adminPassword
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Clients/gateway_core.py").path
        let result = try await Subprocess.runDetached(
            TestClients.python,
            [
                script, "127.0.0.1", "\(gw.port)", "reports", RolegateBinary.path, gw.fixture.directory,
                "\(gw.fixture.cluster.port)",
            ], environment: env)
        print(result.stdout.split(separator: "\n").filter { $0.hasPrefix("large parameter") }.joined())
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("gateway core: all"), "\(result.stdout)")

        // Every FunctionCall is a statement of its session, in order between the queries around it.
        try await Task.sleep(for: .milliseconds(500))  // the audit writer's group commit
        let statements = try AuditTests.events(gw, ["--kind", "statement"])
        func detail(_ event: [String: Any]) -> [String: String] { event["detail"] as? [String: String] ?? [:] }
        let calls = statements.filter { detail($0)["command"] == "FUNCTION CALL" }
        #expect(calls.count == 3, "FunctionCall events: \(calls)")
        #expect(
            calls.filter { detail($0)["function"] == "pg_backend_pid" && $0["action"] as? String == "ok" }.count == 2)
        #expect(
            calls.contains {
                detail($0)["function_oid"] == "999999999" && $0["sql_state"] as? String == "42883"
                    && $0["action"] as? String == "error"
            }, "\(calls)")
        let order = statements.compactMap { event -> String? in
            if let sql = event["sql"] as? String, sql.contains("-call'") { return sql }
            return detail(event)["command"] == "FUNCTION CALL" ? "F" : nil
        }
        #expect(order.suffix(4) == ["SELECT 'before-call'", "F", "F", "SELECT 'after-call'"], "\(order)")

        // The revoked logins were refused as such, and audited.
        let refused = try AuditTests.events(gw, ["--kind", "auth"]).filter {
            $0["action"] as? String == "refused" && detail($0)["reason"] == "token revoked"
        }
        #expect(refused.count == 2, "\(refused)")
        let token = gw.tokens["reports"]!
        #expect(!result.stdout.contains(token) && !gw.server.output.contains(token))
    }

    /// The fast-path OIDs the audit names are the server's own (they are fixed by PostgreSQL's catalog).
    @Test func theBuiltinFunctionNamesMatchTheServersCatalog() async throws {
        let cluster = try PostgresCluster.start()
        defer { cluster.stop() }
        let names = try cluster.psql(
            "SELECT string_agg(oid || '=' || proname, ',' ORDER BY oid) FROM pg_proc WHERE oid IN (715, 764, 765, 767, 952, 953, 954, 955, 956, 957, 958, 964, 1004, 3170, 3171, 3172, 2026, 1371)"
        )
        #expect(
            names.trimmingCharacters(in: .whitespacesAndNewlines)
                == "715=lo_create,764=lo_import,765=lo_export,767=lo_import,952=lo_open,953=lo_close,954=loread,955=lowrite,956=lo_lseek,957=lo_creat,958=lo_tell,964=lo_unlink,1004=lo_truncate,1371=pg_lock_status,2026=pg_backend_pid,3170=lo_lseek64,3171=lo_tell64,3172=lo_truncate64"
        )
    }
}
