import NIOCore

/// Follows the statements of one relayed session for the audit log, from the messages
/// each side sends; it never changes them. Pure: the handler feeds it client and server
/// messages (and the time), and it returns the statements that finished.
///
/// Simple `Query` messages become one statement each (however many commands the string
/// holds); in the extended protocol every `Execute` is one statement, carrying the SQL of
/// the `Parse` its portal was bound from. The server answers in order, so a queue of what
/// the client sent lines the answers up; after an error the server skips to the next
/// `Sync`, and executions it skipped are reported as such.
struct StatementTracker {
    struct Statement: Equatable, Sendable {
        var sql: String?
        /// The prepared statement's name (extended protocol; empty for the unnamed one).
        var preparedName: String?
        /// Bound parameter values as text (only when capturing them).
        var parameters: [String]?
        var startedAt: UInt64
        var finishedAt: UInt64
        /// CommandComplete tags, e.g. `SELECT 3`, `INSERT 0 1`.
        var commands: [String] = []
        var rows: Int64?
        var sqlState: String?
        /// False when the server skipped it after an earlier error in the same pipeline.
        var executed = true
    }

    private enum Pending {
        case simple(Statement)
        case execute(Statement)
        case sync(lastParsed: String?)
    }

    private struct Portal {
        var sql: String?
        var preparedName: String
        var parameters: [String]?
    }

    /// Statement text longer than this is cut (with a note of its full length).
    static let sqlLimit = 64 * 1024
    static let parameterLimit = 4 * 1024

    let captureParameters: Bool
    private var prepared: [String: String] = [:]
    private var portals: [String: Portal] = [:]
    private var pending: [Pending] = []
    private var pendingStart = 0
    private var lastParsed: String?
    /// Statements the client sent, in total.
    private(set) var count = 0
    /// The SQL of the statement the client sent last.
    private(set) var lastSQL: String?

    init(captureParameters: Bool) {
        self.captureParameters = captureParameters
    }

    // MARK: - What the client sends

    mutating func client(type: UInt8, body: ByteBuffer, now: UInt64) {
        var body = body
        switch type {
        case UInt8(ascii: "Q"):
            count += 1
            let sql = Self.text(body.readNullTerminatedString())
            lastSQL = sql
            enqueue(.simple(Statement(sql: sql, startedAt: now, finishedAt: now)))
        case UInt8(ascii: "P"):
            guard let name = body.readNullTerminatedString(), let sql = body.readNullTerminatedString() else { return }
            let text = Self.text(sql)
            prepared[name] = text
            lastParsed = text
        case UInt8(ascii: "B"):
            guard let portal = body.readNullTerminatedString(), let name = body.readNullTerminatedString() else {
                return
            }
            portals[portal] = Portal(
                sql: prepared[name], preparedName: name,
                parameters: captureParameters ? Self.parameters(&body) : nil)
        case UInt8(ascii: "E"):
            guard let name = body.readNullTerminatedString() else { return }
            let portal = portals[name]
            count += 1
            lastSQL = portal?.sql
            enqueue(
                .execute(
                    Statement(
                        sql: portal?.sql, preparedName: portal?.preparedName, parameters: portal?.parameters,
                        startedAt: now, finishedAt: now)))
        case UInt8(ascii: "S"):
            enqueue(.sync(lastParsed: lastParsed))
            lastParsed = nil
        case UInt8(ascii: "C"):
            guard let kind = body.readInteger(as: UInt8.self), let name = body.readNullTerminatedString() else {
                return
            }
            if kind == UInt8(ascii: "S") { prepared[name] = nil } else { portals[name] = nil }
        default:
            break
        }
    }

    // MARK: - What the server answers

    /// Returns the statements this message finished.
    mutating func server(type: UInt8, body: ByteBuffer, now: UInt64) -> [Statement] {
        guard pendingStart < pending.count else { return [] }
        var body = body
        switch type {
        case UInt8(ascii: "C"):
            let tag = body.readNullTerminatedString() ?? ""
            switch pending[pendingStart] {
            case .simple(var statement):
                statement.commands.append(tag)
                if let rows = Self.rows(tag) { statement.rows = (statement.rows ?? 0) + rows }
                pending[pendingStart] = .simple(statement)
                return []
            case .execute(var statement):
                statement.commands.append(tag)
                statement.rows = Self.rows(tag)
                statement.finishedAt = now
                dequeue()
                return [statement]
            case .sync:
                return []
            }
        case UInt8(ascii: "I"), UInt8(ascii: "s"):
            // EmptyQueryResponse, PortalSuspended: an execution ends without a tag.
            guard case .execute(var statement) = pending[pendingStart] else { return [] }
            statement.finishedAt = now
            if type == UInt8(ascii: "s") { statement.commands.append("(suspended)") }
            dequeue()
            return [statement]
        case UInt8(ascii: "E"):
            let code = Self.sqlState(&body)
            switch pending[pendingStart] {
            case .simple(var statement):
                statement.sqlState = code
                pending[pendingStart] = .simple(statement)
                return []
            case .execute(var statement):
                statement.sqlState = code
                statement.finishedAt = now
                dequeue()
                // The server now skips everything up to the next Sync.
                var finished = [statement]
                while pendingStart < pending.count, case .execute(var skipped) = pending[pendingStart] {
                    skipped.executed = false
                    skipped.finishedAt = now
                    finished.append(skipped)
                    dequeue()
                }
                return finished
            case .sync(let lastParsed):
                // An error outside any execution (a Parse or Bind that failed on its own).
                return [Statement(sql: lastParsed, startedAt: now, finishedAt: now, sqlState: code)]
            }
        case UInt8(ascii: "Z"):
            switch pending[pendingStart] {
            case .simple(var statement):
                statement.finishedAt = now
                dequeue()
                return [statement]
            case .sync:
                dequeue()
                return []
            case .execute:
                return []
            }
        default:
            return []
        }
    }

    // MARK: - Helpers

    private mutating func enqueue(_ entry: Pending) {
        pending.append(entry)
    }

    private mutating func dequeue() {
        pendingStart += 1
        if pendingStart > 64, pendingStart * 2 > pending.count {
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
    }

    static func text(_ sql: String?) -> String? {
        guard let sql else { return nil }
        guard sql.utf8.count > sqlLimit else { return sql }
        return String(decoding: sql.utf8.prefix(sqlLimit), as: UTF8.self) + "… (\(sql.utf8.count) bytes)"
    }

    /// Rows returned or affected, from a CommandComplete tag (`SELECT 3`, `INSERT 0 1`): the
    /// last word of a tag whose first word counts rows (slices of the tag, no word array).
    static func rows(_ tag: String) -> Int64? {
        guard let firstSpace = tag.firstIndex(of: " "), let lastSpace = tag.lastIndex(of: " "),
            countingVerbs.contains(tag[..<firstSpace])
        else { return nil }
        return Int64(tag[tag.index(after: lastSpace)...])
    }

    private static let countingVerbs: Set<Substring> = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "FETCH", "MOVE",
    ]

    static func sqlState(_ body: inout ByteBuffer) -> String? {
        while let field = body.readInteger(as: UInt8.self), field != 0 {
            guard let value = body.readNullTerminatedString() else { return nil }
            if field == UInt8(ascii: "C") { return value }
        }
        return nil
    }

    /// Bind's parameter values: text as is, binary as `\x` hex, NULL as `NULL`.
    static func parameters(_ body: inout ByteBuffer) -> [String]? {
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
