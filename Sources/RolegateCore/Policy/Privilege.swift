import Foundation

/// A PostgreSQL privilege, spelled as `aclexplode()` reports it.
public enum Privilege: String, Sendable, Hashable, CaseIterable, Comparable {
    case select = "SELECT"
    case insert = "INSERT"
    case update = "UPDATE"
    case delete = "DELETE"
    case truncate = "TRUNCATE"
    case references = "REFERENCES"
    case trigger = "TRIGGER"
    case usage = "USAGE"
    case create = "CREATE"
    case connect = "CONNECT"
    case temporary = "TEMPORARY"
    case execute = "EXECUTE"

    /// Parses a privilege as written in a policy (case-insensitive; `TEMP` is `TEMPORARY`).
    public init?(policyText: String) {
        let upper = policyText.trimmingCharacters(in: .whitespaces).uppercased()
        if upper == "TEMP" {
            self = .temporary
            return
        }
        self.init(rawValue: upper)
    }

    public static func < (lhs: Privilege, rhs: Privilege) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// Privileges that may be granted on individual columns.
    public static let columnPrivileges: [Privilege] = [.select, .insert, .update, .references]
}

/// The kinds of object a grant can name; each allows its own privileges.
public enum ObjectKind: String, Sendable, Hashable, CaseIterable {
    case database = "DATABASE"
    case schema = "SCHEMA"
    case table = "TABLE"
    case sequence = "SEQUENCE"
    case function = "FUNCTION"

    /// What PostgreSQL accepts in `GRANT ... ON <kind>`, in PostgreSQL's own order.
    public var allowedPrivileges: [Privilege] {
        switch self {
        case .database: [.create, .connect, .temporary]
        case .schema: [.usage, .create]
        case .table: [.select, .insert, .update, .delete, .truncate, .references, .trigger]
        case .sequence: [.usage, .select, .update]
        case .function: [.execute]
        }
    }
}
