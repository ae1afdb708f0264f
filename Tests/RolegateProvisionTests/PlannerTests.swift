import RolegateCore
import RolegateTestSupport
import Testing

@testable import RolegateProvision

let policyText = """
    version: 1
    databases:
      app:
        url: postgres://admin@127.0.0.1/app
    roles:
      reader:
        description: Reads things
        connection_limit: 5
        settings: {statement_timeout: 30s}
        grants:
          - on: SCHEMA public
            privileges: [USAGE]
          - on: ALL TABLES IN SCHEMA public
            privileges: [SELECT]
            future: true
      writer:
        grants:
          - on: TABLE billing.customers
            privileges: [SELECT, UPDATE]
            columns: [id, email]
    services:
      dash: {role: reader}
      api: {role: writer}
    """

let key = MasterKey(bytes: Array(repeating: 1, count: 32))

func snapshot() -> CatalogSnapshot {
    CatalogSnapshot(
        currentUser: "admin", databaseName: "app_db",
        roles: ["admin": ActualRole(name: "admin", createRole: true), "bob": ActualRole(name: "bob")],
        schemas: ["public", "billing"],
        relations: [
            QualifiedName("public", "a"): .table, QualifiedName("public", "b"): .table,
            QualifiedName("public", "s"): .sequence, QualifiedName("billing", "customers"): .table,
        ],
        columns: [QualifiedName("billing", "customers"): ["id", "email", "ssn"]])
}

func makePlan(
    _ snap: CatalogSnapshot, policy: String = policyText, options: Planner.Options? = nil
) throws -> DatabasePlan {
    let policy = try PolicyLoader.parse(text: policy, file: "p.yaml", environment: [:])
    let database = policy.databases[0]
    let desired = try DesiredStateBuilder.build(policy: policy, database: database, snapshot: snap)
    return try Planner.plan(
        desired: desired, snapshot: snap, database: database,
        options: options ?? Planner.Options(keyFingerprint: key.fingerprint))
}

/// A snapshot in which both roles exist exactly as the policy wants.
func inSyncSnapshot() -> CatalogSnapshot {
    var snap = snapshot()
    let marker = { (description: String?) in
        ManagedMarker(database: "app", keyFingerprint: key.fingerprint, description: description).comment
    }
    snap.roles["reader"] = ActualRole(
        name: "reader", connectionLimit: 5, comment: marker("Reads things"), settings: ["statement_timeout=30s"])
    snap.roles["writer"] = ActualRole(name: "writer", comment: marker(nil))
    func grant(_ role: String, _ object: Securable, _ privilege: Privilege) -> ActualGrant {
        ActualGrant(atom: PrivilegeAtom(grantee: role, object: object, privilege: privilege), grantor: "admin")
    }
    snap.grants = [
        grant("reader", .database("app_db"), .connect),
        grant("reader", .schema("public"), .usage),
        grant("reader", .table(QualifiedName("public", "a")), .select),
        grant("reader", .table(QualifiedName("public", "b")), .select),
        grant("reader", .defaults(owner: "admin", schema: "public", type: .tables), .select),
        grant("writer", .database("app_db"), .connect),
    ]
    for column in ["id", "email"] {
        for privilege in [Privilege.select, .update] {
            snap.grants.append(grant("writer", .column(QualifiedName("billing", "customers"), column), privilege))
        }
    }
    return snap
}

