import Foundation
import Yams

/// Reads `rolegate.yaml` into a validated ``Policy``. Validation is strict and complete:
/// every problem is reported with file, line, column and key, and nothing is returned
/// unless there are none.
public enum PolicyLoader {
    /// Largest policy file read (a policy is hand-written text; anything bigger is a mistake).
    public static let maxFileBytes = 4 << 20
    /// Most YAML nodes walked, aliases expanded. Guards against alias bombs.
    public static let nodeBudget = 200_000

    /// Where the policy file is: `--config`, else `ROLEGATE_CONFIG`, else `./rolegate.yaml`.
    public static func resolvePath(explicit: String?, environment: [String: String]) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if let fromEnv = environment["ROLEGATE_CONFIG"], !fromEnv.isEmpty { return fromEnv }
        return "rolegate.yaml"
    }

    public static func load(path: String, environment: [String: String]) throws(PolicyError) -> Policy {
        let data: Data
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            if let size = attributes[.size] as? Int, size > maxFileBytes {
                throw PolicyError(
                    PolicyIssue(
                        location: nil, keyPath: "",
                        message: "\(path) is \(size) bytes; a policy file is at most \(maxFileBytes) bytes"))
            }
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch let error as PolicyError {
            throw error
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? "\(error.localizedDescription)"
            let exists = FileManager.default.fileExists(atPath: path)
            throw PolicyError(
                PolicyIssue(
                    location: nil, keyPath: "",
                    message: exists
                        ? "cannot read policy file \(path): \(reason)"
                        : "policy file \(path) not found (set --config or ROLEGATE_CONFIG, or run 'rolegate init')"))
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw PolicyError(PolicyIssue(location: nil, keyPath: "", message: "\(path) is not valid UTF-8"))
        }
        return try parse(text: text, file: path, environment: environment)
    }

    public static func parse(text: String, file: String, environment: [String: String]) throws(PolicyError) -> Policy {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw PolicyError(syntaxIssue(error, file: file))
        } catch {
            throw PolicyError(PolicyIssue(location: nil, keyPath: "", message: "cannot parse YAML: \(error)"))
        }
        guard let root else {
            throw PolicyError(
                PolicyIssue(
                    location: SourceLocation(file: file, line: 1, column: 1), keyPath: "",
                    message: "the policy file is empty"))
        }
        let report = YAMLReport(file: file, environment: environment, budget: nodeBudget)
        let policy = build(YAMLValue(node: root, path: "", report: report), file: file)
        if !report.issues.isEmpty || policy == nil {
            throw PolicyError(issues: report.issues)
        }
        return policy!
    }

    static func syntaxIssue(_ error: YamlError, file: String) -> PolicyIssue {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let ctx = context.map { "\($0.text) " } ?? ""
            return PolicyIssue(
                location: SourceLocation(file: file, line: mark.line, column: mark.column), keyPath: "",
                message: "YAML syntax error: \(ctx)\(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            return PolicyIssue(
                location: SourceLocation(file: file, line: context.mark.line, column: context.mark.column), keyPath: "",
                message: "duplicate key \(keys) in the same mapping (first at this position)")
        default:
            return PolicyIssue(location: nil, keyPath: "", message: "YAML error: \(error)")
        }
    }

    // MARK: - Shapes

    static let topKeys: Set<String> = [
        "version", "databases", "roles", "services", "master_key_file", "store", "gateway", "audit", "trust",
        "people", "groups", "access", "webhooks", "console",
    ]
    static let databaseKeys: Set<String> = ["url", "future_owners", "description", "upstream_auth"]
    static let roleKeys: Set<String> = [
        "database", "description", "connection_limit", "settings", "grants", "member_of", "shared", "adopt",
    ]
    static let grantKeys: Set<String> = ["on", "privileges", "columns", "future"]
    static let serviceKeys: Set<String> = [
        "role", "admin", "token_ttl", "max_token_ttl", "grace", "max_grace", "scram_iterations", "description",
        "identity", "max_live_tokens", "mcp",
    ]

    private static func build(_ root: YAMLValue, file: String) -> Policy? {
        guard let top = root.mapping(allowed: topKeys, what: "the policy") else { return nil }
        let entries = Dictionary(top.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })

        if let version = entries["version"] {
            if let v = version.int(what: "the policy format version"), v != Policy.currentVersion {
                version.fail("unsupported version \(v); this Rolegate reads version \(Policy.currentVersion)")
            }
        } else {
            root.report.add(root.node, "version", "missing key 'version' (write 'version: 1')")
        }

        var databases: [DatabaseSpec] = []
        var databaseNames: [String] = []
        if let value = entries["databases"] {
            databaseNames = declaredNames(value)
            databases = buildDatabases(value)
            if databases.isEmpty, root.report.issues.isEmpty { value.fail("declare at least one database") }
        } else {
            root.report.add(root.node, "databases", "missing key 'databases'")
        }

        let roles = entries["roles"].map { buildRoles($0, databaseNames: databaseNames) } ?? []
        let roleNames = entries["roles"].map(declaredNames) ?? []
        let trusts = entries["trust"].map(IdentityPolicyLoader.buildTrusts) ?? []
        let trustNames = entries["trust"].map(declaredNames) ?? []
        let services =
            entries["services"].map { buildServices($0, roles: roles, roleNames: roleNames, trustNames: trustNames) }
            ?? []
        let people =
            entries["people"].map {
                IdentityPolicyLoader.buildPeople(
                    $0, roleNames: roleNames, trusts: trusts, trustNames: trustNames, services: services)
            } ?? []
        let groups =
            entries["groups"].map {
                IdentityPolicyLoader.buildGroups($0, roleNames: roleNames, trusts: trusts, trustNames: trustNames)
            } ?? []
        IdentityPolicyLoader.checkRoleBindings(
            people: people, groups: groups, services: services, roles: roles, report: root.report)

        let masterKeyFile = entries["master_key_file"]?.string(what: "a file path")
        var store: String?
        if let storeValue = entries["store"], let text = storeValue.string(what: "a store location") {
            if text.hasPrefix("sqlite:") || text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
                if !text.hasPrefix("sqlite:"), let problem = ConnectionURL.problem(text) { storeValue.fail(problem) }
                store = text
            } else {
                storeValue.fail(
                    "unknown store '\(ConnectionURL.redact(text))' (use sqlite:PATH or postgres://user@host/db)")
            }
        }

        let gateway = entries["gateway"].map(buildGateway) ?? GatewaySettings()

        var policy = Policy(
            version: Policy.currentVersion, databases: databases, roles: roles, services: services,
            masterKeyFile: masterKeyFile, store: store, sourcePath: file)
        policy.gateway = gateway
        policy.audit = entries["audit"].map(buildAudit) ?? AuditSettings()
        policy.trusts = trusts
        policy.people = people
        policy.groups = groups
        policy.access =
            entries["access"].map {
                AccessPolicyLoader.buildAccess($0, roleNames: roleNames, services: services, roles: roles)
            } ?? []
        policy.webhooks = entries["webhooks"].map(AccessPolicyLoader.buildWebhooks) ?? []
        policy.console = entries["console"].map { AccessPolicyLoader.buildConsole($0, services: services) } ?? .init()
        return policy
    }

    private static func buildAudit(_ value: YAMLValue) -> AuditSettings {
        var settings = AuditSettings()
        guard let fields = value.mapping(allowed: AuditSettings.keys, what: "the audit settings") else {
            return settings
        }
        let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        if let enabled = f["enabled"]?.bool(what: "enabled") { settings.enabled = enabled }
        if let statements = f["statements"]?.bool(what: "statements") { settings.statements = statements }
        if let parameters = f["parameters"]?.bool(what: "parameters") { settings.parameters = parameters }
        if let field = f["on_failure"], let text = field.string(what: "block or continue") {
            if let value = AuditSettings.OnFailure(rawValue: text) {
                settings.onFailure = value
            } else {
                field.fail("unknown on_failure '\(text)' (use block or continue)")
            }
        }
        if let field = f["retention"], let text = field.string(what: "a duration or 'forever'") {
            if text == "forever" {
                settings.retention = nil
            } else if let duration = try? DurationText.parse(text), duration > .zero {
                settings.retention = duration
            } else {
                field.fail("expected a duration such as 90d, or 'forever', found '\(text)'")
            }
        }
        if let field = f["queue_size"], let size = field.int(what: "queue_size") {
            if size < 100 { field.fail("queue_size must be at least 100") } else { settings.queueSize = size }
        }
        if let field = f["instance"], let name = field.string(what: "an instance name") {
            if name.isEmpty || name.count > 200 {
                field.fail("instance must be 1 to 200 characters")
            } else {
                settings.instance = name
            }
        }
        return settings
    }

    /// A `host:port` value (port 0 to 65535), or nil with an issue reported.
    private static func hostPort(_ field: YAMLValue?, example: String) -> String? {
        guard let field, let text = field.string(what: "host:port") else { return nil }
        guard HostPort.parse(text) != nil else {
            field.fail("expected host:port (e.g. \(example)), found '\(text)'")
            return nil
        }
        return text
    }

    private static func buildGateway(_ value: YAMLValue) -> GatewaySettings {
        var settings = GatewaySettings()
        guard let fields = value.mapping(allowed: GatewaySettings.keys, what: "the gateway settings") else {
            return settings
        }
        let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        settings.listen = hostPort(f["listen"], example: "127.0.0.1:6432")
        settings.http = hostPort(f["http"], example: "127.0.0.1:8080")
        settings.tlsCert = f["tls_cert"]?.string(what: "a PEM file path")
        settings.tlsKey = f["tls_key"]?.string(what: "a PEM file path")
        settings.httpTLSCert = f["http_tls_cert"]?.string(what: "a PEM file path")
        settings.httpTLSKey = f["http_tls_key"]?.string(what: "a PEM file path")
        if (settings.httpTLSCert == nil) != (settings.httpTLSKey == nil) {
            (f["http_tls_cert"] ?? f["http_tls_key"] ?? value).fail("http_tls_cert and http_tls_key go together")
        }
        if (settings.tlsCert == nil) != (settings.tlsKey == nil) {
            (f["tls_cert"] ?? f["tls_key"] ?? value).fail("tls_cert and tls_key go together")
        }
        settings.requireTLS = f["require_tls"]?.bool(what: "require_tls")
        if settings.requireTLS == true, settings.tlsCert == nil {
            f["require_tls"]?.fail("require_tls needs tls_cert and tls_key")
        }
        if let auth = f["client_auth"], let text = auth.string(what: "scram or password") {
            settings.clientAuth = GatewaySettings.ClientAuth(rawValue: text)
            if settings.clientAuth == nil { auth.fail("unknown client_auth '\(text)' (use scram or password)") }
        }
        settings.allowCleartextOnLoopback = f["allow_cleartext_on_loopback"]?.bool(what: "allow_cleartext_on_loopback")
        settings.endSessionsOnExpiry = f["end_sessions_on_expiry"]?.bool(what: "end_sessions_on_expiry")
        settings.tagApplicationName = f["tag_application_name"]?.bool(what: "tag_application_name")
        func positive(_ key: String) -> Int? {
            guard let field = f[key], let number = field.int(what: key) else { return nil }
            if number < 1 { field.fail("\(key) must be at least 1") }
            return number
        }
        settings.maxClientConnections = positive("max_client_connections")
        settings.maxClientConnectionsPerService = positive("max_client_connections_per_service")
        settings.poolSize = positive("pool_size")
        func duration(_ key: String) -> Duration? {
            guard let field = f[key], let value = field.duration(what: "a duration") else { return nil }
            if value <= .zero { field.fail("\(key) must be longer than zero") }
            return value
        }
        settings.clientLoginTimeout = duration("client_login_timeout")
        settings.serverIdleTimeout = duration("server_idle_timeout")
        settings.serverLifetime = duration("server_lifetime")
        settings.serverConnectTimeout = duration("server_connect_timeout")
        settings.shutdownGrace = f["shutdown_grace"]?.duration(what: "a duration")
        if let field = f["auth_failure_limit"], let number = field.int(what: "auth_failure_limit") {
            if number < 0 { field.fail("auth_failure_limit must be 0 (off) or more") }
            settings.authFailureLimit = number
        }
        settings.authFailureWindow = duration("auth_failure_window")
        settings.authFailureDelay = duration("auth_failure_delay")
        settings.httpBodyTimeout = duration("http_body_timeout")
        settings.httpIdleTimeout = duration("http_idle_timeout")
        if let field = f["mcp_allowed_origins"], let origins = field.stringList(what: "origins") {
            for origin in origins {
                let url = URL(string: origin)
                let scheme = url?.scheme?.lowercased()
                if url?.host == nil || (scheme != "https" && scheme != "http") || url?.path.isEmpty == false
                    || url?.query != nil
                {
                    field.fail("'\(origin)' is not an origin (scheme://host[:port], e.g. https://agent.example.com)")
                }
            }
            settings.mcpAllowedOrigins = origins
        }
        if let field = f["store_outage_policy"], let text = field.string(what: "refuse_logins or end_sessions") {
            settings.storeOutagePolicy = GatewaySettings.StoreOutagePolicy(rawValue: text)
            if settings.storeOutagePolicy == nil {
                field.fail("unknown store_outage_policy '\(text)' (use refuse_logins or end_sessions)")
            }
        }
        return settings
    }

    /// The keys of a mapping, whether or not their values are valid: later sections check
    /// references against these, so one mistake is reported once, not at every use.
    static func declaredNames(_ value: YAMLValue) -> [String] {
        guard case .mapping(let mapping) = value.node else { return [] }
        return mapping.compactMap { $0.key.scalar?.string }
    }

    private static func buildDatabases(_ value: YAMLValue) -> [DatabaseSpec] {
        guard let items = value.mapping(what: "databases by name") else { return [] }
        var result: [DatabaseSpec] = []
        for (name, spec) in items {
            if let problem = NameRules.identifierProblem(name) {
                spec.fail("database name: \(problem)")
                continue
            }
            let before = spec.report.issues.count
            guard let fields = spec.mapping(allowed: databaseKeys, what: "a database") else { continue }
            if spec.report.issues.count > before { continue }
            let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let urlValue = f["url"] else {
                spec.fail("missing key 'url' (the admin connection, e.g. postgres://admin@host:5432/\(name))")
                continue
            }
            guard let url = urlValue.string(what: "a connection URL") else { continue }
            if let problem = ConnectionURL.problem(url) {
                urlValue.fail(problem)
                continue
            }
            var owners: [String] = []
            if let ownersValue = f["future_owners"], let list = ownersValue.stringList(what: "role names") {
                for owner in list {
                    if let problem = NameRules.identifierProblem(owner) { ownersValue.fail(problem) }
                }
                owners = list
            }
            _ = f["description"]?.string(what: "a description")
            var upstreamAuth: UpstreamAuthMethods?
            if let authValue = f["upstream_auth"],
                let list = authValue.stringList(what: "authentication methods (scram-sha-256, md5, password, none)")
            {
                do {
                    let methods = try UpstreamAuthMethods(
                        names: list.flatMap { $0.split(separator: ",").map(String.init) })
                    let fromURL = (try? ConnectionURL(parsing: url))?.requireAuth
                    if let fromURL, fromURL != methods {
                        authValue.fail(
                            "upstream_auth [\(methods)] contradicts the URL's require_auth=\(fromURL): keep one of them"
                        )
                    }
                    upstreamAuth = methods
                } catch {
                    authValue.fail("upstream_auth: \(error.description)")
                }
            }
            result.append(
                DatabaseSpec(
                    name: name, url: url, futureOwners: owners, upstreamAuth: upstreamAuth, location: spec.location))
        }
        return result
    }

    private static func buildRoles(_ value: YAMLValue, databaseNames: [String]) -> [RoleSpec] {
        guard let items = value.mapping(what: "roles by name") else { return [] }
        var result: [RoleSpec] = []
        let attributeKeys = Set(NameRules.forbiddenAttributes.map { $0.lowercased() })
        for (name, spec) in items {
            if let problem = NameRules.roleNameProblem(name) {
                spec.fail("role name: \(problem)")
                continue
            }
            // Name the forbidden attributes explicitly rather than as unknown keys.
            if case .mapping(let m) = spec.node {
                for (k, _) in m {
                    if let key = k.string, attributeKeys.contains(key.lowercased()) {
                        spec.report.add(
                            k, "\(spec.path).\(key)",
                            "managed roles can never be given \(key.uppercased()) (nor any of \(NameRules.forbiddenAttributes.joined(separator: ", ")))"
                        )
                    }
                }
            }
            let allowed = roleKeys.union(attributeKeys)
            guard let fields = spec.mapping(allowed: allowed, what: "a role") else { continue }
            let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            if fields.contains(where: { attributeKeys.contains($0.key.lowercased()) }) { continue }

            var database: String?
            if let dbValue = f["database"] {
                if let db = dbValue.string(what: "a database name") {
                    if databaseNames.contains(db) {
                        database = db
                    } else {
                        let known = databaseNames.joined(separator: ", ")
                        dbValue.fail("unknown database '\(db)'; declared databases: \(known.isEmpty ? "none" : known)")
                    }
                }
            } else if databaseNames.count == 1 {
                database = databaseNames[0]
            } else if databaseNames.count > 1 {
                spec.fail("missing key 'database' (required when the policy declares more than one database)")
            }

            var connectionLimit = -1
            if let limitValue = f["connection_limit"], let limit = limitValue.int(what: "a connection limit") {
                if limit < -1 {
                    limitValue.fail("connection_limit must be -1 (unlimited) or more, not \(limit)")
                } else {
                    connectionLimit = limit
                }
            }

            var settings: [RoleSetting] = []
            if let settingsValue = f["settings"], let entries = settingsValue.mapping(what: "settings by name") {
                for (key, v) in entries {
                    if let problem = NameRules.settingNameProblem(key) {
                        v.fail(problem)
                        continue
                    }
                    guard let text = v.string(what: "a setting value") else { continue }
                    settings.append(RoleSetting(name: key, value: text))
                }
            }

            var grants: [GrantSpec] = []
            if let grantsValue = f["grants"], let list = grantsValue.list(what: "grants") {
                grants = list.compactMap(buildGrant)
            }

            var memberOf: [String] = []
            if let memberValue = f["member_of"], let list = memberValue.stringList(what: "role names") {
                for other in list {
                    if let problem = NameRules.identifierProblem(other) {
                        memberValue.fail(problem)
                    } else if NameRules.forbiddenMemberships.contains(other.lowercased()) {
                        memberValue.fail("a managed role may not be a member of \(other)")
                    } else if other == name {
                        memberValue.fail("a role cannot be a member of itself")
                    } else {
                        memberOf.append(other)
                    }
                }
            }

            let shared = f["shared"]?.bool(what: "shared") ?? false
            let adopt = f["adopt"]?.bool(what: "adopt") ?? false
            let description = f["description"]?.string(what: "a description")

            guard let database else { continue }
            result.append(
                RoleSpec(
                    name: name, database: database, description: description, connectionLimit: connectionLimit,
                    settings: settings, grants: grants, memberOf: memberOf, shared: shared, adopt: adopt,
                    location: spec.location))
        }
        // A managed role may not join another managed role: one service, one role.
        let managed = Set(result.map(\.name))
        for role in result {
            for other in role.memberOf where managed.contains(other) {
                value.report.issues.append(
                    PolicyIssue(
                        location: role.location, keyPath: "roles.\(role.name).member_of",
                        message: "'\(other)' is a role of this policy; managed roles may not be members of each other"))
            }
        }
        return result
    }

    private static func buildGrant(_ value: YAMLValue) -> GrantSpec? {
        let before = value.report.issues.count
        guard let fields = value.mapping(allowed: grantKeys, what: "a grant") else { return nil }
        // An unknown key (a typo) already explains a missing one.
        if value.report.issues.count > before { return nil }
        let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let onValue = f["on"] else {
            value.fail("missing key 'on' (e.g. on: TABLE billing.invoices)")
            return nil
        }
        guard let onText = onValue.string(what: "an object") else { return nil }
        let target: GrantTarget
        do {
            target = try GrantTarget.parse(onText)
        } catch {
            onValue.fail("'\(onText)': \(error.message)")
            return nil
        }
        guard let privilegesValue = f["privileges"] else {
            value.fail("missing key 'privileges' (e.g. privileges: [SELECT])")
            return nil
        }
        guard let words = privilegesValue.stringList(what: "privileges") else { return nil }
        let allowed = target.kind.allowedPrivileges
        var privileges: [Privilege] = []
        var ok = true
        for word in words {
            let upper = word.uppercased().trimmingCharacters(in: .whitespaces)
            if upper == "ALL" || upper == "ALL PRIVILEGES" {
                privileges.append(contentsOf: allowed)
                continue
            }
            guard let privilege = Privilege(policyText: word), allowed.contains(privilege) else {
                privilegesValue.fail(
                    "privilege \(word.uppercased()) does not apply to \(target.kind.rawValue) (allowed: \(allowed.map(\.rawValue).joined(separator: ", ")), ALL)"
                )
                ok = false
                continue
            }
            privileges.append(privilege)
        }
        if words.isEmpty {
            privilegesValue.fail("list at least one privilege")
            ok = false
        }
        var columns: [String]?
        if let columnsValue = f["columns"] {
            guard case .table = target else {
                columnsValue.fail("columns apply only to a single TABLE, not to \(target)")
                return nil
            }
            guard let list = columnsValue.stringList(what: "column names") else { return nil }
            if list.isEmpty {
                columnsValue.fail("list at least one column, or leave out 'columns' for the whole table")
                ok = false
            }
            for column in list {
                if let problem = NameRules.identifierProblem(column) {
                    columnsValue.fail(problem)
                    ok = false
                }
            }
            for privilege in privileges where !Privilege.columnPrivileges.contains(privilege) {
                privilegesValue.fail(
                    "privilege \(privilege.rawValue) cannot be granted on columns (allowed: \(Privilege.columnPrivileges.map(\.rawValue).joined(separator: ", ")))"
                )
                ok = false
            }
            columns = list
        }
        var future = false
        if let futureValue = f["future"], let flag = futureValue.bool(what: "future") {
            if flag, !target.isSchemaWide {
                futureValue.fail(
                    "future: true applies only to ALL TABLES|SEQUENCES|FUNCTIONS IN SCHEMA, not to \(target)")
                ok = false
            }
            future = flag
        }
        guard ok else { return nil }
        var unique: [Privilege] = []
        for p in privileges where !unique.contains(p) { unique.append(p) }
        return GrantSpec(target: target, privileges: unique, columns: columns, future: future, location: value.location)
    }

    /// `mcp: true`, or `mcp: {max_rows: N, statement_timeout: D, explain_analyze: BOOL}`
    /// (which also turns it on); `mcp: false` or absent: off.
    private static func buildMCP(_ value: YAMLValue) -> MCPSettings? {
        if case .scalar = value.node {
            guard let on = value.bool(what: "mcp") else { return nil }
            return on ? MCPSettings() : nil
        }
        guard let fields = value.mapping(allowed: MCPSettings.keys, what: "the service's MCP settings") else {
            return nil
        }
        let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        var settings = MCPSettings()
        if let field = f["max_rows"], let rows = field.int(what: "max_rows") {
            if rows < 1 || rows > 100_000 {
                field.fail("max_rows must be between 1 and 100000")
            } else {
                settings.maxRows = rows
            }
        }
        if let field = f["statement_timeout"], let timeout = field.duration(what: "a duration") {
            if timeout <= .zero {
                field.fail("statement_timeout must be longer than zero")
            } else {
                settings.statementTimeout = timeout
            }
        }
        if let flag = f["explain_analyze"]?.bool(what: "explain_analyze") { settings.explainAnalyze = flag }
        return settings
    }

    private static func buildServices(
        _ value: YAMLValue, roles: [RoleSpec], roleNames: [String], trustNames: [String]
    ) -> [ServiceSpec] {
        guard let items = value.mapping(what: "services by name") else { return [] }
        var result: [ServiceSpec] = []
        var boundBy: [String: String] = [:]
        for (name, spec) in items {
            if let problem = NameRules.serviceNameProblem(name) {
                spec.fail(problem)
                continue
            }
            let before = spec.report.issues.count
            guard let fields = spec.mapping(allowed: serviceKeys, what: "a service") else { continue }
            if spec.report.issues.count > before { continue }
            let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            let identity = f["identity"].flatMap { IdentityPolicyLoader.buildIdentity($0, trustNames: trustNames) }
            let mcp = f["mcp"].flatMap(buildMCP)
            let maxLiveTokens = IdentityPolicyLoader.maxLiveTokens(f, hasIdentity: f["identity"] != nil)
            let admin = f["admin"]?.bool(what: "admin") ?? false
            if admin {
                // An admin service administers Rolegate over HTTP and never reaches a database.
                if let roleValue = f["role"] {
                    roleValue.fail(
                        "an admin service binds to no database role: remove 'role', or remove 'admin: true' to make it a data service"
                    )
                    continue
                }
                result.append(
                    ServiceSpec(
                        name: name, role: "", admin: true,
                        tokenTTL: f["token_ttl"]?.duration(what: "a duration") ?? ServiceSpec.defaultTokenTTL,
                        maxTokenTTL: f["max_token_ttl"]?.duration(what: "a duration")
                            ?? max(
                                ServiceSpec.defaultMaxTokenTTL, f["token_ttl"]?.duration(what: "a duration") ?? .zero),
                        grace: f["grace"]?.duration(what: "a duration") ?? ServiceSpec.defaultGrace,
                        maxGrace: f["max_grace"]?.duration(what: "a duration") ?? ServiceSpec.defaultMaxGrace,
                        identity: identity, maxLiveTokens: maxLiveTokens,
                        description: f["description"]?.string(what: "a description"), location: spec.location))
                if mcp != nil { f["mcp"]?.fail("an admin service reaches no database: MCP is for data services") }
                continue
            }
            guard let roleValue = f["role"] else {
                spec.fail(
                    "missing key 'role': every service is bound to exactly one role (or is an admin service: 'admin: true')"
                )
                continue
            }
            guard let roleName = roleValue.string(what: "a role name") else { continue }
            guard roleNames.contains(roleName) else {
                let known = roleNames.joined(separator: ", ")
                roleValue.fail("unknown role '\(roleName)'; declared roles: \(known.isEmpty ? "none" : known)")
                continue
            }
            let shared = roles.first(where: { $0.name == roleName })?.shared ?? false
            if let other = boundBy[roleName], !shared {
                roleValue.fail(
                    "role '\(roleName)' is already bound to service '\(other)'; one service, one role (or mark the role 'shared: true')"
                )
                continue
            }
            boundBy[roleName] = boundBy[roleName] ?? name
            let defaultTTL = f["identity"] != nil ? ServiceSpec.defaultIdentityTokenTTL : ServiceSpec.defaultTokenTTL
            let ttl = f["token_ttl"]?.duration(what: "a duration") ?? defaultTTL
            let maxTTL = f["max_token_ttl"]?.duration(what: "a duration") ?? max(ServiceSpec.defaultMaxTokenTTL, ttl)
            if ttl <= .zero {
                f["token_ttl"]?.fail("token_ttl must be longer than zero: every token expires, none lives forever")
            }
            if ttl > maxTTL {
                (f["token_ttl"] ?? spec).fail(
                    "token_ttl \(DurationText.format(ttl)) is longer than max_token_ttl \(DurationText.format(maxTTL))")
            }
            let grace = f["grace"]?.duration(what: "a duration") ?? ServiceSpec.defaultGrace
            let maxGrace = f["max_grace"]?.duration(what: "a duration") ?? max(ServiceSpec.defaultMaxGrace, grace)
            if grace > maxGrace {
                (f["grace"] ?? spec).fail(
                    "grace \(DurationText.format(grace)) is longer than max_grace \(DurationText.format(maxGrace))")
            }
            var iterations = ServiceSpec.defaultSCRAMIterations
            if let field = f["scram_iterations"], let number = field.int(what: "scram_iterations") {
                let range = ServiceSpec.scramIterationRange
                if range.contains(number) {
                    iterations = number
                } else {
                    field.fail(
                        "scram_iterations must be between \(range.lowerBound) and \(range.upperBound), found \(number)")
                }
            }
            let description = f["description"]?.string(what: "a description")
            result.append(
                ServiceSpec(
                    name: name, role: roleName, tokenTTL: ttl, maxTokenTTL: maxTTL, grace: grace, maxGrace: maxGrace,
                    scramIterations: iterations, identity: identity, maxLiveTokens: maxLiveTokens, mcp: mcp,
                    description: description, location: spec.location))
        }
        return result
    }
}
