import Foundation
import RolegateCore
import RolegatePostgres

/// The ``Store`` contract, written once over a small ``SQLDriver``: the SQLite and
/// PostgreSQL stores differ only in their driver and their DDL.
final class SQLStore: Store {
    let driver: any SQLDriver
    let location: String

    init(driver: any SQLDriver, location: String) {
        self.driver = driver
        self.location = location
    }

    // MARK: - Migrations

    static var supportedVersion: Int { Migrations.all.count }

    /// Brings the schema to this version in one transaction; refuses a newer store untouched.
    func migrate() async throws(StoreError) {
        let dialect = driver.dialect
        try await run(transaction: true) { db in
            let found = try await Self.version(db, dialect: dialect)
            guard found <= Self.supportedVersion else {
                throw StoreError.tooNew(found: found, supported: Self.supportedVersion)
            }
            guard found < Self.supportedVersion else { return }
            for (index, migration) in Migrations.all.enumerated() where index + 1 > found {
                for statement in migration(dialect) { try await db.execute(statement) }
            }
            try await db.execute(
                """
                INSERT INTO rolegate_meta (key, value) VALUES ('schema_version', $1)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """, [.text(String(Self.supportedVersion))])
        }
    }

    private static func version(_ db: any SQLExecutor, dialect: SQLDialect) async throws -> Int {
        let exists: [[SQLValue]] =
            switch dialect {
            case .sqlite:
                try await db.query(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rolegate_meta'", [])
            case .postgres:
                try await db.query(
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'rolegate_meta' AND schemaname = current_schema()",
                    [])
            }
        guard exists.first?.first?.int == 1 else { return 0 }
        let rows = try await db.query("SELECT value FROM rolegate_meta WHERE key = 'schema_version'", [])
        return rows.first?.first?.text.flatMap { Int($0) } ?? 0
    }

    func schemaVersion() async throws(StoreError) -> Int {
        let dialect = driver.dialect
        return try await run(transaction: false) { db in try await Self.version(db, dialect: dialect) }
    }

    // MARK: - Tokens

    func serviceSalt(_ service: String, proposed: [UInt8]) async throws(StoreError) -> [UInt8] {
        try await run(transaction: true) { db in
            let rows = try await db.query(
                "SELECT scram_salt FROM rolegate_services WHERE service = $1", [.text(service)])
            if let existing = rows.first?.first?.text, let salt = Data(base64Encoded: existing) {
                return Array(salt)
            }
            try await db.execute(
                "INSERT INTO rolegate_services (service, scram_salt, created_at) VALUES ($1, $2, $3)",
                [.text(service), .text(Data(proposed).base64EncodedString()), SQLValue(Date())])
            return proposed
        }
    }

    func insertToken(_ token: TokenRecord, exclusive: Bool, now: Date) async throws(StoreError) {
        let notify = driver.dialect == .postgres
        try await run(transaction: true) { db in
            if exclusive {
                let live = try await db.query(
                    """
                    SELECT id FROM rolegate_tokens WHERE service = $1 AND revoked_at IS NULL AND expires_at > $2
                     ORDER BY issued_at DESC LIMIT 1
                    """, [.text(token.service), SQLValue(now)])
                if let id = live.first?.first?.text { throw StoreError.serviceHasLiveToken(id) }
            }
            try await Self.insert(token, db)
            try await Self.appendChange(.issued, token: token, at: now, db, notify: notify)
        }
    }

    func rotate(to token: TokenRecord, graceUntil: Date, now: Date) async throws(StoreError) -> [TokenRecord] {
        let notify = driver.dialect == .postgres
        return try await run(transaction: true) { db in
            let usable = try await Self.usableTokens(service: token.service, now: now, db)
            return try await Self.supersede(usable, with: token, graceUntil: graceUntil, now: now, db, notify: notify)
        }
    }

    /// Lets `old` live only until `graceUntil` (one already in a grace window ends now: at most
    /// two usable tokens per service or subject), then stores `token`; the change feed gets
    /// `rotated` for each old one and `issued`. Returns the superseded tokens.
    private static func supersede(
        _ old: [TokenRecord], with token: TokenRecord, graceUntil: Date, now: Date, _ db: any SQLExecutor,
        notify: Bool
    ) async throws -> [TokenRecord] {
        var superseded: [TokenRecord] = []
        for var record in old {
            record.expiresAt = record.supersededBy != nil ? now : min(record.expiresAt, graceUntil)
            record.supersededBy = token.id
            try await db.execute(
                "UPDATE rolegate_tokens SET expires_at = $1, superseded_by = $2 WHERE id = $3",
                [SQLValue(record.expiresAt), .text(token.id), .text(record.id)])
            try await appendChange(.rotated, token: record, at: now, db, notify: notify)
            superseded.append(record)
        }
        try await insert(token, db)
        try await appendChange(.issued, token: token, at: now, db, notify: notify)
        return superseded
    }

    /// Revokes each of `tokens` now, with the change feed told of each; returns them revoked.
    private static func revokeEach(
        _ tokens: [TokenRecord], reason: String?, now: Date, _ db: any SQLExecutor, notify: Bool
    ) async throws -> [TokenRecord] {
        var revoked: [TokenRecord] = []
        for var token in tokens {
            token.revokedAt = now
            token.revokeReason = reason
            try await db.execute(
                "UPDATE rolegate_tokens SET revoked_at = $1, revoke_reason = $2 WHERE id = $3",
                [SQLValue(now), SQLValue(reason), .text(token.id)])
            try await appendChange(.revoked, token: token, at: now, db, notify: notify)
            revoked.append(token)
        }
        return revoked
    }

    func revoke(id: String, reason: String?, now: Date) async throws(StoreError) -> TokenRecord? {
        let notify = driver.dialect == .postgres
        return try await run(transaction: true) { db in
            guard var token = try await Self.fetch(id: id, db) else { return nil }
            guard token.revokedAt == nil else { return token }
            token.revokedAt = now
            token.revokeReason = reason
            try await db.execute(
                "UPDATE rolegate_tokens SET revoked_at = $1, revoke_reason = $2 WHERE id = $3",
                [SQLValue(now), SQLValue(reason), .text(id)])
            try await Self.appendChange(.revoked, token: token, at: now, db, notify: notify)
            return token
        }
    }

    func revokeAll(service: String, reason: String?, now: Date) async throws(StoreError) -> [TokenRecord] {
        let notify = driver.dialect == .postgres
        return try await run(transaction: true) { db in
            try await Self.revokeEach(
                try await Self.usableTokens(service: service, now: now, db), reason: reason, now: now, db,
                notify: notify)
        }
    }

    func exchange(
        to token: TokenRecord, graceUntil: Date, maxLive: Int, now: Date
    ) async throws(StoreError) -> [TokenRecord] {
        let notify = driver.dialect == .postgres
        return try await run(transaction: true) { db in
            if let digest = token.identityDigest,
                let revoked = try await db.query(
                    "SELECT revoked_at FROM rolegate_tokens WHERE identity_digest = $1 AND revoked_at IS NOT NULL LIMIT 1",
                    [.text(digest)]
                ).first?.first?.date
            {
                throw StoreError.identityRevoked(at: revoked)
            }
            let usable = try await Self.usableTokens(service: token.service, now: now, db)
            // Subjects, not tokens: a person's console login is a second live token of theirs.
            let others = Set(usable.filter { $0.subject != token.subject && $0.supersededBy == nil }.map(\.subject))
            if others.count >= maxLive { throw StoreError.tooManyLiveTokens(limit: maxLive) }
            // One live token per subject, and one per subject's console login: logging in to the
            // console does not cut short the token `rolegate login` keeps, nor the other way.
            return try await Self.supersede(
                usable.filter { $0.subject == token.subject && $0.isConsoleLogin == token.isConsoleLogin }, with: token,
                graceUntil: graceUntil, now: now, db, notify: notify)
        }
    }

    func revokeAll(
        subject: String, service: String?, reason: String?, now: Date
    ) async throws(StoreError)
        -> [TokenRecord]
    {
        let notify = driver.dialect == .postgres
        return try await run(transaction: true) { db in
            let rows = try await db.query(
                """
                SELECT \(Self.columns) FROM rolegate_tokens
                 WHERE subject = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY issued_at
                """, [.text(subject), SQLValue(now)])
            return try await Self.revokeEach(
                try rows.map(Self.record).filter { service == nil || $0.service == service }, reason: reason, now: now,
                db, notify: notify)
        }
    }

    func loginCandidates(service: String, now: Date) async throws(StoreError) -> [TokenRecord] {
        let since = now.addingTimeInterval(-Self.candidateHistory)
        return try await read { db in
            try await db.query(
                """
                SELECT \(Self.columns) FROM rolegate_tokens WHERE service = $1 AND expires_at > $2
                 ORDER BY issued_at DESC, id LIMIT $3
                """, [.text(service), SQLValue(since), .int(Int64(Self.candidateLimit))]
            ).map(Self.record)
        }
    }

    /// How far back ``loginCandidates(service:now:)`` looks: a login with a token that expired
    /// this recently is told so; an older one is only unknown.
    static let candidateHistory: TimeInterval = 86_400
    static let candidateLimit = 1000

    func token(id: String) async throws(StoreError) -> TokenRecord? {
        try await read { db in try await Self.fetch(id: id, db) }
    }

    func tokens(service: String?) async throws(StoreError) -> [TokenRecord] {
        try await read { db in
            let rows =
                if let service {
                    try await db.query(
                        "SELECT \(Self.columns) FROM rolegate_tokens WHERE service = $1 ORDER BY issued_at DESC, id",
                        [.text(service)])
                } else {
                    try await db.query("SELECT \(Self.columns) FROM rolegate_tokens ORDER BY issued_at DESC, id", [])
                }
            return try rows.map(Self.record)
        }
    }

    func recordUse(_ uses: [String: Date]) async throws(StoreError) {
        guard !uses.isEmpty else { return }
        try await run(transaction: true) { db in
            for (id, at) in uses {
                try await db.execute(
                    """
                    UPDATE rolegate_tokens
                       SET last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $2 THEN $2 ELSE last_used_at END
                     WHERE id = $1
                    """, [.text(id), SQLValue(at)])
            }
        }
    }

    func changes(after sequence: Int64, limit: Int) async throws(StoreError) -> [ChangeEvent] {
        try await read { db in
            let rows = try await db.query(
                "SELECT seq, at, kind, token_id, service FROM rolegate_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                [.int(sequence), .int(Int64(limit))])
            return rows.compactMap { row -> ChangeEvent? in
                guard let seq = row[0].int, let at = row[1].date, let kind = row[2].text.flatMap(ChangeEvent.Kind.init),
                    let id = row[3].text, let service = row[4].text
                else { return nil }
                return ChangeEvent(sequence: seq, at: at, kind: kind, tokenID: id, service: service)
            }
        }
    }

    func latestChange() async throws(StoreError) -> Int64 {
        try await read { db in
            try await db.query("SELECT COALESCE(MAX(seq), 0) FROM rolegate_changes", []).first?.first?.int ?? 0
        }
    }

    func close() async {
        await driver.close()
    }

    func changeSignals() -> AsyncStream<Void>? {
        driver.changeSignals()
    }

    // MARK: - Rows

    static let columns = """
        id, service, role, issued_at, expires_at, revoked_at, revoke_reason, last_used_at, issuer, note, \
        superseded_by, secret_sha256, scram_salt, scram_iterations, scram_stored_key, scram_server_key, subject, \
        grant_name, identity_digest, groups_json, access_request
        """

    private static func insert(_ token: TokenRecord, _ db: any SQLExecutor) async throws {
        func b64(_ bytes: [UInt8]) -> SQLValue { .text(Data(bytes).base64EncodedString()) }
        try await db.execute(
            """
            INSERT INTO rolegate_tokens (\(columns))
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
            """,
            [
                .text(token.id), .text(token.service), .text(token.role), SQLValue(token.issuedAt),
                SQLValue(token.expiresAt), SQLValue(token.revokedAt), SQLValue(token.revokeReason),
                SQLValue(token.lastUsedAt), .text(token.issuer), SQLValue(token.note), SQLValue(token.supersededBy),
                b64(token.secret.sha256), b64(token.secret.scram.salt), .int(Int64(token.secret.scram.iterations)),
                b64(token.secret.scram.storedKey), b64(token.secret.scram.serverKey), SQLValue(token.subject),
                SQLValue(token.grant), SQLValue(token.identityDigest), SQLValue(Self.groupsJSON(token.groups)),
                SQLValue(token.accessRequest),
            ])
    }

    private static func fetch(id: String, _ db: any SQLExecutor) async throws -> TokenRecord? {
        try await db.query("SELECT \(columns) FROM rolegate_tokens WHERE id = $1", [.text(id)]).first.map(record)
    }

    private static func usableTokens(service: String, now: Date, _ db: any SQLExecutor) async throws -> [TokenRecord] {
        try await db.query(
            """
            SELECT \(columns) FROM rolegate_tokens
             WHERE service = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY issued_at
            """, [.text(service), SQLValue(now)]
        ).map(record)
    }

    private static func appendChange(
        _ kind: ChangeEvent.Kind, token: TokenRecord, at: Date, _ db: any SQLExecutor, notify: Bool
    ) async throws {
        try await db.execute(
            "INSERT INTO rolegate_changes (at, kind, token_id, service) VALUES ($1, $2, $3, $4)",
            [SQLValue(at), .text(kind.rawValue), .text(token.id), .text(token.service)])
        if notify { try await db.execute("NOTIFY rolegate_changes") }
    }

    /// A token's groups as stored (a JSON array; NULL for none).
    static func groupsJSON(_ groups: [String]) -> String? {
        guard !groups.isEmpty, let data = try? JSONEncoder().encode(groups) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    struct CorruptRow: Error, CustomStringConvertible {
        var description: String { "a token row in the store is malformed" }
    }

    static func record(_ row: [SQLValue]) throws -> TokenRecord {
        func bytes(_ value: SQLValue) throws -> [UInt8] {
            guard let text = value.text, let data = Data(base64Encoded: text) else { throw CorruptRow() }
            return Array(data)
        }
        guard row.count == 21, let id = row[0].text, let service = row[1].text, let role = row[2].text,
            let issued = row[3].date, let expires = row[4].date, let issuer = row[8].text,
            let iterations = row[13].int
        else { throw CorruptRow() }
        var record = TokenRecord(
            id: id, service: service, role: role, issuedAt: issued, expiresAt: expires, revokedAt: row[5].date,
            revokeReason: row[6].text, lastUsedAt: row[7].date, issuer: issuer, note: row[9].text,
            supersededBy: row[10].text, subject: row[16].text, grant: row[17].text, identityDigest: row[18].text,
            secret: TokenSecret(
                sha256: try bytes(row[11]),
                scram: SCRAMSHA256.Verifier(
                    salt: try bytes(row[12]), iterations: Int(iterations), storedKey: try bytes(row[14]),
                    serverKey: try bytes(row[15]))))
        record.groups = row[19].text.flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) } ?? []
        record.accessRequest = row[20].text
        return record
    }

    // MARK: - Errors

    func run<T: Sendable>(
        transaction: Bool, serialized: Bool = true, _ body: @Sendable (any SQLExecutor) async throws -> T
    )
        async throws(StoreError) -> T
    {
        try await storeErrors { try await driver.run(transaction: transaction, serialized: serialized, body) }
    }

    /// ``run(transaction:serialized:_:)`` for a `body` that only reads (see ``SQLDriver/read(_:)``).
    func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws(StoreError) -> T {
        try await storeErrors { try await driver.read(body) }
    }

    /// Runs `operation`, turning any error it throws into a ``StoreError``.
    private func storeErrors<T>(_ operation: () async throws -> T) async throws(StoreError) -> T {
        do {
            return try await operation()
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError.failed(Self.describe(error))
        }
    }

    static func describe(_ error: any Error) -> String {
        PostgresErrorText.describe(error)
    }
}

/// The store's schema, one entry per version. Never edit a shipped entry: add one.
enum Migrations {
    static let all: [@Sendable (SQLDialect) -> [String]] = [version1, version2, version3, version4, version5]

