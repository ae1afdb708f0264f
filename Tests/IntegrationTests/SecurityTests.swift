import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// Attempts to get past the gateway: privilege escalation as a read-only service, hostile
/// wire input, guessing tokens. Every attempt must fail, be audited, and leave the gateway
/// serving.
@Suite(.serialized, .ownThreads) struct SecurityTests {
    static func client(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Clients/\(name)").path
    }

    @Test func escalationAttemptsAsAReadOnlyServiceFailAndAreAudited() async throws {
        let gw = try await GatewayFixture()
        defer { withExtendedLifetime(gw) {} }
        let attempts = [
            "SET ROLE invoice_writer", "SET ROLE rolegate_admin", "SET ROLE postgres", "SET ROLE pg_read_server_files",
            "SET SESSION AUTHORIZATION invoice_writer", "SET SESSION AUTHORIZATION rolegate_admin",
            "SELECT set_config('role', 'invoice_writer', false)",
            "SELECT set_config('session_authorization', 'rolegate_admin', false)",
            "CREATE ROLE sneaky LOGIN PASSWORD 'x'", "ALTER ROLE events_reader SUPERUSER",
            "ALTER ROLE events_reader CREATEROLE", "ALTER ROLE invoice_writer PASSWORD 'mine'",
            "GRANT invoice_writer TO events_reader", "GRANT SELECT ON billing.customers TO events_reader",
            "GRANT pg_read_server_files TO events_reader",
            "COPY (SELECT 1) TO PROGRAM 'id'", "COPY analytics.events FROM PROGRAM 'id'",
            "COPY analytics.events TO '/tmp/rolegate-escalation'", "COPY analytics.events FROM '/etc/passwd'",
            "SELECT pg_read_file('/etc/passwd')", "SELECT pg_read_binary_file('/etc/passwd')",
            "SELECT pg_ls_dir('.')", "SELECT lo_import('/etc/passwd')",
            "CREATE FUNCTION analytics.f() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION public.f() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1'",
            "CREATE SCHEMA sneaky", "CREATE TABLE public.sneaky (x int)", "CREATE EXTENSION dblink",
            "CREATE EXTENSION postgres_fdw", "ALTER SYSTEM SET log_statement = 'none'", "SELECT pg_reload_conf()",
            "LOAD 'plpgsql'", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
            "DO $$ BEGIN EXECUTE 'ALTER ROLE events_reader SUPERUSER'; END $$",
            "SELECT * FROM billing.customers", "SELECT * FROM pg_authid",
            "CREATE TEMP TABLE t AS SELECT 1; ALTER TABLE analytics.events OWNER TO events_reader",
        ]
        for sql in attempts {
            let result = try await gw.psql("reports", sql)
            #expect(result.status != 0, "\(sql) succeeded: \(result.stdout)")
            #expect(
                result.stderr.contains("permission denied") || result.stderr.contains("must be")
                    || result.stderr.contains("not allowed") || result.stderr.contains("does not exist")
                    || result.stderr.contains("only superuser") || result.stderr.contains("only roles with")
                    || result.stderr.contains("must have admin option"),
                "\(sql): \(result.stderr)")
        }
        // GRANT on a table it does not own "succeeds" with a warning and grants nothing.
        let grant = try await gw.psql("reports", "GRANT SELECT ON analytics.events TO PUBLIC")
        #expect(grant.stderr.contains("no privileges were granted"), "\(grant.stderr)")
        #expect(try gw.fixture.sql("SELECT has_table_privilege('public', 'analytics.events', 'SELECT')") == "f")
        // Nothing changed: still the same role, no superuser, no new role, no new membership.
        #expect(try await gw.value("reports", "SELECT current_user") == "events_reader")
        #expect(
            try gw.fixture.sql(
                "SELECT rolsuper::text || rolcreaterole::text || (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = 'events_reader'"
            ) == "falsefalse0")
        #expect(try gw.fixture.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'sneaky'") == "0")

        // Each attempt is in the audit log with the SQLSTATE PostgreSQL refused it with.
        try await Task.sleep(for: .milliseconds(500))
        let events = try AuditTests.events(gw, ["--kind", "statement", "--service", "reports"])
        for sql in attempts where !sql.contains(";") {
            let event = events.first { ($0["sql"] as? String) == sql }
            #expect(event != nil, "no audit event for \(sql)")
            if let state = event?["sql_state"] as? String {
                #expect(state != "00000", "\(sql) audited as success")
            } else {
                #expect(Bool(false), "\(sql) audited without a SQLSTATE: \(String(describing: event))")
            }
        }
    }

    /// A role can change its own password (PostgreSQL allows it and no privilege stops it);
    /// with that password a service could log in around the gateway. `plan --check` reports
    /// it as drift and `apply` puts the credential back.
    @Test func aPasswordChangedThroughTheGatewayIsDriftAndApplyRestoresIt() async throws {
        let gw = try await GatewayFixture()
        defer { withExtendedLifetime(gw) {} }
        #expect(try await gw.psql("reports", "ALTER ROLE events_reader PASSWORD 'chosen-by-the-service'").status == 0)
        let check = try gw.fixture.rolegate(["plan", "--check"])
        #expect(check.status != 0, "plan --check missed the changed password: \(check.stdout)")
        #expect(check.stdout.contains("ALTER ROLE \"events_reader\" WITH PASSWORD '***'"), "\(check.stdout)")
        #expect(!check.stdout.contains("chosen-by-the-service"))
        try gw.fixture.expectRolegate(["apply", "--yes"])
        #expect(try gw.fixture.rolegate(["plan", "--check"]).status == 0)
        let direct = try await gw.fixture.sqlAsRole("events_reader", "SELECT 1")
        #expect(direct.status == 0, "the restored credential does not log in: \(direct.stderr)")
    }

    @Test func hostileWireInputGetsCleanErrorsAndTheGatewayKeepsServing() async throws {
        let gw = try await GatewayFixture()
        defer { withExtendedLifetime(gw) {} }
        var env = gw.environment
        env["PGPASSWORD"] = gw.tokens["reports"]
        let result = try await Subprocess.runDetached(
            TestClients.python,
            [Self.client("hostile_wire.py"), "127.0.0.1", "\(gw.port)", "reports", "\(gw.server.pid)"],
            environment: env)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("hostile wire: all"), "\(result.stdout)")
        print(result.stdout.split(separator: "\n").filter { $0.contains("stops reading") }.joined())
        let token = gw.tokens["reports"]!
        #expect(!result.stdout.contains(token) && !gw.server.output.contains(token))
    }

    /// Guessing tokens from one address is slowed down and audited; a service holding its
    /// real token logs in at once from the same address all the while.
    @Test func repeatedFailuresFromOneAddressAreDelayedWithoutLockingOutTheService() async throws {
        let policy =
            gatewayPolicy + """

                gateway:
                  auth_failure_limit: 3
                  auth_failure_window: 1m
                  auth_failure_delay: 8s
                """
        // The delay is long and the bounds around it loose, so that a loaded CI machine (where a
        // psql login can take seconds) still tells a delayed answer from a prompt one.
        let gw = try await GatewayFixture(policy: policy)
        defer { withExtendedLifetime(gw) {} }
        let clock = ContinuousClock()
        for _ in 0..<3 {
            let started = clock.now
            let wrong = try await gw.psql("reports", "SELECT 1", token: "rg_guess")
            #expect(wrong.stderr.contains("password authentication failed"))
            #expect(clock.now - started < .seconds(6), "answered late before the limit")
        }
        let started = clock.now
        let delayed = try await gw.psql("nobody", "SELECT 1", token: "rg_guess")
        #expect(delayed.stderr.contains("password authentication failed"))
        #expect(clock.now - started >= .seconds(8), "the failure past the limit was answered at once")

        // The legitimate service from the same address is not slowed down.
        let goodStart = clock.now
        #expect(try await gw.value("reports", "SELECT 'still in'") == "still in")
        #expect(clock.now - goodStart < .seconds(6), "a valid token was delayed by someone else's failures")

        // The audit log tells the story (once the writer has stored it).
        var events = try AuditTests.events(gw, ["--kind", "auth"])
        let deadline = clock.now + .seconds(20)
        while events.filter({ ($0["action"] as? String) == "refused" }).count < 4, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            events = try AuditTests.events(gw, ["--kind", "auth"])
        }
        let throttled = events.filter { ($0["action"] as? String) == "throttled" }
        #expect(throttled.count == 1, "\(throttled)")
        #expect((throttled.first?["client"] as? String) == "127.0.0.1")
        let refused = events.filter { ($0["action"] as? String) == "refused" }
        #expect(refused.count == 4)
        #expect(refused.contains { (($0["detail"] as? [String: String])?["delayed"]) == "8s" })
    }
}

