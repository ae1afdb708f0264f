public import RolegateCore

/// The privileges each role holds as the database reports them, in words a person reads:
/// `SELECT on billing.invoices`, `SELECT (id, email) on billing.customers`, `CONNECT on
/// database app`. From the same inspection as `plan`.
public enum PrivilegeSummary {
    /// One line per object (its privileges together), by role, in `plan`'s order.
    public static func lines(_ grants: [ActualGrant]) -> [String: [String]] {
        var byRole: [String: [Securable: Set<Privilege>]] = [:]
        for grant in grants {
            byRole[grant.atom.grantee, default: [:]][grant.atom.object, default: []].insert(grant.atom.privilege)
        }
        var result: [String: [String]] = [:]
        for (role, objects) in byRole {
            var lines: [String] = []
            // Column privileges read best per table: `SELECT (id, email) on s.t`.
            var columns: [QualifiedName: [Privilege: [String]]] = [:]
            for (object, privileges) in objects.sorted(by: { $0.key < $1.key }) {
                let words = privileges.sorted().map(\.rawValue).joined(separator: ", ")
                switch object {
                case .database(let name): lines.append("\(words) on database \(name)")
                case .schema(let name): lines.append("\(words) on schema \(name)")
                case .table(let name): lines.append("\(words) on \(name.schema).\(name.name)")
                case .sequence(let name): lines.append("\(words) on sequence \(name.schema).\(name.name)")
                case .routine(let identity): lines.append("\(words) on function \(identity)")
                case .column(let table, let column):
                    for privilege in privileges { columns[table, default: [:]][privilege, default: []].append(column) }
                case .defaults(let owner, let schema, let type):
                    let scope = schema.map { " in schema \($0)" } ?? ""
                    lines.append("\(words) on future \(type.keyword.lowercased()) of \(owner)\(scope)")
                }
            }
            for (table, privileges) in columns.sorted(by: { $0.key < $1.key }) {
                for (privilege, names) in privileges.sorted(by: { $0.key < $1.key }) {
                    lines.append(
                        "\(privilege.rawValue) (\(names.sorted().joined(separator: ", "))) on \(table.schema).\(table.name)"
                    )
                }
            }
            result[role] = lines
        }
        return result
    }
}

extension Provisioner {
    /// Every role's privileges in `database` as ``PrivilegeSummary`` words, read-only.
    public func privileges(_ database: DatabaseSpec) async throws -> [String: [String]] {
        let connection = try await AdminConnection.connect(to: database)
        do {
            try await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let snapshot = try await CatalogInspector.inspect(connection, policy: policy, database: database)
            try await connection.execute("ROLLBACK")
            await connection.close()
            return PrivilegeSummary.lines(snapshot.grants)
        } catch {
            await connection.close()
            throw error
        }
    }
}
