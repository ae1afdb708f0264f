public import RolegateCore

/// Compares what the policy wants with what the catalog has and writes the SQL that
/// closes the gap, per role. Pure: no I/O, so every rule is testable without a server.
public enum Planner {
    public struct Options: Sendable {
        /// Fingerprint of the master key `apply` will use; nil when there is none yet.
        public var keyFingerprint: String?
        /// `--reassign-owned-to`: who takes over objects owned by a role being dropped.
        public var reassignOwnedTo: String?
        /// The `rolpassword` a role's credential should have (from the master key), to
        /// notice a password changed behind Rolegate's back.
        public var expectedPassword: (@Sendable (String) -> String)?

        public init(
            keyFingerprint: String?, reassignOwnedTo: String? = nil,
            expectedPassword: (@Sendable (String) -> String)? = nil
        ) {
            self.keyFingerprint = keyFingerprint
            self.reassignOwnedTo = reassignOwnedTo
            self.expectedPassword = expectedPassword
        }
    }

    public static func plan(
        desired: DesiredState, snapshot: CatalogSnapshot, database: DatabaseSpec, options: Options
    ) throws(ResolutionError) -> DatabasePlan {
        var issues: [PolicyIssue] = []
        var plans: [RolePlan] = []
        let wanted = Set(desired.roles.map(\.spec.name))

        for role in desired.roles {
            let spec = role.spec
            if let actual = snapshot.roles[spec.name] {
                if let marker = actual.marker, marker.database != database.name, !spec.adopt {
                    issues.append(
                        PolicyIssue(
                            location: spec.location, keyPath: "roles.\(spec.name)",
                            message:
                                "role '\(spec.name)' is managed by Rolegate for database '\(marker.database)', not '\(database.name)'; role names are shared by the whole cluster"
                        ))
                    continue
                }
                if actual.marker == nil, !spec.adopt {
                    issues.append(
                        PolicyIssue(
                            location: spec.location, keyPath: "roles.\(spec.name)",
                            message:
                                "role '\(spec.name)' already exists and is not managed by Rolegate; rename the role in the policy, or set 'adopt: true' to take it over (its undeclared privileges will be revoked)"
                        ))
                    continue
                }
                if actual.superuser {
                    issues.append(
                        PolicyIssue(
                            location: spec.location, keyPath: "roles.\(spec.name)",
                            message: "role '\(spec.name)' is a superuser; Rolegate never manages superusers"))
                    continue
                }
                plans.append(change(role, actual: actual, snapshot: snapshot, database: database, options: options))
            } else {
                plans.append(create(role, snapshot: snapshot, database: database, options: options))
            }
        }

        let toDrop = snapshot.roles.values
            .filter { $0.marker?.database == database.name && !wanted.contains($0.name) }
            .sorted { $0.name < $1.name }
        for actual in toDrop {
            plans.append(drop(actual, snapshot: snapshot, options: options))
        }
        if let target = options.reassignOwnedTo, !toDrop.isEmpty, snapshot.roles[target] == nil {
            issues.append(
                PolicyIssue(location: nil, keyPath: "", message: "--reassign-owned-to: role '\(target)' does not exist")
            )
        }
        guard issues.isEmpty else { throw ResolutionError(issues: issues) }

        var warnings: [String] = []
        if snapshot.roles[snapshot.currentUser]?.superuser == true {
            warnings.append(
                "the admin connection logs in as superuser '\(snapshot.currentUser)'; Rolegate needs only CREATEROLE and ownership (or GRANT OPTION) of the objects it grants on"
            )
        }
        return DatabasePlan(
            database: database.name, target: database.redactedURL, roles: plans, warnings: warnings)
    }

    // MARK: - Per role

    static let attributeClause =
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"

    private static func marker(_ spec: RoleSpec, _ database: DatabaseSpec, _ options: Options) -> String {
        ManagedMarker(
            database: database.name, keyFingerprint: options.keyFingerprint ?? "pending",
            description: spec.description
        ).comment
    }

    private static func create(
        _ role: DesiredState.Role, snapshot: CatalogSnapshot, database: DatabaseSpec, options: Options
    ) -> RolePlan {
        let spec = role.spec
        let name = SQLQuote.ident(spec.name)
        var statements = [
            PlannedStatement(
                "CREATE ROLE \(name) WITH \(attributeClause) CONNECTION LIMIT \(spec.connectionLimit)",
                credentialFor: spec.name),
            PlannedStatement("COMMENT ON ROLE \(name) IS \(SQLQuote.literal(marker(spec, database, options)))"),
        ]
        statements += settingStatements(spec, actual: [])
        statements += spec.memberOf.map { PlannedStatement("GRANT \(SQLQuote.ident($0)) TO \(name)") }
        statements += grantStatements(role.atoms.sorted(), role: spec.name)
        return RolePlan(role: spec.name, action: .create, statements: statements)
    }

