import PostgresNIO
public import RolegateCore

/// Reads the live catalogs into a ``CatalogSnapshot``: roles and their settings,
/// memberships, the objects the policy names, and (through `aclexplode`) every privilege
/// held by a role that the policy names or that Rolegate manages for this database.
public enum CatalogInspector {
    public static func inspect(
        _ connection: AdminConnection, policy: Policy, database: DatabaseSpec
    ) async throws(ProvisionError) -> CatalogSnapshot {
        let header = try await connection.rows(
            "SELECT current_user::text, current_database()::text, current_setting('server_version_num')::int",
            as: (String, String, Int).self)
        guard let (currentUser, databaseName, serverVersion) = header.first else {
            throw ProvisionError(.server, "the server returned no session information")
        }
        var snapshot = CatalogSnapshot(
            currentUser: currentUser, databaseName: databaseName, serverVersion: serverVersion)

        let roleRows = try await connection.rows(
            """
            SELECT r.oid::int8, r.rolname::text, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb,
                   r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit::int8, r.rolvaliduntil::text,
                   shobj_description(r.oid, 'pg_authid'), s.setconfig
              FROM pg_roles r
              LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
            """,
            as: (Int, String, Bool, Bool, Bool, Bool, Bool, Bool, Bool, Int, String?, String?, [String]?).self)
        for row in roleRows {
            let role = ActualRole(
                name: row.1, oid: row.0, superuser: row.2, inherit: row.3, createRole: row.4, createDB: row.5,
                canLogin: row.6, replication: row.7, bypassRLS: row.8, connectionLimit: row.9, validUntil: row.10,
                comment: row.11, settings: row.12 ?? [])
            snapshot.roles[role.name] = role
        }
        // A role can change its own password (PostgreSQL lets every role do that): read the
        // stored verifiers when allowed, so `plan --check` sees it and `apply` restores it.
        let readable = try await connection.rows(
            "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')", as: (Bool).self)
        if readable.first == true {
            for (name, password) in try await connection.rows(
                "SELECT rolname::text, rolpassword::text FROM pg_catalog.pg_authid", as: (String, String?).self)
            {
                snapshot.roles[name]?.password = .some(password)
            }
        }

        // The roles whose privileges matter: those the policy declares here, and those
        // Rolegate manages for this database (to drop the ones the policy no longer has).
        let policyRoles = policy.roles(in: database.name)
        var inspected = Set(policyRoles.map(\.name))
        for role in snapshot.roles.values where role.marker?.database == database.name {
            inspected.insert(role.name)
        }
        let names = inspected.sorted()

        for (role, member, grantor) in try await connection.rows(
            """
            SELECT r.rolname::text, m.rolname::text, pg_get_userbyid(am.grantor)::text
              FROM pg_auth_members am
              JOIN pg_roles r ON r.oid = am.roleid
              JOIN pg_roles m ON m.oid = am.member
             WHERE m.rolname = ANY(\(names)) OR m.rolname = current_user
            """, as: (String, String, String).self)
        {
            snapshot.memberships.append(Membership(role: role, member: member, grantor: grantor))
        }

        for name in try await connection.rows(
            "SELECT nspname::text FROM pg_namespace WHERE nspname !~ '^pg_(toast|temp_)'", as: (String).self)
        {
            snapshot.schemas.insert(name)
        }

        for (schema, name, kind) in try await connection.rows(
            """
            SELECT n.nspname::text, c.relname::text, c.relkind::text
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
            """, as: (String, String, String).self)
        {
            snapshot.relations[QualifiedName(schema, name)] = kind == "S" ? .sequence : .table
        }

        // Columns of tables with column grants; routines of schemas with ALL FUNCTIONS; named functions.
        var functionSchemas: Set<String> = []
        for role in policyRoles {
            for grant in role.grants {
                switch grant.target {
                case .table(let s, let n) where grant.columns != nil:
                    let table = QualifiedName(s, n)
                    guard snapshot.columns[table] == nil, snapshot.relations[table] == .table else { continue }
                    let rows = try await connection.rows(
                        """
                        SELECT a.attname::text FROM pg_attribute a
                         WHERE a.attrelid = to_regclass(\(table.sql)) AND a.attnum > 0 AND NOT a.attisdropped
                         ORDER BY a.attnum
                        """, as: (String).self)
                    snapshot.columns[table] = rows
                case .allFunctionsInSchema(let s):
                    functionSchemas.insert(s)
                case .function(let s, let n, let arguments):
                    guard snapshot.resolvedFunctions[grant.target] == nil else { continue }
                    if let identity = try await resolveFunction(
                        connection, signature: "\(SQLQuote.qualified(s, n))(\(arguments))")
                    {
                        snapshot.resolvedFunctions[grant.target] = identity
                    }
                default:
                    break
                }
            }
        }
        if !functionSchemas.isEmpty {
            for (schema, identity) in try await connection.rows(
                """
                SELECT n.nspname::text, format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
                  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = ANY(\(functionSchemas.sorted())) AND p.prokind IN ('f', 'a', 'w')
                """, as: (String, String).self)
            {
                snapshot.routinesBySchema[schema, default: []].append(identity)
            }
        }

        guard !names.isEmpty else { return snapshot }

        for (kind, schema, name, column, grantee, privilegeText, grantable, grantor) in try await connection.rows(
            aclQuery(names), as: (String, String?, String, String?, String, String, Bool, String).self)
        {
            guard let privilege = Privilege(rawValue: privilegeText),
                let object = securable(kind: kind, schema: schema, name: name, column: column)
            else { continue }
            snapshot.grants.append(
                ActualGrant(
                    atom: PrivilegeAtom(grantee: grantee, object: object, privilege: privilege), grantor: grantor,
                    grantable: grantable))
        }

        for (name, owned, elsewhere) in try await connection.rows(
            """
            WITH here AS (SELECT oid FROM pg_database WHERE datname = current_database())
            SELECT r.rolname::text,
                   count(*) FILTER (WHERE s.deptype = 'o' AND (s.dbid = 0 OR s.dbid = (SELECT oid FROM here)))::int8,
                   count(*) FILTER (WHERE s.dbid <> 0 AND s.dbid <> (SELECT oid FROM here))::int8
              FROM pg_roles r
              JOIN pg_shdepend s ON s.refobjid = r.oid AND s.refclassid = 'pg_authid'::regclass
             WHERE r.rolname = ANY(\(names))
             GROUP BY r.rolname
            """, as: (String, Int, Int).self)
        {
            snapshot.ownedObjects[name] = owned
            snapshot.otherDatabaseDependencies[name] = elsewhere
        }

        for (name, count) in try await connection.rows(
            "SELECT usename::text, count(*)::int8 FROM pg_stat_activity WHERE usename = ANY(\(names)) GROUP BY usename",
            as: (String, Int).self)
        {
            snapshot.sessions[name] = count
        }
        return snapshot
    }

