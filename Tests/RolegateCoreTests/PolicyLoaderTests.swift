import RolegateTestSupport
import Testing

@testable import RolegateCore

let env = ["APP_ADMIN_URL": "postgres://admin:s3cret@127.0.0.1:5432/app"]

func load(_ yaml: String, environment: [String: String] = env) throws(PolicyError) -> Policy {
    try PolicyLoader.parse(text: yaml, file: "test.yaml", environment: environment)
}

/// The issues a policy produces, or a test failure when it loads.
func issues(_ yaml: String, environment: [String: String] = env) -> [PolicyIssue] {
    do {
        _ = try load(yaml, environment: environment)
        Issue.record("expected the policy to be refused")
        return []
    } catch {
        return error.issues
    }
}

let contractExample = """
    version: 1
    databases:
      app:
        url: ${APP_ADMIN_URL}
    roles:
      analytics_ro:
        database: app
        description: Read-only access for dashboards
        connection_limit: 10
        settings: {statement_timeout: 30s}
        grants:
          - on: SCHEMA public
            privileges: [USAGE]
          - on: ALL TABLES IN SCHEMA public
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

@Suite(.ownThreads) struct PolicyLoaderTests {
    @Test func loadsTheContractExample() throws {
        let policy = try load(contractExample)
        #expect(policy.databases.map(\.name) == ["app"])
        #expect(policy.databases[0].url == "postgres://admin:s3cret@127.0.0.1:5432/app")
        #expect(policy.roles.map(\.name) == ["analytics_ro", "billing_writer"])
        let analytics = try #require(policy.role(named: "analytics_ro"))
        #expect(analytics.database == "app")
        #expect(analytics.connectionLimit == 10)
        #expect(analytics.settings == [RoleSetting(name: "statement_timeout", value: "30s")])
        #expect(analytics.grants.count == 2)
        #expect(analytics.grants[1].target == .allTablesInSchema("public"))
        #expect(analytics.grants[1].future)
        let writer = try #require(policy.role(named: "billing_writer"))
        #expect(writer.database == "app")  // omitted: the only database
        #expect(writer.connectionLimit == -1)
        #expect(writer.grants[2].columns == ["id", "email"])
        #expect(writer.grants[4].target == .function(schema: "billing", name: "close_month", arguments: "date"))
        let billing = try #require(policy.service(named: "billing-api"))
        #expect(billing.tokenTTL == .seconds(900))
        #expect(billing.maxTokenTTL == .seconds(86_400))
        #expect(policy.service(named: "dashboard")?.maxTokenTTL == .seconds(86_400))
    }

    @Test func theInitTemplateIsAValidPolicy() throws {
        let policy = try load(PolicyTemplate.example)
        #expect(!policy.roles.isEmpty)
        #expect(!policy.services.isEmpty)
    }

    @Test func unknownKeyNamesLineColumnAndKeyWithSuggestion() {
        let found = issues(
            contractExample.replacingOccurrences(of: "    connection_limit: 10", with: "    conection_limit: 10"))
        #expect(found.count == 1)
        let issue = found[0]
        #expect(issue.location == SourceLocation(file: "test.yaml", line: 9, column: 5))
        #expect(issue.keyPath == "roles.analytics_ro.conection_limit")
        #expect(issue.message.contains("unknown key 'conection_limit'"))
        #expect(issue.message.contains("did you mean 'connection_limit'"))
        #expect(issue.description.hasPrefix("test.yaml:9:5: roles.analytics_ro.conection_limit: "))
    }

    @Test func privilegeThatDoesNotApplyToTheObject() {
        let found = issues(
            contractExample.replacingOccurrences(
                of: "      - on: SCHEMA billing\n        privileges: [USAGE]",
                with: "      - on: SCHEMA billing\n        privileges: [USAGE, DELETE]"))
        #expect(found.count == 1)
        #expect(found[0].keyPath == "roles.billing_writer.grants[0].privileges")
        #expect(found[0].message.contains("DELETE does not apply to SCHEMA"))
        #expect(found[0].location?.line == 20)
    }

    @Test func serviceWithoutRole() {
        let found = issues(
            contractExample.replacingOccurrences(of: "    role: billing_writer\n", with: "    description: no role\n"))
        #expect(found.contains { $0.keyPath == "services.billing-api" && $0.message.contains("missing key 'role'") })
    }

    @Test func serviceWithUnknownRole() {
        let found = issues(
            contractExample.replacingOccurrences(of: "role: billing_writer", with: "role: billing_writr"))
        #expect(found.count == 1)
        #expect(found[0].keyPath == "services.billing-api.role")
        #expect(found[0].message.contains("unknown role 'billing_writr'"))
    }

    @Test func roleBoundToTwoServicesUnlessShared() throws {
        let twice = contractExample + "\n  reports:\n    role: analytics_ro\n"
        let found = issues(twice)
        #expect(found.count == 1)
        #expect(found[0].keyPath == "services.reports.role")
        #expect(found[0].message.contains("already bound to service 'dashboard'"))
        #expect(found[0].location?.line == 39)

        let shared = twice.replacingOccurrences(
            of: "    description: Read-only access for dashboards\n",
            with: "    description: Read-only access for dashboards\n    shared: true\n")
        let policy = try load(shared)
        #expect(policy.services.filter { $0.role == "analytics_ro" }.count == 2)
    }

    @Test func invalidRoleNames() {
        for (name, expected) in [
            ("pg_reader", "reserved by PostgreSQL"),
            ("public", "reserved"),
            (String(repeating: "r", count: 64), "at most 63"),
            ("\"  padded\"", "white space"),
        ] {
            let found = issues(
                """
                version: 1
                databases: {app: {url: "postgres://a@h/app"}}
                roles:
                  \(name):
                    grants: []
                """)
            #expect(found.count == 1, "\(name)")
            #expect(found.first?.message.contains(expected) == true, "\(name): \(found)")
            #expect(found.first?.location?.line == 5 || found.first?.location?.line == 4)
        }
    }

    @Test func namesWithQuotesSpacesAndUnicodeAreValid() throws {
        let policy = try load(
            #"""
            version: 1
            databases: {app: {url: "postgres://a@h/app"}}
            roles:
              "Weird \"Role\"; DROP TABLE x; --":
                grants:
                  - on: TABLE "My Schema"."Ünïcode ""T"""
                    privileges: [select]
                    columns: ["col; --", "Größe"]
            services:
              svc:
                role: "Weird \"Role\"; DROP TABLE x; --"
            """#)
        #expect(policy.roles[0].name == "Weird \"Role\"; DROP TABLE x; --")
        #expect(policy.roles[0].grants[0].target == .table(schema: "My Schema", name: "Ünïcode \"T\""))
        #expect(policy.roles[0].grants[0].columns == ["col; --", "Größe"])
    }

    @Test func badDuration() {
        let found = issues(contractExample.replacingOccurrences(of: "token_ttl: 15m", with: "token_ttl: 15 minutes"))
        #expect(found.count == 1)
        #expect(found[0].keyPath == "services.billing-api.token_ttl")
        #expect(found[0].message.contains("is not a duration"))
        #expect(found[0].location?.line == 37)
    }

    /// `upstream_auth:` takes libpq's method names; an unknown one, or one the URL's
    /// `require_auth` contradicts, is an error at its key.
    @Test func upstreamAuthIsAListOfLibpqMethods() throws {
        let allowed = try load(
            contractExample.replacingOccurrences(
                of: "    url: ${APP_ADMIN_URL}",
                with: "    url: ${APP_ADMIN_URL}\n    upstream_auth: [scram-sha-256, md5]"))
        #expect(allowed.databases[0].upstreamAuth == [.scramSHA256, .md5])
        #expect(try load(contractExample).databases[0].upstreamAuth == .standard)
        let unknown = issues(
            contractExample.replacingOccurrences(
                of: "    url: ${APP_ADMIN_URL}", with: "    url: ${APP_ADMIN_URL}\n    upstream_auth: [kerberos]"))
        #expect(unknown.count == 1 && unknown[0].keyPath == "databases.app.upstream_auth", "\(unknown)")
        #expect(unknown.first?.message.contains("unknown authentication method 'kerberos'") == true)
        let contradicted = issues(
            contractExample.replacingOccurrences(
                of: "    url: ${APP_ADMIN_URL}",
                with: "    url: postgres://admin@db:5432/app?require_auth=md5\n    upstream_auth: [scram-sha-256]"))
        #expect(
            contradicted.first?.message.contains("contradicts the URL's require_auth=md5") == true, "\(contradicted)")
    }

    @Test func ttlAboveMaxIsRefused() {
        let found = issues(contractExample.replacingOccurrences(of: "token_ttl: 1h", with: "token_ttl: 48h"))
        #expect(found.count == 1)
        #expect(found[0].message.contains("longer than max_token_ttl"))
    }

    @Test func unsetEnvironmentVariable() {
        let found = issues(contractExample, environment: [:])
        #expect(found.count == 1)
        #expect(found[0].keyPath == "databases.app.url")
        #expect(found[0].message.contains("APP_ADMIN_URL is not set"))
        #expect(found[0].location == SourceLocation(file: "test.yaml", line: 4, column: 10))
    }

    @Test func environmentDefaultsAndEscapes() throws {
        #expect(try EnvironmentExpansion.expand("${A:-x}/$${B}", environment: [:]).get() == "x/${B}")
        #expect(try EnvironmentExpansion.expand("a${A}b", environment: ["A": "1"]).get() == "a1b")
        #expect((try? EnvironmentExpansion.expand("${A", environment: [:]).get()) == nil)
        #expect((try? EnvironmentExpansion.expand("${1A}", environment: ["1A": "x"]).get()) == nil)
    }

    @Test func forbiddenAttributesAreRefusedByName() {
        for attribute in ["superuser", "createrole", "bypassrls", "replication", "createdb"] {
            let found = issues(
                contractExample.replacingOccurrences(of: "    connection_limit: 10", with: "    \(attribute): true"))
            #expect(found.count == 1)
            #expect(found[0].message.contains("can never be given \(attribute.uppercased())"), "\(found)")
        }
    }

    @Test func dangerousMembershipsAreRefused() {
        let found = issues(
            contractExample.replacingOccurrences(
                of: "    connection_limit: 10", with: "    member_of: [pg_execute_server_program, billing_writer]"))
        #expect(found.count == 2)
        #expect(found.contains { $0.message.contains("may not be a member of pg_execute_server_program") })
        #expect(found.contains { $0.message.contains("may not be members of each other") })
    }

    @Test func settingsThatChangeIdentityAreRefused() {
        let found = issues(
            contractExample.replacingOccurrences(of: "{statement_timeout: 30s}", with: "{role: postgres}"))
        #expect(found.count == 1)
        #expect(found[0].message.contains("cannot be set per role"))
    }

    @Test func columnsAndFutureOnlyWhereTheyApply() {
        let found = issues(
            """
            version: 1
            databases: {app: {url: "postgres://a@h/app"}}
            roles:
              r:
                grants:
                  - on: SCHEMA s
                    privileges: [USAGE]
                    columns: [a]
                  - on: TABLE s.t
                    privileges: [DELETE]
                    columns: [a]
                  - on: TABLE s.t
                    privileges: [SELECT]
                    future: true
            """)
        #expect(found.count == 3)
        #expect(found[0].message.contains("columns apply only to a single TABLE"))
        #expect(found[1].message.contains("DELETE cannot be granted on columns"))
        #expect(found[2].message.contains("future: true applies only to ALL"))
    }

    @Test func databaseIsRequiredWithSeveralDatabases() {
        let found = issues(
            """
            version: 1
            databases:
              a: {url: "postgres://a@h/a"}
              b: {url: "postgres://a@h/b"}
            roles:
              r: {grants: []}
              s: {database: c, grants: []}
            """)
        #expect(found.count == 2)
        #expect(found[0].message.contains("missing key 'database'"))
        #expect(found[1].message.contains("unknown database 'c'"))
    }

    @Test func versionAndShape() {
        #expect(issues("databases: {}").contains { $0.message.contains("missing key 'version'") })
        #expect(
            issues("version: 2\ndatabases: {a: {url: 'postgres://a@h/a'}}").contains {
                $0.message.contains("unsupported version 2")
            })
        #expect(issues("- a\n- b").first?.message.contains("expected the policy (a mapping)") == true)
        #expect(issues("").first?.message.contains("empty") == true)
    }

    @Test func yamlSyntaxErrorHasLineAndColumn() {
        let found = issues("version: 1\ndatabases:\n  app: {url: [unclosed\n")
        #expect(found.count == 1)
        #expect(found[0].message.hasPrefix("YAML syntax error"))
        #expect(found[0].location?.line == 4 || found[0].location?.line == 3)
    }

    @Test func duplicateKeysAreRefused() {
        let found = issues(contractExample + "\n  dashboard:\n    role: analytics_ro\n")
        #expect(found.count == 1)
        #expect(found[0].message.contains("duplicate key 'dashboard'"))
        #expect(found[0].location?.line == 31)
    }

    @Test func billionLaughsIsRefused() {
        // Ten merges of ten merges of ... nine levels deep: 10^9 mappings once expanded.
        var yaml =
            "version: 1\ndatabases: {app: {url: 'postgres://a@h/app'}}\nroles:\n  m0: &m0 {connection_limit: 1}\n"
        for i in 1...9 {
            let refs = Array(repeating: "*m\(i - 1)", count: 10).joined(separator: ", ")
            yaml += "  m\(i): &m\(i) {<<: [\(refs)]}\n"
        }
        let clock = ContinuousClock()
        let start = clock.now
        let found = issues(yaml)
        #expect(found.contains { $0.message.contains("expands to more than") })
        #expect(clock.now - start < .seconds(30))
    }

    @Test func mergeKeysAreHonoured() throws {
        let policy = try load(
            """
            version: 1
            databases: {app: {url: "postgres://a@h/app"}}
            roles:
              base: &base
                connection_limit: 5
                grants: [{on: SCHEMA public, privileges: [USAGE]}]
              other:
                <<: *base
                connection_limit: 7
            """)
        #expect(policy.role(named: "other")?.connectionLimit == 7)
        #expect(policy.role(named: "other")?.grants.count == 1)
    }

    @Test func urlProblemsNeverShowThePassword() {
        let found = issues(contractExample, environment: ["APP_ADMIN_URL": "mysql://admin:hunter2@h/app"])
        #expect(found.count == 1)
        #expect(found[0].message.contains("not a PostgreSQL URL"))
        #expect(!found[0].description.contains("hunter2"))
    }
}

@Suite(.ownThreads) struct GatewaySettingsTests {
    let base = """
        version: 1
        databases:
          app:
            url: ${APP_ADMIN_URL}

        """

    @Test func gatewaySectionIsRead() throws {
        let policy = try load(
            base + """
                gateway:
                  listen: 0.0.0.0:7432
                  tls_cert: certs/gw.crt
                  tls_key: certs/gw.key
                  require_tls: true
                  client_auth: password
                  client_login_timeout: 5s
                  max_client_connections: 300
                  max_client_connections_per_service: 20
                  pool_size: 8
                  server_idle_timeout: 2m
                  server_lifetime: 30m
                  server_connect_timeout: 3s
                  end_sessions_on_expiry: false
                  shutdown_grace: 30s
                  auth_failure_limit: 5
                  auth_failure_window: 10m
                  auth_failure_delay: 4s
                  http_body_timeout: 10s
                  http_idle_timeout: 2m
                  store_outage_policy: end_sessions
                """)
        let g = policy.gateway
        #expect(g.listen == "0.0.0.0:7432")
        #expect(g.tlsCert == "certs/gw.crt" && g.tlsKey == "certs/gw.key" && g.requireTLS == true)
        #expect(g.clientAuth == .password)
        #expect(g.clientLoginTimeout == .seconds(5))
        #expect(g.maxClientConnections == 300 && g.maxClientConnectionsPerService == 20 && g.poolSize == 8)
        #expect(g.serverIdleTimeout == .seconds(120) && g.serverLifetime == .seconds(1800))
        #expect(g.serverConnectTimeout == .seconds(3))
        #expect(g.endSessionsOnExpiry == false && g.shutdownGrace == .seconds(30))
        #expect(g.authFailureLimit == 5 && g.authFailureWindow == .seconds(600) && g.authFailureDelay == .seconds(4))
        #expect(g.httpBodyTimeout == .seconds(10) && g.httpIdleTimeout == .seconds(120))
        #expect(g.storeOutagePolicy == .endSessions)
        // Absent keys stay unset, so flags and built-in defaults apply.
        #expect(try load(base).gateway == GatewaySettings())
    }

    @Test func gatewayMistakesAreNamed() {
        let found = issues(
            base + """
                gateway:
                  listen: localhost
                  tls_cert: a.pem
                  client_auth: md5
                  pool_size: 0
                  server_lifetim: 1h
                  auth_failure_limit: -1
                  auth_failure_delay: 0s
                  server_connect_timeout: 0s
                  http_body_timeout: soon
                  store_outage_policy: ignore
                """)
        let text = found.map(\.description).joined(separator: "\n")
        #expect(text.contains("gateway.listen: expected host:port"), "\(text)")
        #expect(text.contains("tls_cert and tls_key go together"), "\(text)")
        #expect(text.contains("unknown client_auth 'md5' (use scram or password)"), "\(text)")
        #expect(text.contains("pool_size must be at least 1"), "\(text)")
        #expect(text.contains("did you mean 'server_lifetime'"), "\(text)")
        #expect(text.contains("auth_failure_limit must be 0 (off) or more"), "\(text)")
        #expect(text.contains("auth_failure_delay must be longer than zero"), "\(text)")
        #expect(text.contains("server_connect_timeout must be longer than zero"), "\(text)")
        #expect(text.contains("gateway.http_body_timeout"), "\(text)")
        #expect(
            text.contains("unknown store_outage_policy 'ignore' (use refuse_logins or end_sessions)"), "\(text)")
    }

    @Test func auditSectionIsReadAndChecked() throws {
        let policy = try load(
            base + """
                audit:
                  statements: false
                  parameters: true
                  on_failure: continue
                  retention: forever
                  queue_size: 500
                  instance: gw-eu-1
                """)
        #expect(!policy.audit.statements && policy.audit.parameters && policy.audit.onFailure == .continue)
        #expect(policy.audit.retention == nil && policy.audit.queueSize == 500 && policy.audit.instance == "gw-eu-1")
        #expect(try load(base).audit.retention == .seconds(90 * 86_400))
        let found = issues(
            base + """
                audit:
                  on_failure: ignore
                  retention: soon
                  queue_size: 5
                  enabled: maybe
                """)
        let text = found.map(\.description).joined(separator: "\n")
        #expect(text.contains("unknown on_failure 'ignore' (use block or continue)"), "\(text)")
        #expect(text.contains("expected a duration such as 90d, or 'forever', found 'soon'"), "\(text)")
        #expect(text.contains("queue_size must be at least 100"), "\(text)")
        #expect(text.contains("expected enabled (true or false), found 'maybe'"), "\(text)")
    }

    @Test func adminServicesBindToNoRole() throws {
        let policy = try load(base + "services:\n  ops: {admin: true}\n")
        #expect(policy.service(named: "ops")?.admin == true && policy.service(named: "ops")?.role == "")
        let both = issues(
            base + """
                roles:
                  r: {grants: []}
                services:
                  ops: {admin: true, role: r}
                  plain: {token_ttl: 1h}
                """)
        let text = both.map(\.description).joined(separator: "\n")
        #expect(text.contains("an admin service binds to no database role"), "\(text)")
        #expect(text.contains("missing key 'role'"), "\(text)")
    }
}

@Suite(.ownThreads) struct SCRAMIterationPolicyTests {
    @Test func servicesDefaultToSCRAMsUsualRoundsAndMayLowerThem() throws {
        let policy = try load(
            contractExample.replacingOccurrences(
                of: "    role: billing_writer\n", with: "    role: billing_writer\n    scram_iterations: 16\n"))
        #expect(policy.service(named: "dashboard")?.scramIterations == 4096)
        #expect(policy.service(named: "billing-api")?.scramIterations == 16)
    }

    @Test(arguments: ["0", "-3", "1000001", "many"])
    func outOfRangeOrNotANumberIsNamed(value: String) {
        let found = issues(
            contractExample.replacingOccurrences(
                of: "    role: billing_writer\n", with: "    role: billing_writer\n    scram_iterations: \(value)\n"))
        #expect(found.count == 1)
        #expect(found.first?.keyPath == "services.billing-api.scram_iterations")
        #expect(found.first?.message.contains(value == "many" ? "whole number" : "between 1 and 100000") == true)
    }
}