    /// The audit log in blocks (``AuditBlock``): one row per group commit with its summary, and
    /// the keys (tokens, sessions, services) each block mentions. Events of the earlier layout
    /// stay in `rolegate_audit` and are read, verified and pruned there; the chain continues
    /// from them. Block ids start above every earlier event's id (an event's id is its block's
    /// times 65,536 plus its place), so ids keep growing across the change.
    static func version5(_ dialect: SQLDialect) -> [String] {
        let int = dialect == .sqlite ? "INTEGER" : "BIGINT"
        var statements = [
            """
            CREATE TABLE rolegate_audit_blocks (
                id \(int) PRIMARY KEY,
                instance TEXT NOT NULL,
                first_sequence \(int) NOT NULL,
                last_sequence \(int) NOT NULL,
                first_at \(int) NOT NULL,
                last_at \(int) NOT NULL,
                event_count \(int) NOT NULL,
                kinds \(int) NOT NULL,
                counts TEXT NOT NULL,
                previous_hash TEXT NOT NULL,
                last_hash TEXT NOT NULL,
                payload \(dialect == .sqlite ? "BLOB" : "BYTEA") NOT NULL,
                UNIQUE (instance, first_sequence)
            )
            """,
            "CREATE INDEX rolegate_audit_blocks_by_time ON rolegate_audit_blocks (last_at)",
            """
            CREATE TABLE rolegate_audit_keys (
                key TEXT NOT NULL,
                block \(int) NOT NULL,
                PRIMARY KEY (key, block)
            )\(dialect == .sqlite ? " WITHOUT ROWID" : "")
            """,
            // Verification reads a page of blocks' keys, retention deletes them: by block.
            "CREATE INDEX rolegate_audit_keys_by_block ON rolegate_audit_keys (block)",
        ]
        if dialect == .postgres {
            statements += [
                "CREATE SEQUENCE rolegate_audit_block_ids",
                "SELECT setval('rolegate_audit_block_ids', COALESCE((SELECT MAX(id) FROM rolegate_audit), 0) / 65536 + 1)",
            ]
        }
        return statements
    }

