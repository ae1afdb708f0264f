public import RolegateCore

/// What one database (and its cluster's roles) looks like right now, as far as Rolegate
/// cares: the roles, their memberships and settings, the objects a policy can name,
/// and every privilege held by a role the policy manages or names.
public struct CatalogSnapshot: Sendable {
    public var currentUser: String
    public var databaseName: String
    /// `server_version_num`, e.g. 150004.
    public var serverVersion: Int
    /// Every role in the cluster, by name.
    public var roles: [String: ActualRole]
    /// Memberships whose member is one of the inspected roles.
    public var memberships: [Membership]
    public var schemas: Set<String>
    /// Tables (and views, materialized views, foreign and partitioned tables) and sequences.
    public var relations: [QualifiedName: RelationKind]
    /// Columns of the tables a policy grants columns on.
    public var columns: [QualifiedName: [String]]
    /// Routines of the schemas a policy names with `ALL FUNCTIONS IN SCHEMA`, by schema;
    /// each is its identity, e.g. `billing.close_month(p_month date)`.
    public var routinesBySchema: [String: [String]]
    /// `FUNCTION s.f(args)` of the policy, resolved by PostgreSQL to its identity (nil: no such function).
    public var resolvedFunctions: [GrantTarget: String]
    /// Privileges held by the inspected roles (never those an owner holds on its own objects).
    public var grants: [ActualGrant]
    /// Objects each inspected role owns in this database or cluster-wide.
    public var ownedObjects: [String: Int]
    /// Dependencies each inspected role has in other databases (grants or ownership there).
    public var otherDatabaseDependencies: [String: Int]
    /// Open sessions per inspected role.
    public var sessions: [String: Int]

    public init(
        currentUser: String, databaseName: String, serverVersion: Int = 150000, roles: [String: ActualRole] = [:],
        memberships: [Membership] = [], schemas: Set<String> = [], relations: [QualifiedName: RelationKind] = [:],
        columns: [QualifiedName: [String]] = [:], routinesBySchema: [String: [String]] = [:],
        resolvedFunctions: [GrantTarget: String] = [:], grants: [ActualGrant] = [],
        ownedObjects: [String: Int] = [:], otherDatabaseDependencies: [String: Int] = [:],
        sessions: [String: Int] = [:]
    ) {
        self.currentUser = currentUser
        self.databaseName = databaseName
        self.serverVersion = serverVersion
        self.roles = roles
        self.memberships = memberships
        self.schemas = schemas
        self.relations = relations
        self.columns = columns
        self.routinesBySchema = routinesBySchema
        self.resolvedFunctions = resolvedFunctions
        self.grants = grants
        self.ownedObjects = ownedObjects
        self.otherDatabaseDependencies = otherDatabaseDependencies
        self.sessions = sessions
    }
}

public struct QualifiedName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var schema: String
    public var name: String

    public init(_ schema: String, _ name: String) {
        self.schema = schema
        self.name = name
    }

    public var sql: String { SQLQuote.qualified(schema, name) }
    public var description: String { sql }

    public static func < (a: QualifiedName, b: QualifiedName) -> Bool {
        (a.schema, a.name) < (b.schema, b.name)
    }
}

public enum RelationKind: String, Sendable, Hashable {
    case table
    case sequence
}

public struct ActualRole: Sendable, Equatable {
    public var name: String
    public var oid: Int
    public var superuser: Bool
    public var inherit: Bool
    public var createRole: Bool
    public var createDB: Bool
    public var canLogin: Bool
    public var replication: Bool
    public var bypassRLS: Bool
    public var connectionLimit: Int
    /// `rolvaliduntil` as text; nil when unset.
    public var validUntil: String?
    public var comment: String?
    /// `ALTER ROLE ... SET` values for all databases, as `name=value`.
    public var settings: [String]
    /// `pg_authid.rolpassword` when the admin may read it (a superuser): `.some(nil)` is a
    /// role without a password; nil means it could not be read.
    public var password: String??

    public init(
        name: String, oid: Int = 0, superuser: Bool = false, inherit: Bool = true, createRole: Bool = false,
        createDB: Bool = false, canLogin: Bool = true, replication: Bool = false, bypassRLS: Bool = false,
        connectionLimit: Int = -1, validUntil: String? = nil, comment: String? = nil, settings: [String] = []
    ) {
        self.name = name
        self.oid = oid
        self.superuser = superuser
        self.inherit = inherit
        self.createRole = createRole
        self.createDB = createDB
        self.canLogin = canLogin
        self.replication = replication
        self.bypassRLS = bypassRLS
        self.connectionLimit = connectionLimit
        self.validUntil = validUntil
        self.comment = comment
        self.settings = settings
    }

    public var marker: ManagedMarker? { comment.flatMap(ManagedMarker.init(comment:)) }

    /// Whether this role could hand out more than privileges on objects.
    public var isPowerful: Bool { superuser || createRole || createDB || replication || bypassRLS }
}

public struct Membership: Sendable, Hashable {
    /// The role granted.
    public var role: String
    /// Who was granted it.
    public var member: String
    public var grantor: String

    public init(role: String, member: String, grantor: String) {
        self.role = role
        self.member = member
        self.grantor = grantor
    }
}

/// A privilege held, with who granted it and whether it carries GRANT OPTION.
public struct ActualGrant: Sendable, Hashable {
    public var atom: PrivilegeAtom
    public var grantor: String
    public var grantable: Bool

    public init(atom: PrivilegeAtom, grantor: String, grantable: Bool = false) {
        self.atom = atom
        self.grantor = grantor
        self.grantable = grantable
    }
}
