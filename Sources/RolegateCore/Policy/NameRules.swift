import Foundation

/// What a name in the policy may be. Every identifier Rolegate sends to PostgreSQL is
/// quoted, so capitals, spaces and quotes are fine; what is refused here is what
/// PostgreSQL itself would refuse or silently truncate, and names reserved by it.
public enum NameRules {
    /// PostgreSQL's NAMEDATALEN - 1.
    public static let maxIdentifierBytes = 63

    static let reservedRoleNames: Set<String> = ["public", "none", "current_user", "session_user", "current_role"]

    /// Returns why `name` cannot be a role name, or nil when it can.
    public static func roleNameProblem(_ name: String) -> String? {
        if let problem = identifierProblem(name) { return problem }
        if name.lowercased().hasPrefix("pg_") {
            return "role names starting with 'pg_' are reserved by PostgreSQL"
        }
        if reservedRoleNames.contains(name.lowercased()) {
            return "'\(name)' is reserved by PostgreSQL and cannot name a role"
        }
        return nil
    }

    /// Returns why `name` cannot be a PostgreSQL identifier, or nil when it can.
    public static func identifierProblem(_ name: String) -> String? {
        if name.isEmpty { return "a name cannot be empty" }
        if name.utf8.count > maxIdentifierBytes {
            return "'\(name)' is \(name.utf8.count) bytes long; PostgreSQL names are at most \(maxIdentifierBytes)"
        }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "a name cannot contain control characters"
        }
        if name != name.trimmingCharacters(in: .whitespaces) {
            return "'\(name)' starts or ends with white space"
        }
        return nil
    }

    /// Service names travel as the wire protocol's `user` and in URLs and logs: letters,
    /// digits, `.`, `_`, `-`, starting with a letter or digit, at most 63 bytes.
    public static func serviceNameProblem(_ name: String) -> String? {
        guard !name.isEmpty, name.utf8.count <= maxIdentifierBytes else {
            return "a service name must be 1 to \(maxIdentifierBytes) characters"
        }
        let allowed = name.unicodeScalars.allSatisfy {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0))
        }
        guard allowed, let first = name.unicodeScalars.first,
            first.properties.isAlphabetic || ("0"..."9").contains(first)
        else {
            return
                "'\(name)' is not a valid service name (letters, digits, '.', '_', '-'; starting with a letter or digit)"
        }
        return nil
    }

    /// Run-time parameter names for `settings:` (`statement_timeout`, `app.tenant`).
    public static func settingNameProblem(_ name: String) -> String? {
        let ok =
            !name.isEmpty
            && name.unicodeScalars.allSatisfy {
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == ".")
            }
            && !(name.unicodeScalars.first.map { ("0"..."9").contains($0) || $0 == "." } ?? true)
        guard ok else { return "'\(name)' is not a valid setting name" }
        if forbiddenSettings.contains(name.lowercased()) {
            return "'\(name)' cannot be set per role by Rolegate: it would change who the session acts as"
        }
        return nil
    }

    static let forbiddenSettings: Set<String> = ["role", "session_authorization"]

    /// Role attributes a managed role may never have.
    public static let forbiddenAttributes = ["SUPERUSER", "CREATEDB", "CREATEROLE", "REPLICATION", "BYPASSRLS"]

    /// Predefined roles a managed role may not join: they reach the server's files or programs,
    /// or other sessions.
    public static let forbiddenMemberships: Set<String> = [
        "pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", "pg_signal_backend",
        "pg_database_owner",
    ]
}
