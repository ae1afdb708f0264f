import Foundation
public import RolegateCore

/// Something a privilege is held on.
public enum Securable: Sendable, Hashable, Comparable {
    case database(String)
    case schema(String)
    case table(QualifiedName)
    case column(QualifiedName, String)
    case sequence(QualifiedName)
    /// A function, procedure or aggregate by its identity as PostgreSQL formats it.
    case routine(String)
    /// `ALTER DEFAULT PRIVILEGES FOR ROLE owner [IN SCHEMA schema] ... ON <type>`.
    case defaults(owner: String, schema: String?, type: DefaultsType)

    var order: Int {
        switch self {
        case .database: 0
        case .schema: 1
        case .table: 2
        case .column: 3
        case .sequence: 4
        case .routine: 5
        case .defaults: 6
        }
    }

    var sortKey: String {
        switch self {
        case .database(let d): d
        case .schema(let s): s
        case .table(let q), .sequence(let q): "\(q.schema)\u{0}\(q.name)"
        case .column(let q, let c): "\(q.schema)\u{0}\(q.name)\u{0}\(c)"
        case .routine(let r): r
        case .defaults(let owner, let schema, let type): "\(owner)\u{0}\(schema ?? "")\u{0}\(type.rawValue)"
        }
    }

    public static func < (a: Securable, b: Securable) -> Bool {
        (a.order, a.sortKey) < (b.order, b.sortKey)
    }

    /// `ON TABLE "s"."t"` and friends; nil for columns and defaults, which render differently.
    var onClause: String? {
        switch self {
        case .database(let d): "DATABASE \(SQLQuote.ident(d))"
        case .schema(let s): "SCHEMA \(SQLQuote.ident(s))"
        case .table(let q): "TABLE \(q.sql)"
        case .sequence(let q): "SEQUENCE \(q.sql)"
        case .routine(let identity): "ROUTINE \(identity)"
        case .column, .defaults: nil
        }
    }
}

/// The object types of `pg_default_acl` (`defaclobjtype`).
public enum DefaultsType: String, Sendable, Hashable {
    case tables = "r"
    case sequences = "S"
    case functions = "f"
    case types = "T"
    case schemas = "n"

    var keyword: String {
        switch self {
        case .tables: "TABLES"
        case .sequences: "SEQUENCES"
        case .functions: "FUNCTIONS"
        case .types: "TYPES"
        case .schemas: "SCHEMAS"
        }
    }
}

/// One privilege on one object for one role: the unit `plan` compares.
public struct PrivilegeAtom: Sendable, Hashable, Comparable {
    public var grantee: String
    public var object: Securable
    public var privilege: Privilege

    public init(grantee: String, object: Securable, privilege: Privilege) {
        self.grantee = grantee
        self.object = object
        self.privilege = privilege
    }

    public static func < (a: PrivilegeAtom, b: PrivilegeAtom) -> Bool {
        (a.grantee, a.object, a.privilege) < (b.grantee, b.object, b.privilege)
    }
}

/// The comment that marks a role as Rolegate's:
/// `rolegate:managed db=<database> key=<master key fingerprint>`, then the description
/// on the next line. Roles without it are never altered.
public struct ManagedMarker: Sendable, Equatable {
    public static let prefix = "rolegate:managed"

    public var database: String
    /// Fingerprint of the master key the role's credential was derived from.
    public var keyFingerprint: String?
    public var description: String?

    public init(database: String, keyFingerprint: String?, description: String?) {
        self.database = database
        self.keyFingerprint = keyFingerprint
        self.description = description
    }

    public init?(comment: String) {
        let lines = comment.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = lines.first, first.hasPrefix(Self.prefix + " ") || first == Self.prefix else { return nil }
        var database: String?
        var key: String?
        for field in first.dropFirst(Self.prefix.count).split(separator: " ") {
            if field.hasPrefix("db=") { database = String(field.dropFirst(3)).removingPercentEncoding }
            if field.hasPrefix("key=") { key = String(field.dropFirst(4)) }
        }
        guard let database else { return nil }
        self.database = database
        self.keyFingerprint = key
        self.description = lines.count > 1 ? String(lines[1]) : nil
    }

    public var comment: String {
        let db =
            database.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-_.")))
            ?? database
        var text = "\(Self.prefix) db=\(db)"
        if let keyFingerprint { text += " key=\(keyFingerprint)" }
        if let description, !description.isEmpty { text += "\n" + description }
        return text
    }
}
