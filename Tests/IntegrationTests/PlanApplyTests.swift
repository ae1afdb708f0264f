import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

let contractPolicy = """
    version: 1
    databases:
      app:
        url: ${APP_ADMIN_URL}
    roles:
      analytics_ro:
        description: Read-only access for dashboards
        connection_limit: 10
        settings: {statement_timeout: 30s}
        grants:
          - on: SCHEMA analytics
            privileges: [USAGE]
          - on: ALL TABLES IN SCHEMA analytics
            privileges: [SELECT]
            future: true
      billing_writer:
        grants:
          - on: SCHEMA billing
            privileges: [USAGE]
          - on: TABLE billing.invoices
            privileges: [SELECT, INSERT, UPDATE]
          - on: TABLE billing.customers
            privileges: [SELECT]
            columns: [id, email]
          - on: SEQUENCE billing.invoices_id_seq
            privileges: [USAGE]
          - on: FUNCTION billing.close_month(date)
            privileges: [EXECUTE]
    services:
      dashboard:
        role: analytics_ro
        token_ttl: 1h
        max_token_ttl: 24h
      billing-api:
        role: billing_writer
        token_ttl: 15m
    """

/// Every privilege each managed role holds on the fixture's objects, as `role|kind|object|privilege`,
/// asked of PostgreSQL's own has_*_privilege functions.
func effectivePrivileges(
    _ fixture: Fixture, roles: [String] = ["analytics_ro", "billing_writer"]
) throws -> Set<String> {
    func array(_ items: [String]) -> String { "ARRAY[" + items.map { "'\($0)'" }.joined(separator: ",") + "]" }
    let r = array(roles)
    let tables = array(["billing.customers", "billing.invoices", "analytics.events", "analytics.daily", "public.notes"])
    let tablePrivileges = array(["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"])
    let columns = array(["id", "email", "ssn"])
    let columnPrivileges = array(["SELECT", "INSERT", "UPDATE", "REFERENCES"])
    let schemas = array(["billing", "analytics"])
    let sequences = array(["billing.invoices_id_seq", "billing.customers_id_seq", "analytics.events_id_seq"])
    let functions = array(["billing.close_month(date)", "billing.wipe()"])
    let output = try fixture.sql(
        """
        SELECT r || '|table|' || o || '|' || p FROM unnest(\(r)) r, unnest(\(tables)) o, unnest(\(tablePrivileges)) p
         WHERE has_table_privilege(r, o, p)
        UNION ALL
        SELECT r || '|column|billing.customers.' || c || '|' || p FROM unnest(\(r)) r, unnest(\(columns)) c, unnest(\(columnPrivileges)) p
         WHERE has_column_privilege(r, 'billing.customers', c, p)
        UNION ALL
        SELECT r || '|schema|' || o || '|' || p FROM unnest(\(r)) r, unnest(\(schemas)) o, unnest(ARRAY['USAGE','CREATE']) p
         WHERE has_schema_privilege(r, o, p)
        UNION ALL
        SELECT r || '|schema|public|CREATE' FROM unnest(\(r)) r WHERE has_schema_privilege(r, 'public', 'CREATE')
        UNION ALL
        SELECT r || '|sequence|' || o || '|' || p FROM unnest(\(r)) r, unnest(\(sequences)) o, unnest(ARRAY['USAGE','SELECT','UPDATE']) p
         WHERE has_sequence_privilege(r, o, p)
        UNION ALL
        SELECT r || '|function|' || o || '|EXECUTE' FROM unnest(\(r)) r, unnest(\(functions)) o
         WHERE has_function_privilege(r, o, 'EXECUTE')
        UNION ALL
        SELECT r || '|database|app|' || p FROM unnest(\(r)) r, unnest(ARRAY['CREATE','TEMPORARY']) p
         WHERE has_database_privilege(r, 'app', p)
        """)
    return Set(output.split(separator: "\n").map(String.init))
}