extension SecurityTests {
    @Test func hostileHTTPGetsCleanProblemsAndTheAPIKeepsServing() async throws {
        let httpPort = try PostgresCluster.freePort()
        let policy =
            HTTPTests.policy + """

                gateway:
                  http_body_timeout: 3s
                """
        let gw = try await GatewayFixture(policy: policy, serveArguments: ["--http", "127.0.0.1:\(httpPort)"])
        defer { withExtendedLifetime(gw) {} }
        for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        let before = try #require(GatewayResourceTests.residentKiB(gw.server.pid))
        var env = gw.environment
        env["TOKEN"] = gw.tokens["reports"]
        env["ADMIN_TOKEN"] = try gw.fixture.expectRolegate(["token", "issue", "ops"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try await Subprocess.runDetached(
            TestClients.python, [Self.client("hostile_http.py"), "127.0.0.1", "\(httpPort)", "3"], environment: env)
        #expect(
            result.status == 0,
            "exit \(result.status): \(result.stdout)\n\(result.stderr)\ngateway: \(gw.server.output.suffix(2000))")
        #expect(result.stdout.contains("hostile http: all"), "\(result.stdout)")
        let after = try #require(GatewayResourceTests.residentKiB(gw.server.pid))
        #expect(after - before < 64 * 1024, "RSS grew from \(before) KiB to \(after) KiB")
        #expect(!gw.server.output.contains(gw.tokens["reports"]!))
    }
}

extension SecurityTests {
    /// The seconds-long regression run of the wire fuzz target: the kept corpus (inputs
    /// libFuzzer found interesting in longer runs, see fuzz/README.md), then seeded
    /// mutations of it, through the same parsing a client's bytes meet in a session.
    @Test func wireFuzzCorpusReplaysAndMutatesWithoutAFailure() async throws {
        let fuzz = URL(fileURLWithPath: RolegateBinary.path).deletingLastPathComponent()
            .appendingPathComponent("WireFuzz").path
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let corpus = root.appendingPathComponent("fuzz/corpus").path
        #expect(try FileManager.default.contentsOfDirectory(atPath: corpus).count >= 8)
        let result = try await Subprocess.runDetached(fuzz, [corpus, "--seconds", "5"])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("without a failure"), "\(result.stdout)")
    }
}
