public import RolegateCore

/// One SQL statement of a plan. A statement that sets a role's credential carries the
/// role's name instead of the secret; ``display`` reads `PASSWORD '***'` and only the
/// applier, holding the master key, renders the real verifier.
public struct PlannedStatement: Sendable, Hashable, Codable {
    /// SQL without the password clause or trailing semicolon.
    public var sql: String
    /// When set, the statement ends with `PASSWORD '<verifier of this role's credential>'`.
    public var credentialFor: String?

    public init(_ sql: String, credentialFor: String? = nil) {
        self.sql = sql
        self.credentialFor = credentialFor
    }

    /// What may be printed: never a secret.
    public var display: String {
        credentialFor == nil ? sql + ";" : sql + " PASSWORD '***';"
    }

    /// What is sent to PostgreSQL.
    public func executable(key: MasterKey?) -> String {
        guard let role = credentialFor else { return sql }
        guard let key else { preconditionFailure("a credential statement needs the master key") }
        return sql + " PASSWORD " + SQLQuote.literal(key.roleVerifier(role: role).postgresText)
    }
}

/// What `plan` found for one role.
public struct RolePlan: Sendable {
    public enum Action: String, Sendable, Codable {
        case create, change, drop, unchanged
    }

    public var role: String
    public var action: Action
    public var statements: [PlannedStatement]
    /// Why `apply` would refuse (e.g. a role to drop that owns objects).
    public var blockers: [String]
    /// Things worth knowing that need no action (e.g. open sessions that a drop will end).
    public var notes: [String]
    /// Backends to end once the transaction that drops this role has committed.
    public var sessionsToEnd: Int

    public init(
        role: String, action: Action, statements: [PlannedStatement] = [], blockers: [String] = [],
        notes: [String] = [], sessionsToEnd: Int = 0
    ) {
        self.role = role
        self.action = action
        self.statements = statements
        self.blockers = blockers
        self.notes = notes
        self.sessionsToEnd = sessionsToEnd
    }
}

/// The plan for one database of the policy.
public struct DatabasePlan: Sendable {
    public var database: String
    /// The admin connection, password redacted.
    public var target: String
    public var roles: [RolePlan]
    public var warnings: [String]

    public init(database: String, target: String, roles: [RolePlan], warnings: [String] = []) {
        self.database = database
        self.target = target
        self.roles = roles
        self.warnings = warnings
    }

    public var statements: [PlannedStatement] { roles.flatMap(\.statements) }
    public var inSync: Bool { roles.allSatisfy { $0.action == .unchanged } }
    public var blockers: [String] { roles.flatMap { r in r.blockers.map { "role \(r.role): \($0)" } } }

    public func count(_ action: RolePlan.Action) -> Int { roles.filter { $0.action == action }.count }
}
