import Foundation
import NIOPosix
import RolegateCore
// SQLiteNIO's own build of SQLite (symbols prefixed `sqlite_nio_`), visible through the
// SQLiteNIO dependency: the same library the rest of the store uses, not a second one.
import VaporCSQLite

/// The audit writer's hot path on SQLite, through SQLite's C API on a connection of its own.
///
/// A group commit is one hop to the store's thread (SQLiteNIO hops for every statement),
/// and its INSERT statements are prepared once and reused: SQLiteNIO prepares every
/// statement anew on every call, and parsing a 100-row INSERT of 1,800 parameters cost
/// more than running it. Rows, hashes and the chain head are exactly what the portable
/// path (``SQLStore`` over ``SQLExecutor``) writes; `audit verify` cannot tell them apart.
///
/// Used only on its thread (a one-thread pool the driver owns), hence `@unchecked Sendable`.
final class SQLiteAuditAppender: @unchecked Sendable {
    private let path: String
    private let thread: NIOThreadPool
    private var db: OpaquePointer?
    /// Prepared statements by their SQL text, and the audit INSERTs by their row count.
    private var statements: [String: OpaquePointer] = [:]
    private var inserts: [Int: OpaquePointer] = [:]
    /// The texts of the INSERT being bound (reused from one INSERT to the next).
    private var staged = StagedTexts(capacity: StagedTexts.initialCapacity)

