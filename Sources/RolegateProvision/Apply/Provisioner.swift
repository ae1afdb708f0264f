public import RolegateCore

/// `plan` and `apply` for a whole policy: one admin connection per database, inspect,
/// expand, diff; and for `apply`, the same inside one transaction per database.
public struct Provisioner: Sendable {
    public var policy: Policy
    /// The master key `apply` sets credentials from; nil for a `plan` before any key exists.
    public var key: MasterKey?
    public var reassignOwnedTo: String?

    public init(policy: Policy, key: MasterKey?, reassignOwnedTo: String? = nil) {
        self.policy = policy
        self.key = key
        self.reassignOwnedTo = reassignOwnedTo
    }

    var options: Planner.Options {
        var expected: (@Sendable (String) -> String)?
        if let key { expected = { role in key.roleVerifier(role: role).postgresText } }
        return Planner.Options(
            keyFingerprint: key?.fingerprint, reassignOwnedTo: reassignOwnedTo, expectedPassword: expected)
    }

    /// The plan for one database, read-only.
    public func plan(_ database: DatabaseSpec) async throws -> DatabasePlan {
        let connection = try await AdminConnection.connect(to: database)
        do {
            // One consistent snapshot of the catalogs, and nothing can be written.
            try await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let result = try await plan(database, on: connection)
            try await connection.execute("ROLLBACK")
            await connection.close()
            return result.plan
        } catch {
            await connection.close()
            throw error
        }
    }

    /// `probeCredentials`: log in as managed roles whose stored password cannot be read, to
    /// notice one changed behind Rolegate's back (not after applying inside the transaction:
    /// other sessions still see the old credential until it commits).
    func plan(
        _ database: DatabaseSpec, on connection: AdminConnection, probeCredentials: Bool = true
    ) async throws -> (
        plan: DatabasePlan, snapshot: CatalogSnapshot
    ) {
        var snapshot = try await CatalogInspector.inspect(connection, policy: policy, database: database)
        if probeCredentials, let key {
            await CredentialProbe.probe(
                &snapshot, roles: policy.roles(in: database.name).map(\.name), database: database, key: key)
        }
        let desired = try DesiredStateBuilder.build(policy: policy, database: database, snapshot: snapshot)
        let plan = try Planner.plan(desired: desired, snapshot: snapshot, database: database, options: options)
        return (plan, snapshot)
    }

    public struct ApplyResult: Sendable {
        public var plan: DatabasePlan
        /// Sessions of dropped roles that were ended after the commit.
        public var sessionsEnded: Int
        /// Problems after the commit that did not undo it (e.g. no right to end sessions).
        public var warnings: [String]
    }

    /// Applies the plan for `database` in one transaction. When `expected` is given (the
    /// statements that were shown and confirmed), the transaction re-plans under a lock and
    /// refuses if anything differs. After running the statements it inspects again and
    /// rolls back unless the database now matches the policy exactly.
    public func apply(_ database: DatabaseSpec, expected: [String]?) async throws -> ApplyResult {
        guard let key else { throw ProvisionError(.refused, "apply needs the master key") }
        let connection = try await AdminConnection.connect(to: database)
        do {
            let result = try await apply(database, expected: expected, key: key, on: connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    private func apply(
        _ database: DatabaseSpec, expected: [String]?, key: MasterKey, on connection: AdminConnection
    ) async throws -> ApplyResult {
        try await connection.execute("BEGIN")
        do {
            // One apply at a time per database.
            try await connection.execute("SELECT pg_advisory_xact_lock(hashtext('rolegate.apply'))")
            let (plan, snapshot) = try await self.plan(database, on: connection)
            if let expected, expected != plan.statements.map(\.display) {
                throw ProvisionError(
                    .changed,
                    "database \(database.name) changed since the plan was shown; nothing was applied. Run plan again.")
            }
            let blockers = plan.blockers
            guard blockers.isEmpty else {
                throw ProvisionError(.refused, blockers.joined(separator: "\n"))
            }
            for statement in plan.statements {
                try await connection.execute(statement.executable(key: key), display: statement.display)
            }
            // Prove it: the database must now match the policy exactly.
            let (after, _) = try await self.plan(database, on: connection, probeCredentials: false)
            if !after.inSync {
                let remaining = after.statements.map { "  \($0.display)" }.joined(separator: "\n")
                throw ProvisionError(
                    .refused,
                    """
                    after applying, database \(database.name) still differs from the policy; rolled back. Still needed:
                    \(remaining)
                    (Grants made by another role can only be revoked by a member of that role.)
                    """)
            }
            try await connection.execute("COMMIT")
            var warnings: [String] = []
            var ended = 0
            let dropped = plan.roles.filter { $0.action == .drop && $0.sessionsToEnd > 0 }
            let oids = dropped.compactMap { snapshot.roles[$0.role]?.oid }
            if !oids.isEmpty {
                do {
                    let rows = try await connection.rows(
                        """
                        SELECT (count(*) FILTER (WHERE pg_terminate_backend(pid)))::int8
                          FROM (SELECT pid FROM pg_stat_activity WHERE usesysid::int8 = ANY(\(oids)) OFFSET 0) s
                        """,
                        as: (Int).self)
                    ended = rows.first ?? 0
                } catch {
                    warnings.append(
                        "could not end the open sessions of dropped role(s) \(dropped.map(\.role).joined(separator: ", ")): \(error.description) (grant the admin pg_signal_backend)"
                    )
                }
            }
            return ApplyResult(plan: plan, sessionsEnded: ended, warnings: warnings)
        } catch {
            try? await connection.execute("ROLLBACK")
            throw error
        }
    }
}
