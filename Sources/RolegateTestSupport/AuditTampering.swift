import Foundation
public import RolegateCore

/// Edits a store's audit log behind Rolegate's back, as someone with write access to its
/// database could, for the tests of `audit verify`: an event's content altered, an event
/// deleted, two events stored in each other's place, a block replaced by a forged one whose
/// hashes are all recomputed.
///
/// It works on the SQL tables through `run`, which runs SQL on the store's database and
/// returns what it printed, one row per line with `|` between values (psql's `-A -t`, or the
/// Python `sqlite3` one-liner ``sqlite(path:python:)`` makes).
public struct AuditTampering: Sendable {
    public enum Dialect: Sendable {
        case sqlite, postgres
    }

    let dialect: Dialect
    let run: @Sendable (String) throws -> String

    public init(dialect: Dialect, run: @escaping @Sendable (String) throws -> String) {
        self.dialect = dialect
        self.run = run
    }

    /// Tampering with the SQLite store at `path`, through Python's `sqlite3` module.
    public static func sqlite(path: String, python: String = TestClients.python) -> AuditTampering {
        AuditTampering(dialect: .sqlite) { sql in
            let script = """
                import sqlite3, sys
                c = sqlite3.connect(sys.argv[1])
                for row in c.execute(sys.argv[2]):
                    print("|".join("" if v is None else str(v) for v in row))
                c.commit()
                """
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [python, "-c", script, path, sql]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw Failure(description: "sqlite3 could not run: \(sql)")
            }
            return String(decoding: data, as: UTF8.self)
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Changes the stored content of event `sequence` (its stored hash stays).
    public func alter(instance: String, sequence: Int64, _ change: (inout AuditEvent) -> Void) throws {
        try rewriteBlock(instance: instance, containing: sequence) { events in
            let index = events.firstIndex { $0.sequence == sequence }!
            change(&events[index])
        }
    }

    /// Deletes event `sequence` from its block (the block's summary is made to match).
    public func delete(instance: String, sequence: Int64) throws {
        try rewriteBlock(instance: instance, containing: sequence) { events in
            events.removeAll { $0.sequence == sequence }
        }
    }

    /// Stores events `sequence` and `sequence + 1` (of one block) in each other's place.
    public func swapWithNext(instance: String, sequence: Int64) throws {
        try rewriteBlock(instance: instance, containing: sequence) { events in
            let index = events.firstIndex { $0.sequence == sequence }!
            events.swapAt(index, index + 1)
        }
    }

    /// Replaces the block holding `sequence` with a forged one: event `sequence` changed by
    /// `change`, and every hash of the block recomputed so the block is consistent in itself.
    public func forge(instance: String, sequence: Int64, _ change: (inout AuditEvent) -> Void) throws {
        let (id, block) = try readBlock(instance: instance, containing: sequence)
        var events = try block.decode(blockID: id).events
        let index = events.firstIndex { $0.sequence == sequence }!
        change(&events[index])
        let forged = AuditBlock.seal(
            events, instance: instance, after: (block.firstSequence - 1, block.previousHash))
        try write(forged[0], id: id)
    }

    /// Reads the block holding `sequence`, lets `edit` change its events (linked: each keeps its
    /// sequence and stored hash) and writes it back with a summary that matches.
    public func rewriteBlock(
        instance: String, containing sequence: Int64, _ edit: (inout [AuditEvent]) -> Void
    ) throws {
        let (id, block) = try readBlock(instance: instance, containing: sequence)
        var events = try block.decode(blockID: id).events
        // Each event's hash is recomputed from what it held: an altered event keeps the old one.
        edit(&events)
        try write(AuditBlock.reencoded(events, instance: instance), id: id)
    }

    /// The block that holds `sequence`, with its id, its summary and its keys.
    public func readBlock(instance: String, containing sequence: Int64) throws -> (Int64, AuditBlock) {
        let hex =
            dialect == .sqlite
            ? "hex(payload), hex(counts)" : "encode(payload, 'hex'), encode(convert_to(counts, 'UTF8'), 'hex')"
        let output = try run(
            """
            SELECT id, first_sequence, last_sequence, first_at, last_at, event_count, kinds, previous_hash, last_hash, \(hex)
              FROM rolegate_audit_blocks WHERE instance = '\(instance)' AND first_sequence <= \(sequence)
               AND last_sequence >= \(sequence)
            """)
        let fields = output.trimmingCharacters(in: .whitespacesAndNewlines).split(
            separator: "|", omittingEmptySubsequences: false
        ).map(String.init)
        guard fields.count == 11, let id = Int64(fields[0]), let first = Int64(fields[1]),
            let last = Int64(fields[2]), let firstAt = Int64(fields[3]), let lastAt = Int64(fields[4]),
            let count = Int(fields[5]), let kinds = Int64(fields[6])
        else { throw Failure(description: "no block of chain \(instance) holds event #\(sequence): \(output)") }
        let keys = try run("SELECT key FROM rolegate_audit_keys WHERE block = \(id) ORDER BY key")
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return (
            id,
            AuditBlock(
                instance: instance, firstSequence: first, lastSequence: last, firstAt: firstAt, lastAt: lastAt,
                count: count, previousHash: fields[7], lastHash: fields[8], kinds: kinds,
                counts: String(decoding: Self.bytes(hex: fields[10]), as: UTF8.self), keys: keys,
                payload: Self.bytes(hex: fields[9]))
        )
    }

    /// Writes back a block as ``readBlock(instance:containing:)`` read it.
    public func restore(_ read: (Int64, AuditBlock)) throws {
        try write(read.1, id: read.0)
    }

    /// Moves block `id` (its keys with it) to `newID`, which must be free.
    public func moveBlock(_ id: Int64, to newID: Int64) throws {
        _ = try run("UPDATE rolegate_audit_blocks SET id = \(newID) WHERE id = \(id)")
        _ = try run("UPDATE rolegate_audit_keys SET block = \(newID) WHERE block = \(id)")
    }

    /// Commits `block`, the next of its chain, under `id` (free, lower than blocks already
    /// there): row, keys, then the chain's head, as an append does. What PostgreSQL shows a
    /// reader when two instances append at once and the one handed the lower block id commits
    /// second.
    public func commitLate(_ block: AuditBlock, id: Int64) throws {
        let text = Self.quoted
        _ = try run(
            """
            INSERT INTO rolegate_audit_blocks (id, instance, first_sequence, last_sequence, first_at, last_at,
                event_count, kinds, counts, previous_hash, last_hash, payload)
            VALUES (\(id), \(text(block.instance)), \(block.firstSequence), \(block.lastSequence), \(block.firstAt),
                \(block.lastAt), \(block.count), \(block.kinds), \(text(block.counts)), \(text(block.previousHash)),
                \(text(block.lastHash)), \(bytesLiteral(block.payload)))
            """)
        try insertKeys(block.keys, block: id)
        _ = try run(
            """
            UPDATE rolegate_audit_chains SET last_sequence = \(block.lastSequence), last_hash = \(text(block.lastHash)),
                   updated_at = \(block.lastAt) WHERE instance = \(text(block.instance))
            """)
    }

    /// Writes `block` over the row `id`, summary and keys included (as a careful editor would:
    /// only the chain can tell).
    private func write(_ block: AuditBlock, id: Int64) throws {
        let text = Self.quoted
        _ = try run(
            """
            UPDATE rolegate_audit_blocks SET payload = \(bytesLiteral(block.payload)), event_count = \(block.count),
                   first_sequence = \(block.firstSequence), last_sequence = \(block.lastSequence),
                   previous_hash = \(text(block.previousHash)), last_hash = \(text(block.lastHash)),
                   kinds = \(block.kinds), counts = \(text(block.counts))
             WHERE id = \(id)
            """)
        _ = try run("DELETE FROM rolegate_audit_keys WHERE block = \(id)")
        try insertKeys(block.keys, block: id)
    }

    /// A block's key rows, in one insert.
    private func insertKeys(_ keys: [String], block id: Int64) throws {
        guard !keys.isEmpty else { return }
        let rows = keys.map { "(\(Self.quoted($0)), \(id))" }
        _ = try run("INSERT INTO rolegate_audit_keys (key, block) VALUES \(rows.joined(separator: ", "))")
    }

    /// `text` as an SQL string literal (both dialects: quotes doubled, newlines kept).
    private static func quoted(_ text: String) -> String {
        "'\(text.replacingOccurrences(of: "'", with: "''"))'"
    }

    /// `bytes` as a literal of the dialect's binary type.
    private func bytesLiteral(_ bytes: [UInt8]) -> String {
        dialect == .sqlite ? "X'\(bytes.hexString)'" : "'\\x\(bytes.hexString)'::bytea"
    }

    static func bytes(hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var high: UInt8?
        for character in hex.utf8 {
            let value: UInt8
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = character - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = character - UInt8(ascii: "A") + 10
            default: continue
            }
            if let h = high {
                bytes.append(h << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        return bytes
    }
}