    /// Exchanged tokens: who they were exchanged for (the identity token's subject), the group
    /// that granted them, the groups their identity listed, the access request that granted an
    /// elevated token; access requests, their decisions, and webhook deliveries.
    static func version4(_ dialect: SQLDialect) -> [String] {
        let int = dialect == .sqlite ? "INTEGER" : "BIGINT"
        let serial = dialect == .sqlite ? "INTEGER PRIMARY KEY AUTOINCREMENT" : "BIGSERIAL PRIMARY KEY"
        return [
            "ALTER TABLE rolegate_tokens ADD COLUMN subject TEXT",
            "ALTER TABLE rolegate_tokens ADD COLUMN grant_name TEXT",
            "ALTER TABLE rolegate_tokens ADD COLUMN identity_digest TEXT",
            "ALTER TABLE rolegate_tokens ADD COLUMN groups_json TEXT",
            "ALTER TABLE rolegate_tokens ADD COLUMN access_request TEXT",
            "CREATE INDEX rolegate_tokens_by_subject ON rolegate_tokens (subject, expires_at)",
            "CREATE INDEX rolegate_tokens_by_identity ON rolegate_tokens (identity_digest)",
            """
            CREATE TABLE rolegate_access_requests (
                id TEXT PRIMARY KEY,
                access TEXT NOT NULL,
                role TEXT NOT NULL,
                requester TEXT NOT NULL,
                reason TEXT,
                duration_ms \(int) NOT NULL,
                state TEXT NOT NULL,
                break_glass \(int) NOT NULL,
                created_at \(int) NOT NULL,
                pending_until \(int) NOT NULL,
                decided_at \(int),
                granted_until \(int),
                token_id TEXT,
                ended_at \(int),
                end_reason TEXT
            )
            """,
            "CREATE INDEX rolegate_access_requests_by_state ON rolegate_access_requests (state, created_at)",
            """
            CREATE TABLE rolegate_access_decisions (
                request_id TEXT NOT NULL,
                approver TEXT NOT NULL,
                approve \(int) NOT NULL,
                comment TEXT,
                at \(int) NOT NULL,
                PRIMARY KEY (request_id, approver)
            )
            """,
            """
            CREATE TABLE rolegate_webhook_deliveries (
                id \(serial),
                webhook TEXT NOT NULL,
                event TEXT NOT NULL,
                request_id TEXT,
                body TEXT NOT NULL,
                created_at \(int) NOT NULL,
                attempts \(int) NOT NULL,
                next_attempt_at \(int) NOT NULL,
                state TEXT NOT NULL,
                last_status \(int),
                last_error TEXT,
                delivered_at \(int)
            )
            """,
            "CREATE INDEX rolegate_webhook_deliveries_due ON rolegate_webhook_deliveries (state, next_attempt_at)",
        ]
    }