    /// Rows per INSERT: a batch is written in as few statements of these sizes as fit.
    static let chunkSizes = [100, 10, 1]

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
            // The events are staged as they are, with their chain fields beside them: no copies.
            let positions = AuditChain.positions(events, instance: instance, after: head)
            // Staged in a local (the buffers are swapped, not copied): a stored property's every
            // access is checked for exclusivity at run time.
            var staged = StagedTexts(capacity: 0)
            swap(&staged, &self.staged)
            defer { swap(&staged, &self.staged) }
            var start = 0
            while start < events.count {
                let rows = Self.chunkSizes.first { $0 <= events.count - start }!
                let statement = try insert(rows: rows, db)
                staged.removeAll()
                for row in 0..<rows {
                    staged.stage(
                        events[start + row], at: positions[start + row], instance: instance,
                        firstIndex: Int32(row * SQLStore.auditColumnCount + 1), statement)
                }
                try staged.texts.bytes.withUnsafeBufferPointer { buffer in
                    // An empty buffer may have no address, and a NULL pointer would bind SQL NULL.
                    let empty: StaticString = ""
                    let base = UnsafeRawPointer(buffer.baseAddress ?? empty.utf8Start)
                    for text in staged.parameters {
                        sqlite_nio_sqlite3_bind_text(
                            statement, text.index, (base + text.offset).assumingMemoryBound(to: CChar.self),
                            Int32(text.count), staticText)
                    }
                    // Runs while the buffer is pinned; `run` clears the bindings before it returns.
                    try run(statement, db)
                }
                start += rows
            }
            let last = positions.last!
            let moveHead = try prepared(
                """
                INSERT INTO rolegate_audit_chains (instance, last_sequence, last_hash, updated_at) VALUES (?1, ?2, ?3, ?4)
                ON CONFLICT (instance) DO UPDATE SET last_sequence = excluded.last_sequence,
                    last_hash = excluded.last_hash, updated_at = excluded.updated_at
                """, db)
            Self.bind(text: instance, 1, moveHead)
            sqlite_nio_sqlite3_bind_int64(moveHead, 2, last.sequence)
            Self.bind(text: last.hash, 3, moveHead)
            sqlite_nio_sqlite3_bind_int64(moveHead, 4, last.atMilliseconds)
            try run(moveHead, db)
            try execute("COMMIT", db)
            return returningLinked ? AuditChain.link(events, instance: instance, at: positions) : []
        } catch {
            _ = sqlite_nio_sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            // A statement may have gone stale (a schema change by another process): prepare afresh.
            finalizeStatements()
            throw error
        }
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

    fileprivate static func bind(int: Int64?, _ index: Int32, _ statement: OpaquePointer) {
        if let int {
            sqlite_nio_sqlite3_bind_int64(statement, index, int)
        } else {
            sqlite_nio_sqlite3_bind_null(statement, index)
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

    private func insert(rows: Int, _ db: OpaquePointer) throws -> OpaquePointer {
        if let statement = inserts[rows] { return statement }
        // `OR ROLLBACK`: a failed row ends the whole transaction (as the caller would), so SQLite
        // keeps no statement journal to undo one INSERT alone (~8% of the writer's time).
        let sql = SQLStore.auditInsertSQL(rows: rows).replacingOccurrences(
            of: "INSERT INTO", with: "INSERT OR ROLLBACK INTO", options: .anchored)
        let statement = try prepared(SQLiteDriver.Executor.sqlitePlaceholders(sql), db)
        inserts[rows] = statement
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
        inserts = [:]
    }

    private func closeNow() {
        finalizeStatements()
        sqlite_nio_sqlite3_close_v2(db)
        db = nil
    }
}

/// The texts of one INSERT in one buffer that SQLite reads in place (`SQLITE_STATIC`) while the
/// statement runs: binding each text for SQLite to copy cost an allocation apiece.
private struct StagedTexts {
    var texts: JSONWriter
    /// Where each text parameter's bytes are in ``texts``.
    var parameters: [(index: Int32, offset: Int, count: Int)] = []

    init(capacity: Int) {
        texts = JSONWriter(capacity: capacity)
    }

    /// Empties the buffer for the next INSERT, keeping its storage unless an INSERT of huge
    /// statements or parameters made it larger than ``keptCapacity``.
    mutating func removeAll() {
        if texts.bytes.capacity > Self.keptCapacity {
            texts = JSONWriter(capacity: Self.initialCapacity)
        } else {
            texts.removeAll()
        }
        parameters.removeAll(keepingCapacity: true)
    }

    static let initialCapacity = 64 * 1024
    static let keptCapacity = 4 * 1024 * 1024

    /// Binds `e`'s numbers and NULLs, and copies its texts into ``texts`` to be bound once the
    /// whole INSERT's texts are there (the buffer may move while it grows).
    mutating func stage(
        _ e: AuditEvent, at position: AuditChain.Position, instance: String, firstIndex i: Int32,
        _ statement: OpaquePointer
    ) {
        stage(text: instance, i, statement)
        sqlite_nio_sqlite3_bind_int64(statement, i + 1, position.sequence)
        sqlite_nio_sqlite3_bind_int64(statement, i + 2, position.atMilliseconds)
        stage(text: e.kind.rawValue, i + 3, statement)
        stage(text: e.action, i + 4, statement)
        stage(text: e.service, i + 5, statement)
        stage(text: e.tokenID, i + 6, statement)
        stage(text: e.role, i + 7, statement)
        stage(text: e.database, i + 8, statement)
        stage(text: e.sessionID, i + 9, statement)
        stage(text: e.client, i + 10, statement)
        stage(text: e.sql, i + 11, statement)
        stage(text: e.sqlState, i + 12, statement)
        SQLiteAuditAppender.bind(int: e.rows, i + 13, statement)
        SQLiteAuditAppender.bind(int: e.durationMicros, i + 14, statement)
        // The same JSON as ``SQLStore/encodeDetail(_:)``, written straight into the buffer.
        let offset = texts.bytes.count
        texts.object(e.detail)
        parameters.append((i + 15, offset, texts.bytes.count - offset))
        stage(text: position.previousHash, i + 16, statement)
        stage(text: position.hash, i + 17, statement)
    }

    mutating func stage(text: String?, _ index: Int32, _ statement: OpaquePointer) {
        guard let text else {
            sqlite_nio_sqlite3_bind_null(statement, index)
            return
        }
        let offset = texts.bytes.count
        texts.verbatim(text)
        parameters.append((index, offset, texts.bytes.count - offset))
    }
}

/// SQLite copies the bound bytes (`SQLITE_TRANSIENT`).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
/// SQLite reads the bound bytes where they are, until the statement is reset (`SQLITE_STATIC`).
private let staticText = unsafeBitCast(0, to: sqlite3_destructor_type.self)
