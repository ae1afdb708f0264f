import Foundation
import NIOPosix
import RolegateCore
// SQLiteNIO's own build of SQLite (symbols prefixed `sqlite_nio_`), visible through the
// SQLiteNIO dependency: the same library the rest of the store uses, not a second one.
import VaporCSQLite

/// The audit writer's hot path on SQLite, through SQLite's C API on a connection of its own.
///
/// A group commit is one hop to the store's thread (SQLiteNIO hops for every statement) and
/// writes one ``AuditBlock`` row (more only past ``AuditBlock/maxEvents``), its keys and the
/// chain head, with statements prepared once and reused. Blocks, keys and the head are exactly
/// what the portable path (``SQLStore`` over ``SQLExecutor``) writes; `audit verify` cannot
/// tell them apart.
///
/// Used only on its thread (a one-thread pool the driver owns), hence `@unchecked Sendable`.
final class SQLiteAuditAppender: @unchecked Sendable {
    private let path: String
    private let thread: NIOThreadPool
    private var db: OpaquePointer?
    /// Prepared statements by their SQL text.
    private var statements: [String: OpaquePointer] = [:]

    init(path: String, thread: NIOThreadPool) {
        self.path = path
        self.thread = thread
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Links `events` after the chain's head and appends them in one transaction; returns
    /// them linked when `returningLinked` (the audit writer does not need them back).
    func append(_ events: [AuditEvent], instance: String, returningLinked: Bool) async throws -> [AuditEvent] {
        try await thread.runIfActive {
            try self.appendNow(events, instance: instance, returningLinked: returningLinked)
        }
    }

    func close() async {
        _ = try? await thread.runIfActive { self.closeNow() }
    }

    // MARK: - On the store's thread

    private func appendNow(_ events: [AuditEvent], instance: String, returningLinked: Bool) throws -> [AuditEvent] {
        guard !events.isEmpty else { return [] }
        let db = try connection()
        try execute("BEGIN IMMEDIATE", db)
        do {
            let head = try chainHead(instance: instance, db)
            var linked: [AuditEvent] = []
            let blocks = AuditBlock.seal(events, instance: instance, after: head)
            let insertBlock = try prepared(SQLiteDriver.Executor.sqlitePlaceholders(SQLStore.insertBlockSQL), db)
            let insertKey = try prepared("INSERT INTO rolegate_audit_keys (key, block) VALUES (?1, ?2)", db)
            for block in blocks {
                let id = try nextBlockID(db)
                sqlite_nio_sqlite3_bind_int64(insertBlock, 1, id)
                Self.bind(text: block.instance, 2, insertBlock)
                sqlite_nio_sqlite3_bind_int64(insertBlock, 3, block.firstSequence)
                sqlite_nio_sqlite3_bind_int64(insertBlock, 4, block.lastSequence)
                sqlite_nio_sqlite3_bind_int64(insertBlock, 5, block.firstAt)
                sqlite_nio_sqlite3_bind_int64(insertBlock, 6, block.lastAt)
                sqlite_nio_sqlite3_bind_int64(insertBlock, 7, Int64(block.count))
                sqlite_nio_sqlite3_bind_int64(insertBlock, 8, block.kinds)
                Self.bind(text: block.counts, 9, insertBlock)
                Self.bind(text: block.previousHash, 10, insertBlock)
                Self.bind(text: block.lastHash, 11, insertBlock)
                try block.payload.withUnsafeBytes { payload in
                    // Read in place until `run` resets the statement.
                    sqlite_nio_sqlite3_bind_blob(
                        insertBlock, 12, payload.baseAddress, Int32(payload.count), staticBytes)
                    try run(insertBlock, db)
                }
                for key in block.keys {
                    Self.bind(text: key, 1, insertKey)
                    sqlite_nio_sqlite3_bind_int64(insertKey, 2, id)
                    try run(insertKey, db)
                }
                if returningLinked { linked += try block.decode(blockID: id).events }
            }
            let last = blocks.last!
            let moveHead = try prepared(
                """
                INSERT INTO rolegate_audit_chains (instance, last_sequence, last_hash, updated_at) VALUES (?1, ?2, ?3, ?4)
                ON CONFLICT (instance) DO UPDATE SET last_sequence = excluded.last_sequence,
                    last_hash = excluded.last_hash, updated_at = excluded.updated_at
                """, db)
            Self.bind(text: instance, 1, moveHead)
            sqlite_nio_sqlite3_bind_int64(moveHead, 2, last.lastSequence)
            Self.bind(text: last.lastHash, 3, moveHead)
            sqlite_nio_sqlite3_bind_int64(moveHead, 4, last.lastAt)
            try run(moveHead, db)
            try execute("COMMIT", db)
            return linked
        } catch {
            _ = sqlite_nio_sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            // A statement may have gone stale (a schema change by another process): prepare afresh.
            finalizeStatements()
            throw error
        }
    }

    /// As ``SQLStore/nextBlockID(dialect:_:)`` decides it for SQLite.
    private func nextBlockID(_ db: OpaquePointer) throws -> Int64 {
        func maximum(_ sql: String) throws -> Int64? {
            let select = try prepared(sql, db)
            defer { sqlite_nio_sqlite3_reset(select) }
            guard sqlite_nio_sqlite3_step(select) == SQLITE_ROW else {
                throw failure("reading the newest audit block", db)
            }
            return sqlite_nio_sqlite3_column_type(select, 0) == SQLITE_NULL
                ? nil : sqlite_nio_sqlite3_column_int64(select, 0)
        }
        if let newest = try maximum("SELECT MAX(id) FROM rolegate_audit_blocks") { return newest + 1 }
        return (try maximum("SELECT MAX(id) FROM rolegate_audit") ?? 0) / AuditBlock.idsPerBlock + 1
    }

    private func chainHead(instance: String, _ db: OpaquePointer) throws -> (sequence: Int64, hash: String)? {
        let select = try prepared("SELECT last_sequence, last_hash FROM rolegate_audit_chains WHERE instance = ?1", db)
        Self.bind(text: instance, 1, select)
        defer { sqlite_nio_sqlite3_reset(select) }
        switch sqlite_nio_sqlite3_step(select) {
        case SQLITE_ROW:
            guard let text = sqlite_nio_sqlite3_column_text(select, 1) else { return nil }
            return (sqlite_nio_sqlite3_column_int64(select, 0), String(cString: text))
        case SQLITE_DONE:
            return nil
        default:
            throw failure("reading the audit chain's head", db)
        }
    }

    private static func bind(text: String?, _ index: Int32, _ statement: OpaquePointer) {
        guard var text else {
            sqlite_nio_sqlite3_bind_null(statement, index)
            return
        }
        text.withUTF8 { bytes in
            // An empty buffer may have no address, and a NULL pointer would bind SQL NULL.
            let empty: StaticString = ""
            let start = bytes.baseAddress ?? empty.utf8Start
            _ = start.withMemoryRebound(to: CChar.self, capacity: max(bytes.count, 1)) {
                sqlite_nio_sqlite3_bind_text(statement, index, $0, Int32(bytes.count), transient)
            }
        }
    }

    /// Steps a statement that returns no rows to its end, then readies it for reuse.
    private func run(_ statement: OpaquePointer, _ db: OpaquePointer) throws {
        defer {
            sqlite_nio_sqlite3_reset(statement)
            sqlite_nio_sqlite3_clear_bindings(statement)
        }
        guard sqlite_nio_sqlite3_step(statement) == SQLITE_DONE else { throw failure("appending audit events", db) }
    }

    private func execute(_ sql: String, _ db: OpaquePointer) throws {
        guard sqlite_nio_sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw failure(sql, db) }
    }

