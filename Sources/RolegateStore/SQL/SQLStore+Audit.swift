import Foundation
import RolegateCore

extension SQLStore {
    static let auditColumns = """
        id, instance, sequence, at, kind, action, service, token_id, role_name, database_name, session_id, client, \
        sql_text, sql_state, row_count, duration_us, detail, previous_hash, hash
        """

    func appendAudit(_ events: [AuditEvent], instance: String) async throws(StoreError) -> [AuditEvent] {
        try await appendAudit(events, instance: instance, returningLinked: true)
    }

    func recordAudit(_ events: [AuditEvent], instance: String) async throws(StoreError) {
        _ = try await appendAudit(events, instance: instance, returningLinked: false)
    }

    private func appendAudit(
        _ events: [AuditEvent], instance: String, returningLinked: Bool
    ) async throws(StoreError) -> [AuditEvent] {
        guard !events.isEmpty else { return [] }
        do {
            if let linked = try await driver.appendAudit(events, instance: instance, returningLinked: returningLinked) {
                return linked
            }
        } catch {
            throw StoreError.failed(Self.describe(error))
        }
        let dialect = driver.dialect
        return try await run(transaction: true, serialized: false) { db in
            let head = try await Self.lockHead(instance: instance, dialect: dialect, db)
            let linked = AuditChain.link(events, instance: instance, after: head)
            try await Self.insertAudit(linked, db, dialect: dialect)
            try await Self.moveHead(instance: instance, to: linked.last!, db)
            return linked
        }
    }

    func auditEvents(_ query: AuditQuery) async throws(StoreError) -> [AuditEvent] {
        try await read { db in
            var conditions: [String] = []
            var binds: [SQLValue] = []
            func add(_ condition: String, _ value: SQLValue) {
                binds.append(value)
                conditions.append(condition.replacingOccurrences(of: "?", with: "$\(binds.count)"))
            }
            if let service = query.service { add("service = ?", .text(service)) }
            if let token = query.tokenID { add("token_id = ?", .text(token)) }
            if let session = query.sessionID { add("session_id = ?", .text(session)) }
            if let since = query.since { add("at >= ?", SQLValue(since)) }
            if let until = query.until { add("at <= ?", SQLValue(until)) }
            if let after = query.afterID { add("id > ?", .int(after)) }
            if let instance = query.instance { add("instance = ?", .text(instance)) }
            if let afterSequence = query.afterSequence { add("sequence > ?", .int(afterSequence)) }
            if !query.kinds.isEmpty {
                let placeholders = query.kinds.map { kind -> String in
                    binds.append(.text(kind.rawValue))
                    return "$\(binds.count)"
                }
                conditions.append("kind IN (\(placeholders.joined(separator: ", ")))")
            }
            if !query.actions.isEmpty {
                let placeholders = query.actions.map { action -> String in
                    binds.append(.text(action))
                    return "$\(binds.count)"
                }
                conditions.append("action IN (\(placeholders.joined(separator: ", ")))")
            }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            binds.append(.int(Int64(query.limit)))
            let order: String
            switch query.order {
            case .newestFirst: order = "id DESC"
            case .oldestFirst: order = "id"
            case .chain: order = "sequence"
            }
            let rows = try await db.query(
                "SELECT \(Self.auditColumns) FROM rolegate_audit \(filter) ORDER BY \(order) LIMIT $\(binds.count)",
                binds)
            return try rows.map(Self.auditEvent)
        }
    }

    func auditActivity(
        kinds: [AuditEvent.Kind], since: Date, bucket: Int
    ) async throws(StoreError) -> [AuditActivity] {
        let width = Int64(max(bucket, 1)) * 1000
        return try await read { db in
            var binds: [SQLValue] = [SQLValue(since), .int(width)]
            let placeholders = kinds.map { kind -> String in
                binds.append(.text(kind.rawValue))
                return "$\(binds.count)"
            }
            let kindFilter = kinds.isEmpty ? "" : " AND kind IN (\(placeholders.joined(separator: ", ")))"
            // `at` is whole milliseconds in both dialects, so integer division buckets it; the
            // time index bounds the scan.
            let rows = try await db.query(
                """
                SELECT (at / $2) * $2 AS bucket, kind, action, COUNT(*) FROM rolegate_audit
                 WHERE at >= $1\(kindFilter) GROUP BY bucket, kind, action ORDER BY bucket
                """, binds)
            return rows.compactMap { row in
                guard let start = row[0].date, let kind = row[1].text.flatMap(AuditEvent.Kind.init(rawValue:)),
                    let action = row[2].text, let count = row[3].int
                else { return nil }
                return AuditActivity(start: start, kind: kind, action: action, count: Int(count))
            }
        }
    }

