public import RolegateCore

/// What one database should look like according to the policy, with every `ALL ... IN
/// SCHEMA` expanded against the live catalog and every name checked to exist.
public struct DesiredState: Sendable {
    public struct Role: Sendable {
        public var spec: RoleSpec
        public var atoms: Set<PrivilegeAtom>
    }

    public var database: String
    public var roles: [Role]
}

/// A policy that names something the database does not have, or that would hand a
/// managed role more power than the policy allows.
public struct ResolutionError: Error, Sendable, CustomStringConvertible {
    public var issues: [PolicyIssue]

    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

public enum DesiredStateBuilder {
    /// Expands the policy's roles for `database` against `snapshot`.
    public static func build(
        policy: Policy, database: DatabaseSpec, snapshot: CatalogSnapshot
    ) throws(ResolutionError)
        -> DesiredState
    {
        var issues: [PolicyIssue] = []
        var roles: [DesiredState.Role] = []
        let owners = database.futureOwners.isEmpty ? [snapshot.currentUser] : database.futureOwners
        for owner in owners where snapshot.roles[owner] == nil {
            issues.append(
                PolicyIssue(
                    location: database.location, keyPath: "databases.\(database.name).future_owners",
                    message: "role '\(owner)' does not exist"))
        }
        for role in policy.roles(in: database.name) {
            var atoms: Set<PrivilegeAtom> = [
                // A managed role exists to log in to its database.
                PrivilegeAtom(grantee: role.name, object: .database(snapshot.databaseName), privilege: .connect)
            ]
            for (index, grant) in role.grants.enumerated() {
                let path = "roles.\(role.name).grants[\(index)]"
                func fail(_ message: String) {
                    issues.append(PolicyIssue(location: grant.location, keyPath: path, message: message))
                }
                var objects: [Securable] = []
                switch grant.target {
                case .database:
                    objects = [.database(snapshot.databaseName)]
                case .schema(let s):
                    if snapshot.schemas.contains(s) { objects = [.schema(s)] } else { fail(missingSchema(s, snapshot)) }
                case .table(let s, let n):
                    let name = QualifiedName(s, n)
                    if snapshot.relations[name] == .table {
                        if let columns = grant.columns {
                            let existing = Set(snapshot.columns[name] ?? [])
                            let missing = columns.filter { !existing.contains($0) }
                            if missing.isEmpty {
                                objects = columns.map { .column(name, $0) }
                            } else {
                                fail("TABLE \(name) has no column \(missing.map { "'\($0)'" }.joined(separator: ", "))")
                            }
                        } else {
                            objects = [.table(name)]
                        }
                    } else {
                        fail(missingRelation("TABLE", name, snapshot))
                    }
                case .sequence(let s, let n):
                    let name = QualifiedName(s, n)
                    if snapshot.relations[name] == .sequence {
                        objects = [.sequence(name)]
                    } else {
                        fail(missingRelation("SEQUENCE", name, snapshot))
                    }
                case .function:
                    if let identity = snapshot.resolvedFunctions[grant.target] {
                        objects = [.routine(identity)]
                    } else {
                        fail("\(grant.target) does not exist in database \(snapshot.databaseName)")
                    }
                case .allTablesInSchema(let s), .allSequencesInSchema(let s):
                    guard snapshot.schemas.contains(s) else {
                        fail(missingSchema(s, snapshot))
                        break
                    }
                    let kind: RelationKind = grant.target.kind == .table ? .table : .sequence
                    objects = snapshot.relations.filter { $0.key.schema == s && $0.value == kind }.keys.sorted()
                        .map { kind == .table ? .table($0) : .sequence($0) }
                    if grant.future {
                        let type: DefaultsType = kind == .table ? .tables : .sequences
                        objects += owners.map { .defaults(owner: $0, schema: s, type: type) }
                    }
                case .allFunctionsInSchema(let s):
                    guard snapshot.schemas.contains(s) else {
                        fail(missingSchema(s, snapshot))
                        break
                    }
                    objects = (snapshot.routinesBySchema[s] ?? []).sorted().map { .routine($0) }
                    if grant.future {
                        objects += owners.map { .defaults(owner: $0, schema: s, type: .functions) }
                    }
                }
                for object in objects {
                    for privilege in grant.privileges {
                        atoms.insert(PrivilegeAtom(grantee: role.name, object: object, privilege: privilege))
                    }
                }
            }
            for other in role.memberOf {
                guard let target = snapshot.roles[other] else {
                    issues.append(
                        PolicyIssue(
                            location: role.location, keyPath: "roles.\(role.name).member_of",
                            message: "role '\(other)' does not exist"))
                    continue
                }
                if target.isPowerful || target.marker != nil {
                    issues.append(
                        PolicyIssue(
                            location: role.location, keyPath: "roles.\(role.name).member_of",
                            message: target.marker != nil
                                ? "'\(other)' is a Rolegate-managed role; managed roles may not be members of each other"
                                : "'\(other)' has SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS; a managed role may not join it"
                        ))
                }
            }
            roles.append(DesiredState.Role(spec: role, atoms: atoms))
        }
        guard issues.isEmpty else { throw ResolutionError(issues: issues) }
        return DesiredState(database: database.name, roles: roles)
    }

    private static func missingSchema(_ schema: String, _ snapshot: CatalogSnapshot) -> String {
        "SCHEMA \(SQLQuote.ident(schema)) does not exist in database \(snapshot.databaseName)"
    }

    private static func missingRelation(_ kind: String, _ name: QualifiedName, _ snapshot: CatalogSnapshot) -> String {
        switch snapshot.relations[name] {
        case .table?: "\(name) is a table, not a \(kind.lowercased())"
        case .sequence?: "\(name) is a sequence, not a \(kind.lowercased())"
        case nil: "\(kind) \(name) does not exist in database \(snapshot.databaseName)"
        }
    }
}
