/// The policy file, `rolegate.yaml`, as a validated value: databases, least-privilege
/// roles and the services bound to them. Built by ``PolicyLoader``; every value in it
/// has passed validation, so later stages never re-check shapes.
public struct Policy: Sendable {
    public static let currentVersion = 1

    public var version: Int
    public var databases: [DatabaseSpec]
    public var roles: [RoleSpec]
    public var services: [ServiceSpec]
    /// `master_key_file:` as written (relative paths are relative to the policy file).
    public var masterKeyFile: String?
    /// `store:` as written: `sqlite:PATH` or `postgres://…`.
    public var store: String?
    /// The file this policy was read from.
    public var sourcePath: String
    /// `gateway:`: how `rolegate serve` runs (flags override it).
    public var gateway = GatewaySettings()
    /// `audit:`: what the audit log records.
    public var audit = AuditSettings()
    /// `trust:`: the OpenID Connect issuers whose tokens may be exchanged for Rolegate's.
    public var trusts: [TrustedIssuer] = []
    /// `people:`: people bound to a role, who log in through a trusted issuer.
    public var people: [PersonSpec] = []
    /// `groups:`: the role of everyone in a group of a trusted issuer.
    public var groups: [GroupSpec] = []
    /// `access:`: more privilege for a bounded time, after approval.
    public var access: [AccessSpec] = []
    /// `webhooks:`: where access request events are delivered, signed.
    public var webhooks: [WebhookSpec] = []
    /// `console:`: who may see and act in the web console.
    public var console = ConsoleSettings()

    public init(
        version: Int = Policy.currentVersion,
        databases: [DatabaseSpec],
        roles: [RoleSpec],
        services: [ServiceSpec],
        masterKeyFile: String? = nil,
        store: String? = nil,
        sourcePath: String = "rolegate.yaml"
    ) {
        self.store = store
        self.version = version
        self.databases = databases
        self.roles = roles
        self.services = services
        self.masterKeyFile = masterKeyFile
        self.sourcePath = sourcePath
    }

    public func database(named name: String) -> DatabaseSpec? {
        databases.first { $0.name == name }
    }

    public func role(named name: String) -> RoleSpec? {
        roles.first { $0.name == name }
    }

    public func roles(in database: String) -> [RoleSpec] {
        roles.filter { $0.database == database }
    }

    public func service(named name: String) -> ServiceSpec? {
        services.first { $0.name == name }
    }

    public func trust(named name: String) -> TrustedIssuer? {
        trusts.first { $0.name == name }
    }

    public func person(named name: String) -> PersonSpec? {
        people.first { $0.name == name }
    }

    public func access(named name: String) -> AccessSpec? {
        access.first { $0.name == name }
    }

    /// What a token is bound to, by its binding key (``TokenRecord/bindingKey``): a service or a
    /// person by name, a group's members by `group:<name>`. A token is accepted only while its
    /// key is here with the token's role: a service, person or group that leaves the policy, or
    /// is bound to another role, stops working at once.
    public var bindings: [String: String] {
        var bindings = Dictionary(services.map { ($0.name, $0.role) }, uniquingKeysWith: { first, _ in first })
        for person in people where bindings[person.name] == nil { bindings[person.name] = person.role }
        for group in groups { bindings[group.grant] = group.role }
        for grant in access { bindings[grant.grant] = grant.role }
        return bindings
    }

    /// Whether `user` may hold tokens at all: a service or a person of the policy, or anyone
    /// when ``outsidersMayHoldTokens``.
    public func mayHoldTokens(_ user: String) -> Bool {
        service(named: user) != nil || person(named: user) != nil || outsidersMayHoldTokens
    }

    /// Names the policy does not list may hold tokens: a group's members, and requesters of
    /// access grants (by group).
    public var outsidersMayHoldTokens: Bool { !groups.isEmpty || !access.isEmpty }
}

/// `databases.<name>`: a database clients reach by `<name>`, and how Rolegate administers it.
public struct DatabaseSpec: Sendable {
    /// The key in the policy: the `dbname` clients will use.
    public var name: String
    /// The admin connection URL, with `${VAR}` already expanded. It may hold a password:
    /// print ``redactedURL`` instead.
    public var url: String
    /// Roles whose future objects `future: true` grants cover (`ALTER DEFAULT PRIVILEGES
    /// FOR ROLE ...`). Empty means: the admin user of `url`.
    public var futureOwners: [String]
    /// How the gateway may log in to this server as a managed role (`upstream_auth:`, else the
    /// URL's `require_auth`, else SCRAM-SHA-256 only).
    public var upstreamAuth: UpstreamAuthMethods
    public var location: SourceLocation?

    public init(
        name: String, url: String, futureOwners: [String] = [], upstreamAuth: UpstreamAuthMethods? = nil,
        location: SourceLocation? = nil
    ) {
        self.name = name
        self.url = url
        self.futureOwners = futureOwners
        self.upstreamAuth = upstreamAuth ?? (try? ConnectionURL(parsing: url))?.requireAuth ?? .standard
        self.location = location
    }

    /// The URL with any password replaced by `***`.
    public var redactedURL: String { ConnectionURL.redact(url) }
}

/// `roles.<name>`: one least-privilege PostgreSQL role that Rolegate creates and owns.
public struct RoleSpec: Sendable {
    public var name: String
    /// The policy database this role lives in.
    public var database: String
    public var description: String?
    /// `CONNECTION LIMIT`; -1 is unlimited (PostgreSQL's default).
    public var connectionLimit: Int
    /// `ALTER ROLE ... SET name = value`, in file order.
    public var settings: [RoleSetting]
    public var grants: [GrantSpec]
    /// Roles this role is a member of (`GRANT other TO role`), e.g. `pg_read_all_stats`.
    public var memberOf: [String]
    /// May be bound to more than one service.
    public var shared: Bool
    /// Take over an existing role of this name that Rolegate did not create.
    public var adopt: Bool
    public var location: SourceLocation?