    private static func change(
        _ role: DesiredState.Role, actual: ActualRole, snapshot: CatalogSnapshot, database: DatabaseSpec,
        options: Options
    ) -> RolePlan {
        let spec = role.spec
        let name = SQLQuote.ident(spec.name)
        var statements: [PlannedStatement] = []

        var attributes: [String] = []
        if !actual.canLogin { attributes.append("LOGIN") }
        if actual.superuser { attributes.append("NOSUPERUSER") }
        if actual.createDB { attributes.append("NOCREATEDB") }
        if actual.createRole { attributes.append("NOCREATEROLE") }
        if actual.replication { attributes.append("NOREPLICATION") }
        if actual.bypassRLS { attributes.append("NOBYPASSRLS") }
        if !actual.inherit { attributes.append("INHERIT") }
        if actual.connectionLimit != spec.connectionLimit {
            attributes.append("CONNECTION LIMIT \(spec.connectionLimit)")
        }
        if let until = actual.validUntil, until != "infinity" { attributes.append("VALID UNTIL 'infinity'") }
        if !attributes.isEmpty {
            statements.append(PlannedStatement("ALTER ROLE \(name) WITH \(attributes.joined(separator: " "))"))
        }
        let keyChanged = actual.marker?.keyFingerprint == nil || actual.marker?.keyFingerprint != options.keyFingerprint
        let passwordChanged =
            actual.password.map { stored in stored != options.expectedPassword?(spec.name) } ?? false
            && options.expectedPassword != nil
        if keyChanged || actual.marker?.database != database.name || passwordChanged {
            statements.append(PlannedStatement("ALTER ROLE \(name) WITH", credentialFor: spec.name))
        }
        let comment = marker(spec, database, options)
        if actual.comment != comment {
            statements.append(PlannedStatement("COMMENT ON ROLE \(name) IS \(SQLQuote.literal(comment))"))
        }
        statements += settingStatements(spec, actual: actual.settings)

        let memberships = snapshot.memberships.filter { $0.member == spec.name }
        let held = Set(memberships.map(\.role))
        for m in memberships where !spec.memberOf.contains(m.role) {
            statements.append(PlannedStatement("REVOKE \(SQLQuote.ident(m.role)) FROM \(name)"))
        }
        for other in spec.memberOf where !held.contains(other) {
            statements.append(PlannedStatement("GRANT \(SQLQuote.ident(other)) TO \(name)"))
        }

        let actualGrants = snapshot.grants.filter { $0.atom.grantee == spec.name }
        let actualAtoms = Set(actualGrants.map(\.atom))
        let extra = actualGrants.filter { !role.atoms.contains($0.atom) }
        let withOption = actualGrants.filter { role.atoms.contains($0.atom) && $0.grantable }
        statements += revokeStatements(
            extra, role: spec.name, currentUser: snapshot.currentUser, grantOptionOnly: false)
        statements += revokeStatements(
            withOption, role: spec.name, currentUser: snapshot.currentUser, grantOptionOnly: true)
        statements += grantStatements(role.atoms.subtracting(actualAtoms).sorted(), role: spec.name)

        var notes: [String] = []
        if actual.marker == nil { notes.append("adopting an existing role") }
        return RolePlan(
            role: spec.name, action: statements.isEmpty ? .unchanged : .change, statements: statements, notes: notes)
    }

    private static func drop(_ actual: ActualRole, snapshot: CatalogSnapshot, options: Options) -> RolePlan {
        let name = SQLQuote.ident(actual.name)
        var statements: [PlannedStatement] = []
        var blockers: [String] = []
        var notes: [String] = []
        let owned = snapshot.ownedObjects[actual.name] ?? 0
        if owned > 0 {
            if let target = options.reassignOwnedTo {
                // REASSIGN OWNED needs the privileges of the role; a CREATEROLE admin can grant itself
                // membership, which goes away with the role.
                let admin = snapshot.roles[snapshot.currentUser]
                let isMember = snapshot.memberships.contains {
                    $0.role == actual.name && $0.member == snapshot.currentUser
                }
                if admin?.superuser != true, !isMember {
                    statements.append(PlannedStatement("GRANT \(name) TO CURRENT_USER"))
                }
                statements.append(PlannedStatement("REASSIGN OWNED BY \(name) TO \(SQLQuote.ident(target))"))
                notes.append("owns \(owned) object(s); they pass to '\(target)'")
            } else {
                blockers.append(
                    "owns \(owned) object(s); apply refuses to drop it unless given --reassign-owned-to ROLE")
            }
        }
        if let elsewhere = snapshot.otherDatabaseDependencies[actual.name], elsewhere > 0 {
            blockers.append(
                "holds \(elsewhere) grant(s) or object(s) in other databases of the cluster; remove them there first")
        }
        for m in snapshot.memberships where m.member == actual.name {
            statements.append(PlannedStatement("REVOKE \(SQLQuote.ident(m.role)) FROM \(name)"))
        }
        let grants = snapshot.grants.filter { $0.atom.grantee == actual.name }
        statements += revokeStatements(
            grants, role: actual.name, currentUser: snapshot.currentUser, grantOptionOnly: false)
        statements.append(PlannedStatement("DROP ROLE \(name)"))
        let sessions = snapshot.sessions[actual.name] ?? 0
        if sessions > 0 { notes.append("\(sessions) open session(s) will be ended after the drop commits") }
        return RolePlan(
            role: actual.name, action: .drop, statements: statements, blockers: blockers, notes: notes,
            sessionsToEnd: sessions)
    }

