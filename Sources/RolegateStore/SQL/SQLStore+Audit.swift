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
            return try await Self.appendBlocks(
                events, instance: instance, after: head, dialect: dialect, returningLinked: returningLinked, db)
        }
    }

    /// Seals `events` into blocks after `head`, stores them with their keys and moves the head;
    /// inside the caller's transaction, which holds the chain's head.
    static func appendBlocks(
        _ events: [AuditEvent], instance: String, after head: (sequence: Int64, hash: String)?,
        dialect: SQLDialect, returningLinked: Bool, _ db: any SQLExecutor
    ) async throws -> [AuditEvent] {
        var linked: [AuditEvent] = []
        let blocks = AuditBlock.seal(events, instance: instance, after: head)
        for block in blocks {
            let id = try await nextBlockID(dialect: dialect, db)
            try await db.execute(insertBlockSQL, blockBinds(block, id: id))
            var start = 0
            while start < block.keys.count {
                let keys = block.keys[start..<min(block.keys.count, start + keyChunk)]
                start += keys.count
                let tuples = (0..<keys.count).map { "($\(2 * $0 + 1), $\(2 * $0 + 2))" }.joined(separator: ", ")
                try await db.execute(
                    "INSERT INTO rolegate_audit_keys (key, block) VALUES \(tuples)",
                    keys.flatMap { [SQLValue.text($0), .int(id)] })
            }
            if returningLinked { linked += try block.decode(blockID: id).events }
        }
        let last = blocks.last!
        try await moveHead(instance: instance, sequence: last.lastSequence, hash: last.lastHash, at: last.lastAt, db)
        return linked
    }

    static let keyChunk = 200

    static let insertBlockSQL = """
        INSERT INTO rolegate_audit_blocks (id, instance, first_sequence, last_sequence, first_at, last_at,
            event_count, kinds, counts, previous_hash, last_hash, payload)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        """

    static func blockBinds(_ block: AuditBlock, id: Int64) -> [SQLValue] {
        [
            .int(id), .text(block.instance), .int(block.firstSequence), .int(block.lastSequence),
            .int(block.firstAt), .int(block.lastAt), .int(Int64(block.count)), .int(block.kinds),
            .text(block.counts), .text(block.previousHash), .text(block.lastHash), .bytes(block.payload),
        ]
    }

    /// The next block's id: PostgreSQL's sequence (several instances append at once); in SQLite,
    /// whose writes are serialised, one past the newest block, or past every event of the
    /// earlier layout for the first.
    static func nextBlockID(dialect: SQLDialect, _ db: any SQLExecutor) async throws -> Int64 {
        if dialect == .postgres {
            guard let id = try await db.query("SELECT nextval('rolegate_audit_block_ids')", []).first?.first?.int else {
                throw CorruptAuditRow()
            }
            return id
        }
        if let newest = try await db.query("SELECT MAX(id) FROM rolegate_audit_blocks", []).first?.first?.int {
            return newest + 1
        }
        let legacy = try await db.query("SELECT MAX(id) FROM rolegate_audit", []).first?.first?.int ?? 0
        return legacy / AuditBlock.idsPerBlock + 1
    }

    func auditEvents(_ query: AuditQuery) async throws(StoreError) -> [AuditEvent] {
        try await read { db in
            // Every event of the earlier layout is older (lower ids and sequences) than every block.
            let legacyFirst = query.order != .newestFirst
            var events: [AuditEvent] = []
            if legacyFirst { events = try await Self.legacyEvents(query, limit: query.limit, db) }
            if events.count < query.limit {
                events += try await Self.blockEvents(query, limit: query.limit - events.count, db)
            }
            if !legacyFirst, events.count < query.limit {
                events += try await Self.legacyEvents(query, limit: query.limit - events.count, db)
            }
            return events
        }
    }

    /// Events of the layout before blocks (one row each), as that layout answered.
    private static func legacyEvents(
        _ query: AuditQuery, limit: Int, _ db: any SQLExecutor
    ) async throws
        -> [AuditEvent]
    {
        var filter = SQLFilter()
        func add(_ condition: String, _ value: SQLValue) { filter.add(condition, value) }
        if let service = query.service { add("service = ?", .text(service)) }
        if let token = query.tokenID { add("token_id = ?", .text(token)) }
        if let session = query.sessionID { add("session_id = ?", .text(session)) }
        if let since = query.since { add("at >= ?", SQLValue(since)) }
        if let until = query.until { add("at <= ?", SQLValue(until)) }
        if let after = query.afterID { add("id > ?", .int(after)) }
        if let instance = query.instance { add("instance = ?", .text(instance)) }
        if let afterSequence = query.afterSequence { add("sequence > ?", .int(afterSequence)) }
        if !query.kinds.isEmpty { filter.add(in: "kind", query.kinds.map { .text($0.rawValue) }) }
        if !query.actions.isEmpty { filter.add(in: "action", query.actions.map { .text($0) }) }
        var binds = filter.binds
        binds.append(.int(Int64(limit)))
        let order: String
        switch query.order {
        case .newestFirst: order = "id DESC"
        case .oldestFirst: order = "id"
        case .chain: order = "sequence"
        }
        let rows = try await db.query(
            "SELECT \(Self.auditColumns) FROM rolegate_audit \(filter.clause) ORDER BY \(order) LIMIT $\(binds.count)",
            binds)
        return try rows.map(Self.auditEvent)
    }

    static let blockColumns = """
        id, instance, first_sequence, last_sequence, first_at, last_at, event_count, kinds, counts, previous_hash, \
        last_hash, payload
        """

    /// A block row (``blockColumns``) and its id.
    static func block(_ row: [SQLValue]) throws -> (id: Int64, block: AuditBlock) {
        guard row.count == 12, let id = row[0].int, let instance = row[1].text, let first = row[2].int,
            let last = row[3].int, let firstAt = row[4].int, let lastAt = row[5].int, let count = row[6].int,
            let kinds = row[7].int, let counts = row[8].text, let previous = row[9].text, let lastHash = row[10].text,
            let payload = row[11].bytes
        else { throw CorruptAuditRow() }
        return (
            id,
            AuditBlock(
                instance: instance, firstSequence: first, lastSequence: last, firstAt: firstAt, lastAt: lastAt,
                count: Int(count), previousHash: previous, lastHash: lastHash, kinds: kinds, counts: counts, keys: [],
                payload: payload)
        )
    }

    /// Blocks per read: a page of blocks is decoded before the next is asked for.
    static let blocksPerPage = 16

    /// The events in blocks matching `query`: blocks are chosen by their summaries and keys,
    /// then read and their events filtered.
    private static func blockEvents(
        _ query: AuditQuery, limit: Int, _ db: any SQLExecutor
    ) async throws
        -> [AuditEvent]
    {
        var filter = SQLFilter()
        func add(_ condition: String, _ value: SQLValue) { filter.add(condition, value) }
        if let instance = query.instance { add("instance = ?", .text(instance)) }
        if let since = query.since { add("last_at >= ?", SQLValue(since)) }
        if let until = query.until { add("first_at <= ?", SQLValue(until)) }
        if let after = query.afterID { add("id >= ?", .int(after / AuditBlock.idsPerBlock)) }
        if let afterSequence = query.afterSequence { add("last_sequence > ?", .int(afterSequence)) }
        if !query.kinds.isEmpty {
            add("(kinds & ?) != 0", .int(query.kinds.reduce(0) { $0 | AuditBlock.kindBit($1) }))
        }
        let keys = [
            query.tokenID.map(AuditBlock.key(token:)), query.sessionID.map(AuditBlock.key(session:)),
            query.service.map(AuditBlock.key(service:)),
        ]
        for case let key? in keys { add("id IN (SELECT block FROM rolegate_audit_keys WHERE key = ?)", .text(key)) }
        let order: String
        let cursor: String
        switch query.order {
        case .newestFirst: (order, cursor) = ("id DESC", "id < ?")
        case .oldestFirst: (order, cursor) = ("id", "id > ?")
        case .chain: (order, cursor) = ("first_sequence, id", "(first_sequence, id) > (?, ?)")
        }
        var events: [AuditEvent] = []
        var after: (sequence: Int64, id: Int64)?
        while true {
            var page = filter
            if let after {
                page.add(cursor, query.order == .chain ? [.int(after.sequence), .int(after.id)] : [.int(after.id)])
            }
            let rows = try await db.query(
                "SELECT \(blockColumns) FROM rolegate_audit_blocks \(page.clause) ORDER BY \(order) LIMIT \(blocksPerPage)",
                page.binds)
            for row in rows {
                let (id, block) = try Self.block(row)
                after = (block.firstSequence, id)
                let decoded: [AuditEvent]
                do {
                    decoded = try block.decode(blockID: id).events
                } catch {
                    throw UnreadableBlock(
                        description:
                            "audit events #\(block.firstSequence)–#\(block.lastSequence) of chain \(block.instance) cannot be read: \(error)"
                    )
                }
                let matching = decoded.filter { Self.matches($0, query) }
                events += query.order == .newestFirst ? matching.reversed() : matching
                if events.count >= limit { return Array(events.prefix(limit)) }
            }
            if rows.count < blocksPerPage { return events }
        }
    }

    /// `WHERE` conditions written with `?` for each value, numbered `$1`, `$2`… as they are added.
    struct SQLFilter {
        private(set) var conditions: [String] = []
        private(set) var binds: [SQLValue] = []

        mutating func add(_ condition: String, _ value: SQLValue) { add(condition, [value]) }

        mutating func add(_ condition: String, _ values: [SQLValue]) {
            var text = condition
            for value in values {
                binds.append(value)
                text = text.replacingOccurrences(of: "?", with: "$\(binds.count)", range: text.range(of: "?"))
            }
            conditions.append(text)
        }

        /// `column IN ($n, …)`.
        mutating func add(in column: String, _ values: [SQLValue]) {
            add("\(column) IN (\(Array(repeating: "?", count: values.count).joined(separator: ", ")))", values)
        }

        var clause: String { conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ") }
    }

    struct UnreadableBlock: Error, CustomStringConvertible {
        var description: String
    }

    /// Whether `e` (from a block the summaries chose) is one `query` asks for.
    static func matches(_ e: AuditEvent, _ query: AuditQuery) -> Bool {
        if let service = query.service, e.service != service { return false }
        if let token = query.tokenID, e.tokenID != token { return false }
        if let session = query.sessionID, e.sessionID != session { return false }
        let at = e.at.millisecondsSince1970
        if let since = query.since, at < since.millisecondsSince1970 { return false }
        if let until = query.until, at > until.millisecondsSince1970 { return false }
        if let after = query.afterID, let id = e.id, id <= after { return false }
        if let instance = query.instance, e.instance != instance { return false }
        if let afterSequence = query.afterSequence, e.sequence <= afterSequence { return false }
        if !query.kinds.isEmpty, !query.kinds.contains(e.kind) { return false }
        if !query.actions.isEmpty, !query.actions.contains(e.action) { return false }
        return true
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
            var counts: [AuditActivityKey: Int] = [:]
            for row in rows {
                guard let start = row[0].int, let kind = row[1].text.flatMap(AuditEvent.Kind.init(rawValue:)),
                    let action = row[2].text, let count = row[3].int
                else { continue }
                counts[AuditActivityKey(start: start, kind: kind, action: action), default: 0] += Int(count)
            }
            // Blocks: a block within one bucket and after `since` is counted from its summary;
            // only one that straddles a bucket's edge (or `since`) is read.
            let sinceMilliseconds = since.millisecondsSince1970
            let mask = kinds.reduce(Int64(0)) { $0 | AuditBlock.kindBit($1) }
            let summaries = try await db.query(
                """
                SELECT id, first_at, last_at, counts FROM rolegate_audit_blocks
                 WHERE last_at >= $1 AND (kinds & $2) != 0 ORDER BY id
                """, [.int(sinceMilliseconds), .int(kinds.isEmpty ? -1 : mask)])
            for row in summaries {
                guard let id = row[0].int, let firstAt = row[1].int, let lastAt = row[2].int, let text = row[3].text
                else { continue }
                if firstAt >= sinceMilliseconds, firstAt / width == lastAt / width {
                    for entry in AuditBlock.counts(text) where kinds.isEmpty || kinds.contains(entry.kind) {
                        counts[
                            AuditActivityKey(start: firstAt / width * width, kind: entry.kind, action: entry.action),
                            default: 0] += entry.count
                    }
                    continue
                }
                guard
                    let full = try await db.query(
                        "SELECT \(Self.blockColumns) FROM rolegate_audit_blocks WHERE id = $1", [.int(id)]
                    ).first
                else { continue }
                let (_, block) = try Self.block(full)
                for event in try block.decode(blockID: id, hashing: false).events
                where event.at.millisecondsSince1970 >= sinceMilliseconds
                    && (kinds.isEmpty || kinds.contains(event.kind))
                {
                    let at = event.at.millisecondsSince1970
                    counts[
                        AuditActivityKey(start: at / width * width, kind: event.kind, action: event.action), default: 0] +=
                        1
                }
            }
            return counts.map { key, count in
                AuditActivity(start: Date(milliseconds: key.start), kind: key.kind, action: key.action, count: count)
            }.sorted { ($0.start, $0.kind.rawValue, $0.action) < ($1.start, $1.kind.rawValue, $1.action) }
        }
    }

    private struct AuditActivityKey: Hashable {
        var start: Int64
        var kind: AuditEvent.Kind
        var action: String
    }

    func verifyAuditChains(pageSize: Int) async throws(StoreError) -> [AuditChainReport] {
        var reports: [AuditChainReport] = []
        for head in try await auditHeads() {
            let walked = try await read { db in
                try await Self.verifyChain(instance: head.instance, pageSize: pageSize, db)
            }
            let problem = walked.problem ?? walked.verifier.finish(head: (head.sequence, head.hash))
            reports.append(
                AuditChainReport(
                    instance: head.instance, events: walked.verifier.count, lastSequence: head.sequence,
                    problem: problem))
        }
        return reports
    }

    /// Walks one chain: the earlier layout's rows page by page, then its blocks, read a page at
    /// a time and decoded side by side (each block carries the hash before it, so blocks check
    /// their own events independently; the walk then checks they join up).
    private static func verifyChain(
        instance: String, pageSize: Int, _ db: any SQLExecutor
    ) async throws -> (verifier: ChainVerifier, problem: AuditChain.Problem?) {
        var verifier = ChainVerifier(instance: instance)
        var query = AuditQuery()
        query.instance = instance
        query.order = .chain
        query.afterSequence = 0
        while true {
            let page = try await legacyEvents(query, limit: pageSize, db)
            for event in page {
                if let problem = verifier.next(event) { return (verifier, problem) }
            }
            guard page.count == pageSize, let last = page.last else { break }
            query.afterSequence = last.sequence
        }
        var after: Int64 = -1
        while true {
            let rows = try await db.query(
                """
                SELECT \(blockColumns) FROM rolegate_audit_blocks WHERE instance = $1 AND first_sequence > $2
                 ORDER BY first_sequence LIMIT \(verifyBlocksPerPage)
                """, [.text(instance), .int(after)])
            let blocks = try rows.map(Self.block)
            // The keys stored for these blocks: a block's must be what its events give, or
            // filtered reads (`--token`, `--session`) would pass over some of its events.
            var storedKeys: [Int64: [String]] = [:]
            if let firstID = blocks.map(\.id).min(), let lastID = blocks.map(\.id).max() {
                for row in try await db.query(
                    "SELECT block, key FROM rolegate_audit_keys WHERE block >= $1 AND block <= $2",
                    [.int(firstID), .int(lastID)])
                {
                    if let block = row[0].int, let key = row[1].text { storedKeys[block, default: []].append(key) }
                }
            }
            // A block the fast check vouches for (all but a checkpoint's, whose detail records
            // a cut) joins the walk whole; any other is read in full to name what is wrong.
            let checkpoint = AuditBlock.kindBit(.checkpoint)
            let decoded = await withTaskGroup(of: (Int, Checked).self) { group in
                for (index, (id, block)) in blocks.enumerated() {
                    let stored = (storedKeys[id] ?? []).sorted()
                    group.addTask {
                        if block.kinds & checkpoint == 0, let keys = block.intactKeys {
                            return (index, keys == stored ? .intact : .summaryDiffers)
                        }
                        do throws(AuditBlock.Unreadable) {
                            let read = try block.decode(blockID: id)
                            let summary = AuditBlock.summary(of: read.events, instance: block.instance)
                            let agrees =
                                summary.kinds == block.kinds && summary.counts == block.counts
                                && summary.keys == stored
                            return (index, .read(read, summaryAgrees: agrees))
                        } catch {
                            return (index, .unreadable(error))
                        }
                    }
                }
                var results = [Checked](repeating: .intact, count: blocks.count)
                for await (index, result) in group { results[index] = result }
                return results
            }
            for ((_, block), result) in zip(blocks, decoded) {
                func summaryProblem() -> AuditChain.Problem {
                    AuditChain.Problem(
                        instance: instance, sequence: block.firstSequence, id: nil,
                        message:
                            "is stored, with the events up to #\(block.lastSequence), in a block whose summary was altered (its kinds, counts or keys no longer match its events, so filtered reads would pass over some of them)"
                    )
                }
                switch result {
                case .intact:
                    if let problem = verifier.nextBlock(
                        firstSequence: block.firstSequence, count: block.count, previousHash: block.previousHash,
                        lastHash: block.lastHash)
                    {
                        return (verifier, problem)
                    }
                case .summaryDiffers:
                    return (verifier, summaryProblem())
                case .unreadable(let unreadable):
                    return (
                        verifier,
                        AuditChain.Problem(
                            instance: instance, sequence: block.firstSequence, id: nil,
                            message:
                                "cannot be read, nor can the events after it up to #\(block.lastSequence) stored with it: their block was altered (\(unreadable))"
                        )
                    )
                case .read(let read, let summaryAgrees):
                    for (index, event) in read.events.enumerated() {
                        let expected = verifier.expectedSequence
                        if verifier.count > 0, event.sequence > expected,
                            read.events[index...].contains(where: { $0.sequence == expected })
                        {
                            return (
                                verifier,
                                AuditChain.Problem(
                                    instance: instance, sequence: expected, id: nil,
                                    message: "appears out of order (it is stored after #\(event.sequence))")
                            )
                        }
                        // A missing or moved event, or a block that does not join the chain
                        // before it, is named as such (the hashes after it cannot match either).
                        if let problem = verifier.next(event, hashChecked: true) { return (verifier, problem) }
                        if index == read.firstAltered {
                            return (
                                verifier,
                                AuditChain.Problem(
                                    instance: instance, sequence: event.sequence, id: event.id,
                                    message: "was altered (its content no longer matches its hash)")
                            )
                        }
                    }
                    if !summaryAgrees { return (verifier, summaryProblem()) }
                }
                after = block.firstSequence
            }
            if rows.count < verifyBlocksPerPage { return (verifier, nil) }
        }
    }

    static let verifyBlocksPerPage = 64

    /// What checking one block found.
    private enum Checked: Sendable {
        /// The fast check vouched for it and its keys.
        case intact
        /// Intact events, but keys stored for it that they do not give.
        case summaryDiffers
        case unreadable(AuditBlock.Unreadable)
        case read(AuditBlock.Events, summaryAgrees: Bool)
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
            // The earlier layout's events are the oldest: they go first, in slices of rows.
            var cut = try await Self.pruneLegacy(instance: instance, before: cutoff, limit: limit, db)
            if cut == nil { cut = try await Self.pruneBlocks(instance: instance, before: cutoff, limit: limit, db) }
            guard let cut else { return 0 }
            let checkpoint = AuditEvent(
                at: now, kind: .checkpoint, action: "pruned",
                detail: [
                    "pruned_through": String(cut.through), "hash_at_cut": cut.hash, "cutoff": cutoff.rfc3339,
                    "deleted": String(cut.deleted),
                ])
            _ = try await Self.appendBlocks(
                [checkpoint], instance: instance, after: head, dialect: dialect, returningLinked: false, db)
            return cut.deleted
        }
    }

    private struct Cut {
        var through: Int64
        var hash: String
        var deleted: Int
    }

    /// Deletes the oldest `limit` rows of the earlier layout before `cutoff` (nil: none left).
    private static func pruneLegacy(
        instance: String, before cutoff: Date, limit: Int, _ db: any SQLExecutor
    ) async throws -> Cut? {
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
        else { return nil }
        let deleted =
            try await db.query(
                "SELECT count(*) FROM rolegate_audit WHERE instance = $1 AND sequence <= $2",
                [.text(instance), .int(through)]
            ).first?.first?.int ?? 0
        try await db.execute(
            "DELETE FROM rolegate_audit WHERE instance = $1 AND sequence <= $2", [.text(instance), .int(through)])
        return Cut(through: through, hash: hash, deleted: Int(deleted))
    }

    /// Deletes the oldest whole blocks that end before `cutoff`, as many as hold at most
    /// `limit` events (at least one block), with their keys (nil: none).
    private static func pruneBlocks(
        instance: String, before cutoff: Date, limit: Int, _ db: any SQLExecutor
    ) async throws -> Cut? {
        let candidates = try await db.query(
            """
            SELECT last_sequence, last_hash, event_count FROM rolegate_audit_blocks
             WHERE instance = $1 AND last_at < $2 ORDER BY first_sequence LIMIT $3
            """, [.text(instance), SQLValue(cutoff), .int(Int64(max(limit, 1)))])
        var cut: Cut?
        for row in candidates {
            guard let through = row[0].int, let hash = row[1].text, let count = row[2].int else { break }
            if let cut, cut.deleted + Int(count) > limit { break }
            cut = Cut(through: through, hash: hash, deleted: (cut?.deleted ?? 0) + Int(count))
        }
        guard let cut else { return nil }
        try await db.execute(
            """
            DELETE FROM rolegate_audit_keys WHERE block IN
                (SELECT id FROM rolegate_audit_blocks WHERE instance = $1 AND first_sequence <= $2)
            """, [.text(instance), .int(cut.through)])
        try await db.execute(
            "DELETE FROM rolegate_audit_blocks WHERE instance = $1 AND first_sequence <= $2",
            [.text(instance), .int(cut.through)])
        return cut
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

    static func moveHead(
        instance: String, sequence: Int64, hash: String, at: Int64, _ db: any SQLExecutor
    ) async throws {
        try await db.execute(
            """
            INSERT INTO rolegate_audit_chains (instance, last_sequence, last_hash, updated_at) VALUES ($1, $2, $3, $4)
            ON CONFLICT (instance) DO UPDATE SET last_sequence = excluded.last_sequence,
                last_hash = excluded.last_hash, updated_at = excluded.updated_at
            """, [.text(instance), .int(sequence), .text(hash), .int(at)])
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