    /// Gateway instances sharing the store: their cancel tags and addresses.
    static func version3(_ dialect: SQLDialect) -> [String] {
        let int = dialect == .sqlite ? "INTEGER" : "BIGINT"
        return [
            """
            CREATE TABLE rolegate_instances (
                instance TEXT PRIMARY KEY,
                cancel_tag \(int) NOT NULL UNIQUE,
                wire_address TEXT NOT NULL,
                http_address TEXT,
                started_at \(int) NOT NULL,
                seen_at \(int) NOT NULL
            )
            """
        ]
    }

    /// The audit log: one hash chain per writer instance, and each chain's head.
    static func version2(_ dialect: SQLDialect) -> [String] {
        let int = dialect == .sqlite ? "INTEGER" : "BIGINT"
        let serial = dialect == .sqlite ? "INTEGER PRIMARY KEY AUTOINCREMENT" : "BIGSERIAL PRIMARY KEY"
        return [
            """
            CREATE TABLE rolegate_audit (
                id \(serial),
                instance TEXT NOT NULL,
                sequence \(int) NOT NULL,
                at \(int) NOT NULL,
                kind TEXT NOT NULL,
                action TEXT NOT NULL,
                service TEXT,
                token_id TEXT,
                role_name TEXT,
                database_name TEXT,
                session_id TEXT,
                client TEXT,
                sql_text TEXT,
                sql_state TEXT,
                row_count \(int),
                duration_us \(int),
                detail TEXT NOT NULL,
                previous_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                UNIQUE (instance, sequence)
            )
            """,
            "CREATE INDEX rolegate_audit_by_time ON rolegate_audit (at)",
            "CREATE INDEX rolegate_audit_by_token ON rolegate_audit (token_id)",
            """
            CREATE TABLE rolegate_audit_chains (
                instance TEXT PRIMARY KEY,
                last_sequence \(int) NOT NULL,
                last_hash TEXT NOT NULL,
                updated_at \(int) NOT NULL
            )
            """,
        ]
    }