    public init(
        name: String,
        database: String,
        description: String? = nil,
        connectionLimit: Int = -1,
        settings: [RoleSetting] = [],
        grants: [GrantSpec] = [],
        memberOf: [String] = [],
        shared: Bool = false,
        adopt: Bool = false,
        location: SourceLocation? = nil
    ) {
        self.name = name
        self.database = database
        self.description = description
        self.connectionLimit = connectionLimit
        self.settings = settings
        self.grants = grants
        self.memberOf = memberOf
        self.shared = shared
        self.adopt = adopt
        self.location = location
    }
}

public struct RoleSetting: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// One entry of `grants:`.
public struct GrantSpec: Sendable {
    public var target: GrantTarget
    public var privileges: [Privilege]
    /// Column-level grant (only with `TABLE`); exact column names.
    public var columns: [String]?
    /// Also `ALTER DEFAULT PRIVILEGES` for objects created later (only with `ALL ... IN SCHEMA`).
    public var future: Bool
    public var location: SourceLocation?

    public init(
        target: GrantTarget,
        privileges: [Privilege],
        columns: [String]? = nil,
        future: Bool = false,
        location: SourceLocation? = nil
    ) {
        self.target = target
        self.privileges = privileges
        self.columns = columns
        self.future = future
        self.location = location
    }
}

/// `services.<name>`: a caller that holds one token bound to one role.
public struct ServiceSpec: Sendable {
    public static let defaultTokenTTL: Duration = .seconds(3600)
    public static let defaultMaxTokenTTL: Duration = .seconds(86_400)
    public static let defaultGrace: Duration = .seconds(300)
    public static let defaultMaxGrace: Duration = .seconds(3600)
    /// PBKDF2 rounds in a token's SCRAM verifier: 4,096 by default, because pgjdbc refuses a
    /// server that announces fewer. A token's secret is 180 random bits, which no number of
    /// rounds makes harder to guess; the rounds only cost every client CPU at each
    /// connection (libpq ~2.5 ms), so a service whose clients accept fewer (libpq, psycopg,
    /// pgx, node-postgres) may set `scram_iterations` lower.
    public static let defaultSCRAMIterations = 4096
    public static let scramIterationRange = 1...100_000
    /// A service with `identity:` holds one live token per subject, up to this many (default).
    public static let defaultMaxLiveTokens = 100
    /// `token_ttl` of a service with `identity:` unless it sets one: its tokens are minutes-long.
    public static let defaultIdentityTokenTTL: Duration = .seconds(900)

    public var name: String
    /// The database role; empty for an admin service.
    public var role: String
    /// Holds admin tokens for the HTTP admin API: bound to no role, never reaches a database.
    public var admin: Bool
    public var tokenTTL: Duration
    public var maxTokenTTL: Duration
    /// How long the old token keeps working after `token rotate` (default 5m).
    public var grace: Duration
    /// The longest `--grace` a rotation may ask for (default 1h).
    public var maxGrace: Duration
    /// PBKDF2 rounds in the SCRAM verifiers of this service's new tokens.
    public var scramIterations: Int
    /// `identity:`: the service's tokens come only from exchanging an identity token that
    /// satisfies this rule (``Policy/trusts``); none is issued by hand.
    public var identity: IdentityRule?
    /// With `identity:`, how many subjects may hold a live token at once.
    public var maxLiveTokens: Int
    /// `mcp:`: AI agents may use the service's token on `/mcp` (nil: off, the default).
    public var mcp: MCPSettings?
    public var description: String?
    public var location: SourceLocation?

    public init(
        name: String,
        role: String,
        admin: Bool = false,
        tokenTTL: Duration = ServiceSpec.defaultTokenTTL,
        maxTokenTTL: Duration = ServiceSpec.defaultMaxTokenTTL,
        grace: Duration = ServiceSpec.defaultGrace,
        maxGrace: Duration = ServiceSpec.defaultMaxGrace,
        scramIterations: Int = ServiceSpec.defaultSCRAMIterations,
        identity: IdentityRule? = nil,
        maxLiveTokens: Int = ServiceSpec.defaultMaxLiveTokens,
        mcp: MCPSettings? = nil,
        description: String? = nil,
        location: SourceLocation? = nil
    ) {
        self.identity = identity
        self.maxLiveTokens = maxLiveTokens
        self.mcp = mcp
        self.grace = grace
        self.maxGrace = maxGrace
        self.scramIterations = scramIterations
        self.name = name
        self.role = role
        self.admin = admin
        self.tokenTTL = tokenTTL
        self.maxTokenTTL = maxTokenTTL
        self.description = description
        self.location = location
    }
}

/// Where a value came from in the policy file, for error messages.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// `services.<name>.mcp`: how the service's token is served to AI agents over MCP. The role's
/// privileges are the guardrail; these bound what one tool call may cost.
public struct MCPSettings: Sendable, Equatable {
    static let keys: Set<String> = ["max_rows", "statement_timeout", "explain_analyze"]

    /// Rows a `query` returns at most (the agent may ask for fewer).
    public var maxRows = 500
    /// Each tool call's statement timeout (the role's own, when shorter, still applies).
    public var statementTimeout: Duration = .seconds(30)
    /// `explain` may run `EXPLAIN ANALYZE` (which executes the statement).
    public var explainAnalyze = false

    public init() {}
}