    func auditHeads() async throws(StoreError) -> [AuditChainHead] {
        try await read { db in
            try await db.query(
                "SELECT instance, last_sequence, last_hash, updated_at FROM rolegate_audit_chains ORDER BY instance", []
            ).compactMap { row in
                guard let instance = row[0].text, let sequence = row[1].int, let hash = row[2].text,
                    let at = row[3].date
                else { return nil }
                return AuditChainHead(instance: instance, sequence: sequence, hash: hash, updatedAt: at)
            }
        }
    }

    func pruneAudit(instance: String, before cutoff: Date, now: Date, limit: Int) async throws(StoreError) -> Int {
        let dialect = driver.dialect
        return try await run(transaction: true, serialized: false) { db in
            let head = try await Self.lockHead(instance: instance, dialect: dialect, db)
            // Events are appended in time order per chain, so those before the cut-off are its
            // oldest: the cut is the `limit`-th of them, or the newest when there are fewer.
            let slice = try await db.query(
                "SELECT sequence, hash FROM rolegate_audit WHERE instance = $1 AND at < $2 ORDER BY sequence LIMIT 1 OFFSET $3",
                [.text(instance), SQLValue(cutoff), .int(Int64(max(limit, 1) - 1))])
            let newest = {
                try await db.query(
                    "SELECT sequence, hash FROM rolegate_audit WHERE instance = $1 AND at < $2 ORDER BY sequence DESC LIMIT 1",
                    [.text(instance), SQLValue(cutoff)])
            }
            guard let last = try await slice.isEmpty ? newest().first : slice.first,
                let through = last[0].int, let hash = last[1].text
            else { return 0 }
            let deleted =
                try await db.query(
                    "SELECT count(*) FROM rolegate_audit WHERE instance = $1 AND sequence <= $2",
                    [.text(instance), .int(through)]
                ).first?.first?.int ?? 0
            try await db.execute(
                "DELETE FROM rolegate_audit WHERE instance = $1 AND sequence <= $2", [.text(instance), .int(through)])
            let checkpoint = AuditEvent(
                at: now, kind: .checkpoint, action: "pruned",
                detail: [
                    "pruned_through": String(through), "hash_at_cut": hash, "cutoff": cutoff.rfc3339,
                    "deleted": String(deleted),
                ])
            let linked = AuditChain.link([checkpoint], instance: instance, after: head)
            try await Self.insertAudit(linked, db, dialect: dialect)
            try await Self.moveHead(instance: instance, to: linked[0], db)
            return Int(deleted)
        }
    }

    /// The chain's head, locked for this transaction (SQLite's write lock already serialises).
    private static func lockHead(
        instance: String, dialect: SQLDialect, _ db: any SQLExecutor
    ) async throws -> (
        sequence: Int64, hash: String
    )? {
        let lock = dialect == .postgres ? " FOR UPDATE" : ""
        let row = try await db.query(
            "SELECT last_sequence, last_hash FROM rolegate_audit_chains WHERE instance = $1\(lock)", [.text(instance)]
        ).first
        guard let row, let sequence = row[0].int, let hash = row[1].text else {
            if dialect == .postgres {
                // Two first appends of one instance race to create its head: let one win, then lock it.
                try await db.execute(
                    "INSERT INTO rolegate_audit_chains (instance, last_sequence, last_hash, updated_at) VALUES ($1, 0, $2, 0) ON CONFLICT (instance) DO NOTHING",
                    [.text(instance), .text(AuditChain.genesis)])
                let locked = try await db.query(
                    "SELECT last_sequence, last_hash FROM rolegate_audit_chains WHERE instance = $1 FOR UPDATE",
                    [.text(instance)]
                ).first
                guard let locked, let sequence = locked[0].int, let hash = locked[1].text, sequence > 0 else {
                    return nil
                }
                return (sequence, hash)
            }
            return nil
        }
        return (sequence, hash)
    }