/// What the contract policy grants, written out by hand.
let contractPrivileges: Set<String> = [
    "analytics_ro|schema|analytics|USAGE",
    "analytics_ro|table|analytics.events|SELECT",
    "analytics_ro|table|analytics.daily|SELECT",
    "billing_writer|schema|billing|USAGE",
    "billing_writer|table|billing.invoices|SELECT",
    "billing_writer|table|billing.invoices|INSERT",
    "billing_writer|table|billing.invoices|UPDATE",
    "billing_writer|column|billing.customers.id|SELECT",
    "billing_writer|column|billing.customers.email|SELECT",
    "billing_writer|sequence|billing.invoices_id_seq|USAGE",
    "billing_writer|function|billing.close_month(date)|EXECUTE",
    // PUBLIC's defaults, which Rolegate does not touch (README: "PUBLIC").
    "analytics_ro|database|app|TEMPORARY",
    "billing_writer|database|app|TEMPORARY",
]

@Suite(.serialized, .ownThreads) struct PlanApplyTests {
    @Test func planOnEmptyDatabaseListsEverythingAndChangesNothing() throws {
        let fixture = try Fixture()
        try fixture.writePolicy(contractPolicy)
        let plan = try fixture.expectRolegate(["plan"])
        #expect(plan.stdout.contains("+ role analytics_ro: create"))
        #expect(plan.stdout.contains("+ role billing_writer: create"))
        #expect(
            plan.stdout.contains(
                "GRANT SELECT (\"email\", \"id\") ON TABLE \"billing\".\"customers\" TO \"billing_writer\";"))
        #expect(plan.stdout.contains("Plan: 2 to create, 0 to change, 0 to drop."))
        #expect(
            try fixture.sql("SELECT count(*) FROM pg_roles WHERE rolname IN ('analytics_ro','billing_writer')") == "0")
        try fixture.expectRolegate(["plan", "--check"], status: 2)

        let json = try fixture.expectRolegate(["plan", "--format", "json"])
        let decoded = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(decoded?["in_sync"] as? Bool == false)
        let summary = decoded?["summary"] as? [String: Int]
        #expect(summary == ["create": 2, "change": 0, "drop": 0])
        let databases = decoded?["databases"] as? [[String: Any]]
        let roles = databases?.first?["roles"] as? [[String: Any]]
        #expect(roles?.map { $0["action"] as? String } == ["create", "create"])
    }

    @Test func applyGrantsExactlyWhatThePolicySays() throws {
        let fixture = try Fixture()
        try fixture.writePolicy(contractPolicy)
        let apply = try fixture.expectRolegate(["apply", "--yes"])
        #expect(apply.stdout.contains("Apply complete: 2 created, 0 changed, 0 dropped."))
        #expect(try effectivePrivileges(fixture) == contractPrivileges)

        // Attributes, settings and the marker.
        let attributes = try fixture.sql(
            """
            SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolconnlimit,
                   array_to_string(s.setconfig, ','), shobj_description(r.oid, 'pg_authid') LIKE 'rolegate:managed db=app key=%'
              FROM pg_roles r LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
             WHERE rolname IN ('analytics_ro', 'billing_writer') ORDER BY 1
            """)
        #expect(
            attributes == "analytics_ro|t|f|f|f|f|f|10|statement_timeout=30s|t\nbilling_writer|t|f|f|f|f|f|-1||t")

        // A second apply is a no-op and the check passes.
        let again = try fixture.expectRolegate(["apply", "--yes"])
        #expect(again.stdout.contains("Nothing to apply"))
        try fixture.expectRolegate(["plan", "--check"], status: 0)
    }

    @Test func managedRolesLogInWithTheirDerivedCredentialAndGetOnlyTheirGrants() async throws {
        let fixture = try Fixture()
        try fixture.writePolicy(contractPolicy)
        try fixture.expectRolegate(["apply", "--yes"])

        let who = try await fixture.sqlAsRole("billing_writer", "SELECT current_user, session_user")
        #expect(who.status == 0, "\(who.stderr)")
        #expect(who.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "billing_writer|billing_writer")
        let allowed = try await fixture.sqlAsRole("billing_writer", "SELECT email FROM billing.customers ORDER BY id")
        #expect(allowed.stdout == "a@example.com\nb@example.com\n")
        let denied = try await fixture.sqlAsRole("billing_writer", "SELECT ssn FROM billing.customers")
        #expect(denied.status != 0)
        #expect(denied.stderr.contains("permission denied"))
        let insert = try await fixture.sqlAsRole(
            "billing_writer", "INSERT INTO billing.invoices (customer_id, amount) VALUES (1, 9.5) RETURNING id")
        #expect(insert.status == 0, "\(insert.stderr)")
        let timeout = try await fixture.sqlAsRole("analytics_ro", "SHOW statement_timeout")
        #expect(timeout.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "30s")
        // The credential of one role is not another's.
        let wrong = try Subprocess.run(
            fixture.cluster.binaries.psql,
            [
                "-X", "-h", "127.0.0.1", "-p", "\(fixture.cluster.port)", "-U", "analytics_ro", "-d", "app", "-c",
                "SELECT 1",
            ],
            environment: [
                "PGPASSWORD": try fixture.masterKey().rolePassword(role: "billing_writer"),
                "PATH": fixture.environment["PATH"]!,
            ])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("password authentication failed"))
    }

    @Test func driftIsDetectedBothWaysAndRepaired() throws {
        let fixture = try Fixture()
        try fixture.writePolicy(contractPolicy)
        try fixture.expectRolegate(["apply", "--yes"])
        try fixture.expectRolegate(["plan", "--check"], status: 0)

        // A grant added by hand (by the owner) is drift ...
        try fixture.sql("SET ROLE rolegate_admin; GRANT DELETE ON billing.invoices TO billing_writer;")
        var check = try fixture.expectRolegate(["plan", "--check"], status: 2)
        #expect(check.stdout.contains("REVOKE DELETE ON TABLE \"billing\".\"invoices\" FROM \"billing_writer\";"))
        try fixture.expectRolegate(["apply", "--yes"])
        try fixture.expectRolegate(["plan", "--check"], status: 0)
        #expect(try effectivePrivileges(fixture) == contractPrivileges)

        // ... and so is one removed by hand, or granted by a superuser, or a changed attribute or setting.
        try fixture.sql(
            """
            REVOKE SELECT ON analytics.events FROM analytics_ro;
            GRANT SELECT (ssn) ON billing.customers TO billing_writer;
            GRANT SELECT ON billing.customers TO analytics_ro WITH GRANT OPTION;
            GRANT pg_read_all_data TO analytics_ro;
            ALTER ROLE analytics_ro CONNECTION LIMIT 99;
            ALTER ROLE analytics_ro SET work_mem = '64MB';
            ALTER ROLE billing_writer CREATEDB;
            """)
        check = try fixture.expectRolegate(["plan", "--check"], status: 2)
        for expected in [
            "GRANT SELECT ON TABLE \"analytics\".\"events\" TO \"analytics_ro\";",
            "REVOKE SELECT (\"ssn\") ON TABLE \"billing\".\"customers\" FROM \"billing_writer\";",
            "REVOKE SELECT ON TABLE \"billing\".\"customers\" FROM \"analytics_ro\";",
            "REVOKE \"pg_read_all_data\" FROM \"analytics_ro\";",
            "ALTER ROLE \"analytics_ro\" WITH CONNECTION LIMIT 10;",
            "ALTER ROLE \"analytics_ro\" RESET \"work_mem\";",
            "ALTER ROLE \"billing_writer\" WITH NOCREATEDB;",
        ] {
            #expect(check.stdout.contains(expected), "missing: \(expected)\n\(check.stdout)")
        }
        #expect(check.stdout.contains("Plan: 0 to create, 2 to change, 0 to drop."))
        try fixture.expectRolegate(["apply", "--yes"])
        try fixture.expectRolegate(["plan", "--check"], status: 0)
        #expect(try effectivePrivileges(fixture) == contractPrivileges)
        #expect(
            try fixture.sql(
                "SELECT rolconnlimit, rolcreatedb FROM pg_roles WHERE rolname IN ('analytics_ro','billing_writer') ORDER BY rolname"
            ) == "10|f\n-1|f")
        #expect(try fixture.sql("SELECT pg_has_role('analytics_ro', 'pg_read_all_data', 'MEMBER')") == "f")
    }

    @Test func unmanagedRolesAreNeverTouched() throws {
        let fixture = try Fixture()
        try fixture.sql(
            """
            CREATE ROLE bob LOGIN CONNECTION LIMIT 3;
            ALTER ROLE bob SET work_mem = '8MB';
            SET ROLE rolegate_admin;
            GRANT USAGE ON SCHEMA billing TO bob;
            GRANT SELECT, DELETE ON billing.customers TO bob;
            GRANT SELECT (ssn) ON billing.customers TO bob;
            GRANT EXECUTE ON FUNCTION billing.wipe() TO bob;
            """)
        let before = try fixture.sql(
            "SELECT rolconnlimit, (SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'bob'::regrole), relacl FROM pg_roles, pg_class WHERE rolname = 'bob' AND relname = 'customers'"
        )
        try fixture.writePolicy(contractPolicy)
        try fixture.expectRolegate(["apply", "--yes"])
        try fixture.sql("SET ROLE rolegate_admin; GRANT INSERT ON billing.invoices TO billing_writer;")
        try fixture.expectRolegate(["apply", "--yes"])
        let after = try fixture.sql(
            "SELECT rolconnlimit, (SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'bob'::regrole), relacl FROM pg_roles, pg_class WHERE rolname = 'bob' AND relname = 'customers'"
        )
        #expect(before == after)
        #expect(
            try fixture.sql(
                "SELECT has_table_privilege('bob', 'billing.customers', 'DELETE'), has_column_privilege('bob', 'billing.customers', 'ssn', 'SELECT'), has_function_privilege('bob', 'billing.wipe()', 'EXECUTE')"
            ) == "t|t|t")
        // A policy role whose name is taken by an unmanaged role is refused, not adopted silently.
        try fixture.writePolicy(contractPolicy.replacingOccurrences(of: "analytics_ro", with: "bob"))
        let refused = try fixture.expectRolegate(["plan"], status: 1)
        #expect(refused.stderr.contains("role 'bob' already exists and is not managed by Rolegate"))
    }

    @Test func futureTablesAreCovered() async throws {
        let fixture = try Fixture()
        try fixture.writePolicy(contractPolicy)
        try fixture.expectRolegate(["apply", "--yes"])
        try fixture.sql(
            "SET ROLE rolegate_admin; CREATE TABLE analytics.sessions (id int); INSERT INTO analytics.sessions VALUES (1);"
        )
        let read = try await fixture.sqlAsRole("analytics_ro", "SELECT count(*) FROM analytics.sessions")
        #expect(read.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "\(read.stderr)")
        try fixture.expectRolegate(["plan", "--check"], status: 0)
    }

    @Test func droppingARoleRevokesEndsSessionsAndProtectsOwnedObjects() async throws {
        let fixture = try Fixture()
        try fixture.writePolicy(contractPolicy)
        try fixture.expectRolegate(["apply", "--yes"])
        try fixture.sql("SET ROLE rolegate_admin; GRANT CREATE ON SCHEMA billing TO billing_writer;")
        try fixture.expectRolegate(["apply", "--yes"])  // revokes the hand-made CREATE again
        try fixture.sql(
            "GRANT CREATE ON SCHEMA billing TO billing_writer; SET ROLE billing_writer; CREATE TABLE billing.scratch (x int);"
        )

        // The same policy without billing_writer and its service.
        let start = contractPolicy.range(of: "  billing_writer:\n")!.lowerBound
        let end = contractPolicy.range(of: "services:")!.lowerBound
        let servicesEnd = contractPolicy.range(of: "  billing-api:")!.lowerBound
        try fixture.writePolicy(String(contractPolicy[..<start]) + String(contractPolicy[end..<servicesEnd]))

        let plan = try fixture.expectRolegate(["plan", "--check"], status: 2)
        #expect(plan.stdout.contains("- role billing_writer: drop"))
        #expect(plan.stdout.contains("owns 1 object(s)"))
        let refused = try fixture.expectRolegate(["apply", "--yes"], status: 1)
        #expect(refused.stderr.contains("--reassign-owned-to"))
        #expect(try fixture.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'billing_writer'") == "1")

        // An open session of the role being dropped is ended after the commit.
        try fixture.sql("GRANT pg_signal_backend TO rolegate_admin")
        let session = Task { try await fixture.sqlAsRole("billing_writer", "SELECT pg_sleep(60)") }
        // It must be running before the apply (a loaded machine can take a while to start psql).
        let deadline = ContinuousClock.now + .seconds(60)
        while try await fixture.cluster.psqlDetached(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'billing_writer'", database: "app") != "1"
        {
            try #require(ContinuousClock.now < deadline, "the billing_writer session did not start in a minute")
            try await Task.sleep(for: .milliseconds(100))
        }
        let dropped = try fixture.expectRolegate(["apply", "--yes", "--reassign-owned-to", "rolegate_admin"])
        #expect(dropped.stdout.contains("Ended 1 session(s) of dropped roles."), "\(dropped.stdout)")
        let ended = try await session.value
        #expect(ended.status != 0)
        #expect(ended.stderr.contains("terminating connection due to administrator command"), "\(ended.stderr)")
        #expect(try fixture.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'billing_writer'") == "0")
        #expect(try fixture.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'scratch'") == "rolegate_admin")
        try fixture.expectRolegate(["plan", "--check"], status: 0)
        #expect(
            try effectivePrivileges(fixture, roles: ["analytics_ro"])
                == contractPrivileges.filter { $0.hasPrefix("analytics_ro|") })
    }

    @Test func identifiersWithCapitalsSpacesAndQuotesWork() throws {
        let fixture = try Fixture()
        try fixture.sql(
            """
            SET ROLE rolegate_admin;
            CREATE SCHEMA "Odd Schema";
            CREATE TABLE "Odd Schema"."Quote""d; DROP TABLE billing.customers; --" ("Col A" int, "b""c" text);
            """)
        try fixture.writePolicy(
            #"""
            version: 1
            databases:
              app:
                url: ${APP_ADMIN_URL}
            roles:
              "Weird \"Role\"; --":
                description: "it's; -- fine"
                grants:
                  - on: SCHEMA "Odd Schema"
                    privileges: [USAGE]
                  - on: TABLE "Odd Schema"."Quote""d; DROP TABLE billing.customers; --"
                    privileges: [SELECT]
                    columns: ["Col A", "b\"c"]
            services:
              odd: {role: "Weird \"Role\"; --"}
            """#)
        try fixture.expectRolegate(["apply", "--yes"])
        try fixture.expectRolegate(["plan", "--check"], status: 0)
        #expect(try fixture.sql("SELECT count(*) FROM billing.customers") == "2")
        #expect(
            try fixture.sql(
                #"SELECT has_column_privilege('Weird "Role"; --', '"Odd Schema"."Quote""d; DROP TABLE billing.customers; --"', 'b"c', 'SELECT')"#
            ) == "t")
        #expect(
            try fixture.sql(
                #"SELECT shobj_description(oid, 'pg_authid') LIKE '%it''s; -- fine' FROM pg_roles WHERE rolname = 'Weird "Role"; --'"#
            ) == "t")
    }

    @Test func secretsAreNeverPrinted() throws {
        let fixture = try Fixture()
        try fixture.writePolicy(contractPolicy)
        let outputs = [
            try fixture.expectRolegate(["plan"]), try fixture.expectRolegate(["apply", "--yes"]),
            try fixture.expectRolegate(["plan", "--format", "json"]),
        ]
        let key = try fixture.masterKey()
        let keyHex = try String(contentsOfFile: fixture.directory + "/.rolegate/master.key", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        for output in outputs {
            let text = output.stdout + output.stderr
            #expect(text.contains("PASSWORD '***'") || text.contains("\"in_sync\" : true"), "\(text)")
            for role in ["analytics_ro", "billing_writer"] {
                #expect(!text.contains(key.rolePassword(role: role)))
                #expect(!text.contains("SCRAM-SHA-256$"))
            }
            #expect(!text.contains(keyHex))
            #expect(!text.contains(fixture.adminPassword))
        }
        // A failure while applying names the statement without the verifier.
        try fixture.sql("ALTER ROLE rolegate_admin NOCREATEROLE")
        try fixture.writePolicy(contractPolicy.replacingOccurrences(of: "analytics_ro", with: "analytics_two"))
        let failed = try fixture.expectRolegate(["apply", "--yes"], status: 1)
        #expect(failed.stderr.contains("permission denied to create role"))
        #expect(failed.stderr.contains("PASSWORD '***'"))
        #expect(!failed.stderr.contains("SCRAM-SHA-256$"))
        // Nothing was applied: the transaction rolled back.
        #expect(try fixture.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'analytics_two'") == "0")
    }
}