    /// PostgreSQL's identity for `schema.name(argtypes)`, or nil when there is no such function.
    /// Runs in a savepoint when inside a transaction, since an unknown type name raises.
    static func resolveFunction(
        _ connection: AdminConnection, signature: String
    ) async throws(ProvisionError) -> String? {
        try await connection.execute("SAVEPOINT rolegate_resolve")
        do {
            let rows = try await connection.rows(
                """
                SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
                  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE p.oid = to_regprocedure(\(signature))
                """, as: (String).self)
            try await connection.execute("RELEASE SAVEPOINT rolegate_resolve")
            return rows.first
        } catch {
            try await connection.execute("ROLLBACK TO SAVEPOINT rolegate_resolve")
            try await connection.execute("RELEASE SAVEPOINT rolegate_resolve")
            return nil
        }
    }

    static func securable(kind: String, schema: String?, name: String, column: String?) -> Securable? {
        switch kind {
        case "database": return .database(name)
        case "schema": return .schema(name)
        case "table": return schema.map { .table(QualifiedName($0, name)) }
        case "sequence": return schema.map { .sequence(QualifiedName($0, name)) }
        case "column":
            guard let schema, let column else { return nil }
            return .column(QualifiedName(schema, name), column)
        case "routine": return .routine(name)
        default:
            guard kind.hasPrefix("defaults:"), let type = DefaultsType(rawValue: String(kind.dropFirst(9))) else {
                return nil
            }
            return .defaults(owner: name, schema: schema, type: type)
        }
    }

    static func aclQuery(_ names: [String]) -> PostgresQuery {
        """
        WITH g AS (SELECT oid, rolname::text AS name FROM pg_roles WHERE rolname = ANY(\(names)))
        SELECT 'database'::text, NULL::text, d.datname::text, NULL::text, g.name, a.privilege_type, a.is_grantable,
               pg_get_userbyid(a.grantor)::text
          FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a JOIN g ON g.oid = a.grantee
         WHERE d.datname = current_database()
        UNION ALL
        SELECT 'schema', NULL, n.nspname::text, NULL, g.name, a.privilege_type, a.is_grantable,
               pg_get_userbyid(a.grantor)::text
          FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a JOIN g ON g.oid = a.grantee
         WHERE a.grantee <> n.nspowner
        UNION ALL
        SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, n.nspname::text, c.relname::text, NULL,
               g.name, a.privilege_type, a.is_grantable, pg_get_userbyid(a.grantor)::text
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN g ON g.oid = a.grantee
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND a.grantee <> c.relowner
        UNION ALL
        SELECT 'column', n.nspname::text, c.relname::text, att.attname::text, g.name, a.privilege_type,
               a.is_grantable, pg_get_userbyid(a.grantor)::text
          FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL aclexplode(att.attacl) a JOIN g ON g.oid = a.grantee
         WHERE att.attnum > 0 AND NOT att.attisdropped AND a.grantee <> c.relowner
        UNION ALL
        SELECT 'routine', n.nspname::text,
               format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), NULL,
               g.name, a.privilege_type, a.is_grantable, pg_get_userbyid(a.grantor)::text
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          CROSS JOIN LATERAL aclexplode(p.proacl) a JOIN g ON g.oid = a.grantee
         WHERE a.grantee <> p.proowner
        UNION ALL
        SELECT 'defaults:' || d.defaclobjtype::text, n.nspname::text, pg_get_userbyid(d.defaclrole)::text, NULL,
               g.name, a.privilege_type, a.is_grantable, pg_get_userbyid(a.grantor)::text
          FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
          CROSS JOIN LATERAL aclexplode(d.defaclacl) a JOIN g ON g.oid = a.grantee
         WHERE a.grantee <> d.defaclrole
        """
    }
}