    static func version1(_ dialect: SQLDialect) -> [String] {
        let int = dialect == .sqlite ? "INTEGER" : "BIGINT"
        let serial = dialect == .sqlite ? "INTEGER PRIMARY KEY AUTOINCREMENT" : "BIGSERIAL PRIMARY KEY"
        return [
            "CREATE TABLE rolegate_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE rolegate_services (service TEXT PRIMARY KEY, scram_salt TEXT NOT NULL, created_at \(int) NOT NULL)",
            """
            CREATE TABLE rolegate_tokens (
                id TEXT PRIMARY KEY,
                service TEXT NOT NULL,
                role TEXT NOT NULL,
                issued_at \(int) NOT NULL,
                expires_at \(int) NOT NULL,
                revoked_at \(int),
                revoke_reason TEXT,
                last_used_at \(int),
                issuer TEXT NOT NULL,
                note TEXT,
                superseded_by TEXT,
                secret_sha256 TEXT NOT NULL,
                scram_salt TEXT NOT NULL,
                scram_iterations \(int) NOT NULL,
                scram_stored_key TEXT NOT NULL,
                scram_server_key TEXT NOT NULL
            )
            """,
            "CREATE INDEX rolegate_tokens_by_service ON rolegate_tokens (service, expires_at)",
            """
            CREATE TABLE rolegate_changes (
                seq \(serial),
                at \(int) NOT NULL,
                kind TEXT NOT NULL,
                token_id TEXT NOT NULL,
                service TEXT NOT NULL
            )
            """,
        ]
    }
}

enum SQLiteStore {
    static func open(path: String, appendOnly: Bool = false) async throws(StoreError) -> any Store {
        try await SQLStore.open(location: "sqlite:\(path)") { () async throws(StoreError) -> any SQLDriver in
            do {
                return try await SQLiteDriver.open(path: path, appendOnly: appendOnly)
            } catch {
                throw StoreError.unavailable("cannot open sqlite:\(path): \(error)")
            }
        }
    }
}

enum PostgresStore {
    static func open(url: String) async throws(StoreError) -> any Store {
        try await SQLStore.open(location: ConnectionURL.redact(url)) { () async throws(StoreError) -> any SQLDriver in
            do {
                return try await PostgresDriver.open(url: url)
            } catch {
                throw StoreError.unavailable(
                    "cannot connect to \(ConnectionURL.redact(url)): \(PostgresErrorText.describe(error))")
            }
        }
    }
}

extension SQLStore {
    /// Connects with `connect`, then migrates; closes the connection again if migrating fails.
    static func open(
        location: String, connect: () async throws(StoreError) -> any SQLDriver
    ) async throws(StoreError)
        -> any Store
    {
        let store = SQLStore(driver: try await connect(), location: location)
        do {
            try await store.migrate()
        } catch {
            await store.close()
            throw error
        }
        return store
    }
}