@Suite(.ownThreads) struct PlannerTests {
    @Test func emptyDatabaseCreatesEverything() throws {
        let plan = try makePlan(snapshot())
        #expect(plan.roles.map(\.action) == [.create, .create])
        let reader = plan.roles[0].statements.map(\.display)
        #expect(
            reader == [
                "CREATE ROLE \"reader\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT 5 PASSWORD '***';",
                "COMMENT ON ROLE \"reader\" IS E'rolegate:managed db=app key=\(key.fingerprint)\\nReads things';",
                "ALTER ROLE \"reader\" SET \"statement_timeout\" TO '30s';",
                "GRANT CONNECT ON DATABASE \"app_db\" TO \"reader\";",
                "GRANT USAGE ON SCHEMA \"public\" TO \"reader\";",
                "GRANT SELECT ON TABLE \"public\".\"a\" TO \"reader\";",
                "GRANT SELECT ON TABLE \"public\".\"b\" TO \"reader\";",
                "ALTER DEFAULT PRIVILEGES FOR ROLE \"admin\" IN SCHEMA \"public\" GRANT SELECT ON TABLES TO \"reader\";",
            ])
        #expect(
            plan.roles[1].statements.last?.display
                == "GRANT SELECT (\"email\", \"id\"), UPDATE (\"email\", \"id\") ON TABLE \"billing\".\"customers\" TO \"writer\";"
        )
        #expect(PlanRenderer.Summary([plan]).line == "2 to create, 0 to change, 0 to drop")
    }

    @Test func credentialIsNeverDisplayedButIsExecuted() throws {
        let create = try makePlan(snapshot()).roles[0].statements[0]
        #expect(create.display.hasSuffix("PASSWORD '***';"))
        let executable = create.executable(key: key)
        #expect(executable.contains(key.roleVerifier(role: "reader").postgresText))
        #expect(!executable.contains(key.rolePassword(role: "reader")))
        #expect(!PlanRenderer.text([try makePlan(snapshot())]).contains("SCRAM-SHA-256$"))
        #expect(!PlanRenderer.json([try makePlan(snapshot())]).contains("SCRAM-SHA-256$"))
    }

    @Test func inSyncDatabaseHasNothingToDo() throws {
        let plan = try makePlan(inSyncSnapshot())
        #expect(plan.inSync)
        #expect(plan.statements.isEmpty)
    }

    @Test func driftBothWays() throws {
        var snap = inSyncSnapshot()
        snap.grants.removeAll { $0.atom.grantee == "reader" && $0.atom.object == .table(QualifiedName("public", "b")) }
        snap.grants.append(
            ActualGrant(
                atom: PrivilegeAtom(
                    grantee: "reader", object: .table(QualifiedName("billing", "customers")), privilege: .delete),
                grantor: "owner_x"))
        snap.grants.append(
            ActualGrant(
                atom: PrivilegeAtom(
                    grantee: "writer", object: .column(QualifiedName("billing", "customers"), "ssn"), privilege: .select
                ),
                grantor: "admin"))
        snap.grants.append(
            ActualGrant(
                atom: PrivilegeAtom(
                    grantee: "writer", object: .table(QualifiedName("public", "a")), privilege: .insert),
                grantor: "admin"))
        snap.roles["reader"]!.connectionLimit = 50
        snap.roles["reader"]!.settings = ["statement_timeout=0", "work_mem=1GB"]
        snap.roles["writer"]!.createDB = true
        snap.memberships = [Membership(role: "pg_read_all_data", member: "writer", grantor: "postgres")]
        let plan = try makePlan(snap)
        #expect(plan.roles.map(\.action) == [.change, .change])
        #expect(
            plan.roles[0].statements.map(\.display) == [
                "ALTER ROLE \"reader\" WITH CONNECTION LIMIT 5;",
                "ALTER ROLE \"reader\" RESET \"work_mem\";",
                "ALTER ROLE \"reader\" SET \"statement_timeout\" TO '30s';",
                "REVOKE DELETE ON TABLE \"billing\".\"customers\" FROM \"reader\" GRANTED BY \"owner_x\";",
                "GRANT SELECT ON TABLE \"public\".\"b\" TO \"reader\";",
            ])
        #expect(
            plan.roles[1].statements.map(\.display) == [
                "ALTER ROLE \"writer\" WITH NOCREATEDB;",
                "REVOKE \"pg_read_all_data\" FROM \"writer\";",
                // column revokes come before table revokes
                "REVOKE SELECT (\"ssn\") ON TABLE \"billing\".\"customers\" FROM \"writer\";",
                "REVOKE INSERT ON TABLE \"public\".\"a\" FROM \"writer\";",
            ])
        #expect(PlanRenderer.Summary([plan]).line == "0 to create, 2 to change, 0 to drop")
    }

    @Test func grantOptionIsRevoked() throws {
        var snap = inSyncSnapshot()
        let index = snap.grants.firstIndex { $0.atom.object == .schema("public") }!
        snap.grants[index].grantable = true
        let plan = try makePlan(snap)
        #expect(
            plan.statements.map(\.display) == [
                "REVOKE GRANT OPTION FOR USAGE ON SCHEMA \"public\" FROM \"reader\";"
            ])
    }

    @Test func newMasterKeyResetsCredentials() throws {
        let other = MasterKey(bytes: Array(repeating: 2, count: 32))
        let plan = try makePlan(inSyncSnapshot(), options: Planner.Options(keyFingerprint: other.fingerprint))
        #expect(plan.roles.allSatisfy { $0.action == .change })
        #expect(plan.roles[0].statements[0].display == "ALTER ROLE \"reader\" WITH PASSWORD '***';")
        #expect(plan.roles[0].statements[1].display.contains("key=\(other.fingerprint)"))
    }

    @Test func aPasswordChangedBehindRolegatesBackIsDriftAndIsRestored() throws {
        let options = Planner.Options(
            keyFingerprint: key.fingerprint, expectedPassword: { key.roleVerifier(role: $0).postgresText })
        var snap = inSyncSnapshot()
        for name in ["reader", "writer"] {
            snap.roles[name]?.password = .some(key.roleVerifier(role: name).postgresText)
        }
        #expect(try makePlan(snap, options: options).roles.allSatisfy { $0.action == .unchanged })
        // The role ran ALTER ROLE ... PASSWORD itself: only its credential is planned, redacted.
        snap.roles["reader"]?.password = .some("SCRAM-SHA-256$4096:c2FsdA==$abc:def")
        var plan = try makePlan(snap, options: options)
        #expect(plan.roles.filter { $0.action == .change }.map(\.role) == ["reader"])
        #expect(
            plan.roles.first { $0.role == "reader" }?.statements.map(\.display) == [
                "ALTER ROLE \"reader\" WITH PASSWORD '***';"
            ])
        // A removed password is drift too; an unreadable one (not a superuser) is not judged.
        snap.roles["reader"]?.password = .some(nil)
        plan = try makePlan(snap, options: options)
        #expect(plan.roles.first { $0.role == "reader" }?.action == .change)
        snap.roles["reader"]?.password = nil
        #expect(try makePlan(snap, options: options).roles.allSatisfy { $0.action == .unchanged })
    }

    @Test func unmanagedRoleIsNeverTakenOverSilently() throws {
        var snap = snapshot()
        snap.roles["reader"] = ActualRole(name: "reader")
        #expect {
            try makePlan(snap)
        } throws: { error in
            "\(error)".contains("already exists and is not managed by Rolegate")
        }
        let adopted = try makePlan(
            snap,
            policy: policyText.replacingOccurrences(
                of: "    description: Reads things\n", with: "    description: Reads things\n    adopt: true\n"))
        #expect(adopted.roles[0].action == .change)
        #expect(adopted.roles[0].notes.contains("adopting an existing role"))
    }

    @Test func roleManagedForAnotherDatabaseIsRefused() throws {
        var snap = snapshot()
        snap.roles["reader"] = ActualRole(
            name: "reader", comment: ManagedMarker(database: "other", keyFingerprint: nil, description: nil).comment)
        #expect(throws: ResolutionError.self) { try makePlan(snap) }
    }

    @Test func managedRolesLeftOutOfThePolicyAreDropped() throws {
        var snap = inSyncSnapshot()
        let marker = ManagedMarker(database: "app", keyFingerprint: key.fingerprint, description: nil).comment
        snap.roles["old"] = ActualRole(name: "old", oid: 99, comment: marker)
        snap.roles["foreign"] = ActualRole(
            name: "foreign",
            comment: ManagedMarker(database: "elsewhere", keyFingerprint: nil, description: nil).comment)
        snap.grants.append(
            ActualGrant(
                atom: PrivilegeAtom(grantee: "old", object: .schema("public"), privilege: .usage), grantor: "admin"))
        snap.sessions["old"] = 2
        var plan = try makePlan(snap)
        let drop = try #require(plan.roles.first { $0.role == "old" })
        #expect(drop.action == .drop)
        #expect(drop.blockers.isEmpty)
        #expect(drop.sessionsToEnd == 2)
        #expect(
            drop.statements.map(\.display) == [
                "REVOKE USAGE ON SCHEMA \"public\" FROM \"old\";", "DROP ROLE \"old\";",
            ])
        #expect(!plan.roles.contains { $0.role == "foreign" || $0.role == "bob" })

        snap.ownedObjects["old"] = 3
        plan = try makePlan(snap)
        #expect(
            plan.blockers == [
                "role old: owns 3 object(s); apply refuses to drop it unless given --reassign-owned-to ROLE"
            ])
        plan = try makePlan(snap, options: Planner.Options(keyFingerprint: key.fingerprint, reassignOwnedTo: "admin"))
        #expect(plan.blockers.isEmpty)
        let statements = plan.roles.first { $0.role == "old" }!.statements.map(\.display)
        #expect(statements.prefix(2) == ["GRANT \"old\" TO CURRENT_USER;", "REASSIGN OWNED BY \"old\" TO \"admin\";"])
    }

    @Test func missingObjectsAreReportedWithTheirPolicyLine() throws {
        var snap = snapshot()
        snap.relations.removeValue(forKey: QualifiedName("billing", "customers"))
        #expect {
            try makePlan(snap)
        } throws: { error in
            let text = "\(error)"
            return text.contains("p.yaml:18:") && text.contains("TABLE \"billing\".\"customers\" does not exist")
        }
        snap = snapshot()
        snap.columns[QualifiedName("billing", "customers")] = ["id"]
        #expect {
            try makePlan(snap)
        } throws: { error in
            "\(error)".contains("has no column 'email'")
        }
    }

    @Test func hostileNamesAreQuoted() throws {
        let policy = """
            version: 1
            databases: {app: {url: "postgres://a@h/app"}}
            roles:
              "x\\"; DROP ROLE admin; --":
                grants:
                  - on: SCHEMA "s""; --"
                    privileges: [USAGE]
            """
        var snap = snapshot()
        snap.schemas.insert("s\"; --")
        let plan = try makePlan(snap, policy: policy)
        let statements = plan.statements.map(\.display)
        #expect(statements.contains("GRANT USAGE ON SCHEMA \"s\"\"; --\" TO \"x\"\"; DROP ROLE admin; --\";"))
        #expect(statements[0].hasPrefix("CREATE ROLE \"x\"\"; DROP ROLE admin; --\" WITH LOGIN"))
    }

    @Test func powerfulRolesCannotBeJoined() throws {
        var snap = snapshot()
        snap.roles["dba"] = ActualRole(name: "dba", superuser: true)
        let policy = policyText.replacingOccurrences(
            of: "    connection_limit: 5\n", with: "    connection_limit: 5\n    member_of: [dba]\n")
        #expect {
            try makePlan(snap, policy: policy)
        } throws: { error in
            "\(error)".contains("a managed role may not join it")
        }
    }
}