    private static func moveHead(instance: String, to event: AuditEvent, _ db: any SQLExecutor) async throws {
        try await db.execute(
            """
            INSERT INTO rolegate_audit_chains (instance, last_sequence, last_hash, updated_at) VALUES ($1, $2, $3, $4)
            ON CONFLICT (instance) DO UPDATE SET last_sequence = excluded.last_sequence,
                last_hash = excluded.last_hash, updated_at = excluded.updated_at
            """, [.text(instance), .int(event.sequence), .text(event.hash), SQLValue(event.at)])
    }

    static let auditInsertColumns = """
        instance, sequence, at, kind, action, service, token_id, role_name, database_name, session_id, client, \
        sql_text, sql_state, row_count, duration_us, detail, previous_hash, hash
        """
    static let auditColumnCount = 18
    static let auditChunk = 100

    /// `INSERT … VALUES ($1, …), …` for `rows` rows; the full-chunk text is built once.
    static func auditInsertSQL(rows: Int) -> String {
        if rows == auditChunk { return fullChunkInsert }
        return makeAuditInsertSQL(rows: rows)
    }

    private static let fullChunkInsert = makeAuditInsertSQL(rows: auditChunk)

    private static func makeAuditInsertSQL(rows: Int) -> String {
        let tuples = (0..<rows).map { row in
            "(" + (1...auditColumnCount).map { "$\(row * auditColumnCount + $0)" }.joined(separator: ", ") + ")"
        }
        return "INSERT INTO rolegate_audit (\(auditInsertColumns)) VALUES \(tuples.joined(separator: ", "))"
    }

    /// Inserts in multi-row statements (group commit: one round trip per 100 events).
    private static func insertAudit(_ events: [AuditEvent], _ db: any SQLExecutor, dialect: SQLDialect) async throws {
        var start = 0
        while start < events.count {
            let chunk = events[start..<min(start + auditChunk, events.count)]
            start += chunk.count
            var binds: [SQLValue] = []
            binds.reserveCapacity(chunk.count * auditColumnCount)
            for e in chunk {
                binds += [
                    .text(e.instance), .int(e.sequence), SQLValue(e.at), .text(e.kind.rawValue), .text(e.action),
                    SQLValue(e.service), SQLValue(e.tokenID), SQLValue(e.role), SQLValue(e.database),
                    SQLValue(e.sessionID), SQLValue(e.client), SQLValue(e.sql), SQLValue(e.sqlState), SQLValue(e.rows),
                    SQLValue(e.durationMicros), .text(encodeDetail(e.detail)), .text(e.previousHash), .text(e.hash),
                ]
            }
            try await db.execute(auditInsertSQL(rows: chunk.count), binds)
        }
    }

    /// `detail` as a JSON object with sorted keys (written as bytes: this runs for every event).
    static func encodeDetail(_ detail: [String: String]) -> String {
        guard !detail.isEmpty else { return "{}" }
        var out = JSONWriter(capacity: 64)
        out.object(detail)
        return String(decoding: out.bytes, as: UTF8.self)
    }

    struct CorruptAuditRow: Error, CustomStringConvertible {
        var description: String { "an audit row in the store is malformed" }
    }

    static func auditEvent(_ row: [SQLValue]) throws -> AuditEvent {
        guard row.count == 19, let id = row[0].int, let instance = row[1].text, let sequence = row[2].int,
            let at = row[3].date, let kind = row[4].text.flatMap(AuditEvent.Kind.init), let action = row[5].text,
            let previous = row[17].text, let hash = row[18].text
        else { throw CorruptAuditRow() }
        let detail =
            row[16].text.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String] } ?? [:]
        return AuditEvent(
            instance: instance, sequence: sequence, at: at, kind: kind, action: action, service: row[6].text,
            tokenID: row[7].text, role: row[8].text, database: row[9].text, sessionID: row[10].text,
            client: row[11].text, sql: row[12].text, sqlState: row[13].text, rows: row[14].int,
            durationMicros: row[15].int, detail: detail, previousHash: previous, hash: hash, id: id)
    }
}
