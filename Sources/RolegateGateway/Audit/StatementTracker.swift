package import NIOCore

/// Follows the statements of one relayed session for the audit log, from the messages
/// each side sends; it never changes them. Pure: the handler feeds it client and server
/// messages (and the time), and it returns the statements that finished.
///
/// Simple `Query` messages become one statement each (however many commands the string
/// holds); in the extended protocol every `Execute` is one statement, carrying the SQL of
/// the `Parse` its portal was bound from; a `FunctionCall` (libpq's fast path: `PQfn`, the
/// large-object API) is one statement naming its function. The server answers in order, so a queue of what
/// the client sent lines the answers up; after an error the server skips to the next
/// `Sync`, and executions it skipped are reported as such.
package struct StatementTracker {
    package struct Statement: Equatable, Sendable {
        package var sql: String?
        /// The prepared statement's name (extended protocol; empty for the unnamed one).
        package var preparedName: String?
        /// Bound parameter values as text (only when capturing them).
        package var parameters: [String]?
        package var startedAt: UInt64
        package var finishedAt: UInt64
        /// CommandComplete tags, e.g. `SELECT 3`, `INSERT 0 1`; several joined by `; `.
        package var command: String?
        package var rows: Int64?
        package var sqlState: String?
        /// False when the server skipped it after an earlier error in the same pipeline.
        package var executed = true
        /// The function a `FunctionCall` ran (no SQL then).
        package var function: FunctionCall?
        /// Sent, but the session ended before the server answered it (it may have run).
        package var interrupted = false

        package mutating func addCommand(_ tag: String) {
            if let command { self.command = command + "; " + tag } else { command = tag }
        }
    }

    /// What the client sent that the server has yet to finish. One struct (not an enum with
    /// payloads), so that an answer updates its statement in place.
    /// What a `FunctionCall` message names: the function's OID, and its name when it is one of
    /// the built-in functions clients call this way (``FunctionCall/builtinNames``).
    package struct FunctionCall: Equatable, Sendable {
        package var oid: UInt32
        package var name: String? { Self.builtinNames[oid] }

        /// Built-in functions' OIDs are fixed by PostgreSQL's catalog (`pg_proc.dat`); these are the
        /// ones libpq calls through the fast path (its large-object API) and a few a `PQfn` user
        /// would. A test checks them against a real server's `pg_proc`.
        package static let builtinNames: [UInt32: String] = [
            715: "lo_create", 764: "lo_import", 765: "lo_export", 767: "lo_import", 952: "lo_open",
            953: "lo_close", 954: "loread", 955: "lowrite", 956: "lo_lseek", 957: "lo_creat", 958: "lo_tell",
            964: "lo_unlink", 1004: "lo_truncate", 3170: "lo_lseek64", 3171: "lo_tell64", 3172: "lo_truncate64",
            2026: "pg_backend_pid", 1371: "pg_lock_status",
        ]
    }

    private struct Pending {
        package enum Kind { case simple, execute, sync, function }
        package var kind: Kind
        /// For a `sync`: only `sql`, the last statement parsed before it.
        package var statement: Statement
    }

    private struct Portal {
        package var sql: String?
        package var preparedName: String
        package var parameters: [String]?
    }

    /// Statement text longer than this is cut (with a note of its full length).
    package static let sqlLimit = 64 * 1024
    package static let parameterLimit = 4 * 1024

    package let captureParameters: Bool
    private var prepared: [String: String] = [:]
    private var portals: [String: Portal] = [:]
    /// The unnamed statement and portal, which most clients use for every statement: kept out of
    /// the dictionaries (two hash look-ups and a store fewer per statement).
    private var unnamedStatement: String?
    private var unnamedPortal: Portal?
    private var pending: [Pending] = []
    private var pendingStart = 0
    private var lastParsed: String?
    /// Statements the client sent, in total.
    package private(set) var count = 0
    /// The SQL of the statement the client sent last.
    package private(set) var lastSQL: String?

    package init(captureParameters: Bool) {
        self.captureParameters = captureParameters
    }

    // MARK: - What the client sends

    package mutating func client(type: UInt8, body: ByteBuffer, now: UInt64) {
        var body = body
        switch type {
        case UInt8(ascii: "Q"):
            count += 1
            let sql = Self.text(body.readNullTerminatedString())
            lastSQL = sql
            enqueue(.simple, Statement(sql: sql, startedAt: now, finishedAt: now))
        case UInt8(ascii: "P"):
            guard let name = body.readNullTerminatedString(), let sql = body.readNullTerminatedString() else { return }
            let text = Self.text(sql)
            if name.isEmpty { unnamedStatement = text } else { prepared[name] = text }
            lastParsed = text
        case UInt8(ascii: "B"):
            guard let portal = body.readNullTerminatedString(), let name = body.readNullTerminatedString() else {
                return
            }
            let bound = Portal(
                sql: name.isEmpty ? unnamedStatement : prepared[name], preparedName: name,
                parameters: captureParameters ? Self.parameters(&body) : nil)
            if portal.isEmpty { unnamedPortal = bound } else { portals[portal] = bound }
        case UInt8(ascii: "E"):
            guard let name = body.readNullTerminatedString() else { return }
            let portal = name.isEmpty ? unnamedPortal : portals[name]
            count += 1
            lastSQL = portal?.sql
            enqueue(
                .execute,
                Statement(
                    sql: portal?.sql, preparedName: portal?.preparedName, parameters: portal?.parameters,
                    startedAt: now, finishedAt: now))
        case UInt8(ascii: "F"):
            guard let oid = body.readInteger(as: UInt32.self) else { return }
            count += 1
            let call = FunctionCall(oid: oid)
            lastSQL = "FunctionCall \(call.name ?? "oid \(oid)")"
            enqueue(
                .function,
                Statement(
                    parameters: captureParameters ? Self.parameters(&body) : nil, startedAt: now,
                    finishedAt: now, function: call))
        case UInt8(ascii: "S"):
            enqueue(.sync, Statement(sql: lastParsed, startedAt: now, finishedAt: now))
            lastParsed = nil
        case UInt8(ascii: "C"):
            guard let kind = body.readInteger(as: UInt8.self), let name = body.readNullTerminatedString() else {
                return
            }
            switch (kind == UInt8(ascii: "S"), name.isEmpty) {
            case (true, true): unnamedStatement = nil
            case (true, false): prepared[name] = nil
            case (false, true): unnamedPortal = nil
            case (false, false): portals[name] = nil
            }
        default:
            break
        }
    }

    // MARK: - What the server answers

    /// Whether a server message can end a statement (CommandComplete, ErrorResponse,
    /// ReadyForQuery, EmptyQueryResponse, PortalSuspended): the only ones ``server(type:body:now:finished:)``
    /// needs to see.
    package static func endsStatement(_ type: UInt8) -> Bool {
        switch type {
        case UInt8(ascii: "C"), UInt8(ascii: "E"), UInt8(ascii: "Z"), UInt8(ascii: "I"), UInt8(ascii: "s"): true
        default: false
        }
    }

    /// Returns the statements this message finished.
    package mutating func server(type: UInt8, body: ByteBuffer, now: UInt64) -> [Statement] {
        var finished: [Statement] = []
        server(type: type, body: body, now: now) { finished.append($0) }
        return finished
    }

    /// Calls `finished` for each statement this message finished, in order (no array per
    /// message: this runs for every message the server sends while statements are audited).
    package mutating func server(type: UInt8, body: ByteBuffer, now: UInt64, finished: (Statement) -> Void) {
        guard pendingStart < pending.count else { return }
        var body = body
        let kind = pending[pendingStart].kind
        switch type {
        case UInt8(ascii: "C"):
            guard kind != .sync, kind != .function else { return }
            let tag = body.readNullTerminatedString() ?? ""
            let rows = Self.rows(tag)
            pending[pendingStart].statement.addCommand(tag)
            if kind == .simple {
                if let rows {
                    pending[pendingStart].statement.rows = (pending[pendingStart].statement.rows ?? 0) + rows
                }
            } else {
                pending[pendingStart].statement.rows = rows
                finished(finish(now))
            }
        case UInt8(ascii: "I"), UInt8(ascii: "s"):
            // EmptyQueryResponse, PortalSuspended: an execution ends without a tag.
            guard kind == .execute else { return }
            if type == UInt8(ascii: "s") { pending[pendingStart].statement.addCommand("(suspended)") }
            finished(finish(now))
        case UInt8(ascii: "E"):
            let code = Self.sqlState(&body)
            switch kind {
            case .simple, .function:
                pending[pendingStart].statement.sqlState = code
            case .execute:
                pending[pendingStart].statement.sqlState = code
                finished(finish(now))
                // The server now skips everything up to the next Sync.
                while pendingStart < pending.count, pending[pendingStart].kind == .execute {
                    pending[pendingStart].statement.executed = false
                    finished(finish(now))
                }
            case .sync:
                // An error outside any execution (a Parse or Bind that failed on its own).
                finished(
                    Statement(sql: pending[pendingStart].statement.sql, startedAt: now, finishedAt: now, sqlState: code)
                )
            }
        case UInt8(ascii: "Z"):
            switch kind {
            case .simple, .function: finished(finish(now))
            case .sync: dequeue()
            case .execute: break
            }
        default:
            break
        }
    }

    /// The statements the client sent that the server had not finished when the session ended,
    /// in order, marked ``Statement/interrupted``: the server may have run them, so they are
    /// recorded like any other.
    package mutating func interrupted(now: UInt64, finished: (Statement) -> Void) {
        while pendingStart < pending.count {
            guard pending[pendingStart].kind != .sync else {
                dequeue()
                continue
            }
            var statement = finish(now)
            statement.interrupted = true
            finished(statement)
        }
    }

    /// Takes the oldest pending statement out, finished at `now`.
    private mutating func finish(_ now: UInt64) -> Statement {
        pending[pendingStart].statement.finishedAt = now
        let statement = pending[pendingStart].statement
        dequeue()
        return statement
    }

    // MARK: - Helpers

    private mutating func enqueue(_ kind: Pending.Kind, _ statement: Statement) {
        pending.append(Pending(kind: kind, statement: statement))
    }

    private mutating func dequeue() {
        // The slot keeps no strings alive until the queue is compacted.
        pending[pendingStart].statement = Statement(startedAt: 0, finishedAt: 0)
        pendingStart += 1
        if pendingStart > 64, pendingStart * 2 > pending.count {
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
    }

    package static func text(_ sql: String?) -> String? {
        guard let sql else { return nil }
        guard sql.utf8.count > sqlLimit else { return sql }
        return String(decoding: sql.utf8.prefix(sqlLimit), as: UTF8.self) + "… (\(sql.utf8.count) bytes)"
    }

    /// Rows returned or affected, from a CommandComplete tag (`SELECT 3`, `INSERT 0 1`): the
    /// last word of a tag whose first word counts rows. Read from the tag's bytes: this runs
    /// for every statement.
    package static func rows(_ tag: String) -> Int64? {
        var tag = tag
        return tag.withUTF8 { bytes -> Int64? in
            guard let firstSpace = bytes.firstIndex(of: UInt8(ascii: " ")),
                let lastSpace = bytes.lastIndex(of: UInt8(ascii: " ")),
                countsRows(UnsafeBufferPointer(rebasing: bytes[..<firstSpace]))
            else { return nil }
            // A count's text is a small string: no allocation.
            return Int64(String(decoding: UnsafeBufferPointer(rebasing: bytes[(lastSpace + 1)...]), as: UTF8.self))
        }
    }

    private static func countsRows(_ verb: UnsafeBufferPointer<UInt8>) -> Bool {
        countingVerbs.contains { $0.count == verb.count && $0.elementsEqual(verb) }
    }

    private static let countingVerbs: [[UInt8]] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "FETCH", "MOVE",
    ].map { Array($0.utf8) }

    package static func sqlState(_ body: inout ByteBuffer) -> String? {
        while let field = body.readInteger(as: UInt8.self), field != 0 {
            guard let value = body.readNullTerminatedString() else { return nil }
            if field == UInt8(ascii: "C") { return value }
        }
        return nil
    }

    /// Bind's parameter values (and a FunctionCall's arguments, laid out alike after its OID):
    /// text as is, binary as `\x` hex, NULL as `NULL`.
    package static func parameters(_ body: inout ByteBuffer) -> [String]? {
        guard let formatCount = body.readInteger(as: Int16.self), formatCount >= 0 else { return nil }
        var formats: [Int16] = []
        for _ in 0..<formatCount {
            guard let format = body.readInteger(as: Int16.self) else { return nil }
            formats.append(format)
        }
        guard let count = body.readInteger(as: Int16.self), count >= 0 else { return nil }
        var values: [String] = []
        for index in 0..<Int(count) {
            guard let length = body.readInteger(as: Int32.self) else { return nil }
            if length < 0 {
                values.append("NULL")
                continue
            }
            guard let bytes = body.readBytes(length: Int(length)) else { return nil }
            let format = formats.count == 1 ? formats[0] : (index < formats.count ? formats[index] : 0)
            var value =
                format == 0
                ? String(decoding: bytes.prefix(parameterLimit), as: UTF8.self)
                : "\\x" + bytes.prefix(parameterLimit / 2).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
            if bytes.count > (format == 0 ? parameterLimit : parameterLimit / 2) { value += "… (\(bytes.count) bytes)" }
            values.append(value)
        }
        return values
    }
}