    // MARK: - Settings

    static func settingName(_ name: String) -> String {
        name.lowercased().split(separator: ".").map { SQLQuote.ident(String($0)) }.joined(separator: ".")
    }

    private static func settingStatements(_ spec: RoleSpec, actual: [String]) -> [PlannedStatement] {
        var current: [String: String] = [:]
        for entry in actual {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            current[entry[..<eq].lowercased()] = String(entry[entry.index(after: eq)...])
        }
        let name = SQLQuote.ident(spec.name)
        var statements: [PlannedStatement] = []
        let wanted = Set(spec.settings.map { $0.name.lowercased() })
        for key in current.keys.sorted() where !wanted.contains(key) {
            statements.append(PlannedStatement("ALTER ROLE \(name) RESET \(settingName(key))"))
        }
        for setting in spec.settings where current[setting.name.lowercased()] != setting.value {
            statements.append(
                PlannedStatement(
                    "ALTER ROLE \(name) SET \(settingName(setting.name)) TO \(SQLQuote.literal(setting.value))"))
        }
        return statements
    }

    // MARK: - Privileges

    /// Statement groups: one statement per object (per table for column privileges,
    /// per owner/schema/type for default privileges).
    private enum GroupKey: Hashable, Comparable {
        case object(Securable)
        case columns(QualifiedName)

        init(_ object: Securable) {
            if case .column(let table, _) = object { self = .columns(table) } else { self = .object(object) }
        }

        var order: Securable {
            switch self {
            case .object(let o): o
            case .columns(let t): .column(t, "")
            }
        }

        static func < (a: GroupKey, b: GroupKey) -> Bool { a.order < b.order }
    }

    private static func privilegeList(_ atoms: [PrivilegeAtom]) -> String {
        let byPrivilege = Dictionary(grouping: atoms, by: \.privilege)
        return byPrivilege.keys.sorted().map { privilege in
            let columns = byPrivilege[privilege]!.compactMap { atom -> String? in
                if case .column(_, let c) = atom.object { return c }
                return nil
            }
            if columns.isEmpty { return privilege.rawValue }
            return "\(privilege.rawValue) (\(columns.sorted().map(SQLQuote.ident).joined(separator: ", ")))"
        }.joined(separator: ", ")
    }

    static func grantStatements(_ atoms: [PrivilegeAtom], role: String) -> [PlannedStatement] {
        let grantee = SQLQuote.ident(role)
        let groups = Dictionary(grouping: atoms) { GroupKey($0.object) }
        return groups.keys.sorted().map { key in
            let list = privilegeList(groups[key]!)
            switch key {
            case .columns(let table):
                return PlannedStatement("GRANT \(list) ON TABLE \(table.sql) TO \(grantee)")
            case .object(.defaults(let owner, let schema, let type)):
                return PlannedStatement(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE \(SQLQuote.ident(owner))\(schema.map { " IN SCHEMA \(SQLQuote.ident($0))" } ?? "") GRANT \(list) ON \(type.keyword) TO \(grantee)"
                )
            case .object(let object):
                return PlannedStatement("GRANT \(list) ON \(object.onClause!) TO \(grantee)")
            }
        }
    }

    static func revokeStatements(
        _ grants: [ActualGrant], role: String, currentUser: String, grantOptionOnly: Bool
    ) -> [PlannedStatement] {
        struct Key: Hashable, Comparable {
            var group: GroupKey
            var grantor: String
            static func < (a: Key, b: Key) -> Bool { (a.group, a.grantor) < (b.group, b.grantor) }
        }
        let grantee = SQLQuote.ident(role)
        let head = grantOptionOnly ? "REVOKE GRANT OPTION FOR" : "REVOKE"
        let groups = Dictionary(grouping: grants) { Key(group: GroupKey($0.atom.object), grantor: $0.grantor) }
        // Column privileges first: revoking a table privilege also revokes the same privilege on its columns.
        let keys = groups.keys.sorted { a, b in
            let ac = if case .columns = a.group { 0 } else { 1 }
            let bc = if case .columns = b.group { 0 } else { 1 }
            return (ac, a) < (bc, b)
        }
        return keys.map { key in
            let list = privilegeList(groups[key]!.map(\.atom))
            let grantedBy = key.grantor == currentUser ? "" : " GRANTED BY \(SQLQuote.ident(key.grantor))"
            switch key.group {
            case .columns(let table):
                return PlannedStatement("\(head) \(list) ON TABLE \(table.sql) FROM \(grantee)\(grantedBy)")
            case .object(.defaults(let owner, let schema, let type)):
                return PlannedStatement(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE \(SQLQuote.ident(owner))\(schema.map { " IN SCHEMA \(SQLQuote.ident($0))" } ?? "") \(head) \(list) ON \(type.keyword) FROM \(grantee)"
                )
            case .object(let object):
                return PlannedStatement("\(head) \(list) ON \(object.onClause!) FROM \(grantee)\(grantedBy)")
            }
        }
    }
}