    private func prepared(_ sql: String, _ db: OpaquePointer) throws -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        guard sqlite_nio_sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw failure("preparing an audit statement", db)
        }
        statements[sql] = statement
        return statement
    }

    private func connection() throws -> OpaquePointer {
        if let db { return db }
        var handle: OpaquePointer?
        let status = sqlite_nio_sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil)
        guard status == SQLITE_OK, let handle else {
            let message =
                handle.flatMap { sqlite_nio_sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "code \(status)"
            sqlite_nio_sqlite3_close_v2(handle)
            throw Failure(description: "cannot open \(path) for the audit log: \(message)")
        }
        sqlite_nio_sqlite3_busy_timeout(handle, 10_000)
        // Like the driver's append-only connection: commits skip the WAL fsync (still atomic).
        _ = sqlite_nio_sqlite3_exec(handle, "PRAGMA synchronous = NORMAL", nil, nil, nil)
        db = handle
        return handle
    }

    private func failure(_ doing: String, _ db: OpaquePointer) -> Failure {
        Failure(description: "\(doing): \(String(cString: sqlite_nio_sqlite3_errmsg(db)))")
    }

    private func finalizeStatements() {
        for statement in statements.values { sqlite_nio_sqlite3_finalize(statement) }
        statements = [:]
    }

    private func closeNow() {
        finalizeStatements()
        sqlite_nio_sqlite3_close_v2(db)
        db = nil
    }
}

/// SQLite copies the bound bytes (`SQLITE_TRANSIENT`).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
/// SQLite reads the bound bytes where they are, until the statement is reset (`SQLITE_STATIC`).
private let staticBytes = unsafeBitCast(0, to: sqlite3_destructor_type.self)
