import NIOCore
import PostgresWire
import RolegateGateway

/// One statement of an HTTP request: SQL with `$1…` placeholders and their values as text
/// (nil for NULL). Values are sent untyped, so PostgreSQL infers each one's type from the
/// statement, as it does for a literal.
struct QueryStatement: Sendable, Equatable {
    var sql: String
    var parameters: [String?]

    init(sql: String, parameters: [String?] = []) {
        self.sql = sql
        self.parameters = parameters
    }
}

/// What one statement returned: column names and type OIDs, rows as PostgreSQL's text
/// form (nil for NULL), and the CommandComplete tag.
struct StatementResult: Sendable, Equatable {
    struct Column: Sendable, Equatable {
        var name: String
        var typeOID: UInt32
    }

    var columns: [Column] = []
    var rows: [[String?]] = []
    var command: String?
    /// Rows returned or affected, from the tag.
    var rowCount: Int64?
    /// The row or byte limit ended the result early.
    var truncated = false
}

/// PostgreSQL refused a statement (or the transaction around it).
struct QueryFailure: Error, Sendable, Equatable {
    var sqlState: String
    var message: String
    var detail: String?
    var hint: String?
    /// Which statement of the request (0-based), when it was one of them.
    var statementIndex: Int?
}

/// The wire conversation for an HTTP request, as a pure state machine: the messages to
/// send, and the reading of what the server answers.
///
/// Everything is sent at once (a pipeline): for each statement an unnamed Parse (parameter
/// types unspecified), Bind (text values, text results), Describe and Execute (at most
/// `maxRows + 1` rows), then one Sync. Extended-protocol messages up to a Sync run in one
/// implicit transaction: the statements commit together at the Sync, or, at the first
/// error, PostgreSQL skips to the Sync and rolls everything back. So a single statement is
/// all or nothing without `BEGIN` and `COMMIT` of its own (two fewer commands and server
/// flushes per request than an explicit transaction).
///
/// A batch of several statements runs in a transaction block of its own (`BEGIN` first,
/// `COMMIT` as a simple query after the Sync, which rolls back instead when a statement
/// failed): in the implicit transaction a procedure (`CALL`) or a `DO` block may `COMMIT`
/// part of the batch, inside a block it cannot. Top-level `COMMIT`, `ROLLBACK` and the like
/// are refused before anything runs (``TransactionControl``).
///
/// The server connection starts with the request's usual `statement_timeout` (a startup
/// parameter, see ``GatewayServer/run(_:token:database:statementTimeout:usualTimeout:maxRows:maxBytes:)``);
/// a request asking a different one first runs `set_config('statement_timeout', …, true)`,
/// local to its transaction.
///
/// A statement can still open a transaction block of its own (`BEGIN` without `COMMIT`):
/// the Sync's ReadyForQuery then reports one in progress, and the request fails rather
/// than report work that the dropped connection rolls back.
///
/// Last comes `DISCARD ALL` (what the pool would otherwise send in a round trip of its own
/// before reuse: a statement may have left session state, such as a plain `SET`, a
/// temporary table or an advisory lock), so the connection ends idle, reset and reusable
/// with the answer.
struct QueryExchange {
    enum Phase: Equatable {
        /// `BEGIN`, for a batch of several statements.
        case begin
        /// `set_config('statement_timeout', …)`, when the request asks a timeout of its own.
        case timeout
        case statement(Int)
        case sync
        /// `COMMIT` of a batch's block, sent after the Sync.
        case commit
        /// `DISCARD ALL`, sent after the Sync (and the `COMMIT`).
        case reset
        case done
    }

    let statements: [QueryStatement]
    let maxRows: Int
    let maxBytes: Int
    /// The request's statement timeout, and the one its server connection starts with.
    let timeoutMilliseconds: Int64
    let usualTimeoutMilliseconds: Int64
    /// Several statements: they run in a transaction block of the exchange's own.
    let block: Bool
    private(set) var phase: Phase
    private(set) var results: [StatementResult] = []
    private(set) var failure: QueryFailure?
    /// The closing `DISCARD ALL` succeeded: the connection can serve another client as it is.
    private(set) var resetDone = false
    private var resetFailed = false
    private var current = StatementResult()
    private var bytes = 0

    init(
        statements: [QueryStatement], maxRows: Int, maxBytes: Int, timeoutMilliseconds: Int64,
        usualTimeoutMilliseconds: Int64
    ) {
        self.statements = statements
        self.maxRows = maxRows
        self.maxBytes = maxBytes
        self.timeoutMilliseconds = Self.clamp(timeoutMilliseconds)
        self.usualTimeoutMilliseconds = Self.clamp(usualTimeoutMilliseconds)
        block = statements.count > 1
        phase = .begin  // a first value, so that the phases computed below can be read
        phase = block ? .begin : afterBegin
    }

    private var ownTimeout: Bool { timeoutMilliseconds != usualTimeoutMilliseconds }
    private var afterBegin: Phase { ownTimeout ? .timeout : afterTimeout }
    private var afterTimeout: Phase { statements.isEmpty ? .sync : .statement(0) }

    /// Why the statements cannot run as one transaction, before anything is sent: a batch
    /// statement that would end or restart the transaction (``TransactionControl``).
    var refusal: QueryFailure? {
        guard block else { return nil }
        for (index, statement) in statements.enumerated() {
            guard let command = TransactionControl.refusedCommand(statement.sql) else { continue }
            return QueryFailure(
                sqlState: "25000",
                message:
                    "\(command) is not allowed in a batch: the batch is one transaction already, committed when every statement succeeded and rolled back otherwise (SAVEPOINT, RELEASE and ROLLBACK TO are allowed)",
                statementIndex: index)
        }
        return nil
    }

    /// The `statement_timeout` startup parameter of the request's server connection.
    static func timeoutParameter(milliseconds: Int64) -> StartupParameter {
        StartupParameter("statement_timeout", String(clamp(milliseconds)))
    }

    /// What `statement_timeout` accepts: 1 ms (0 would mean none) to 2^31 - 1 ms.
    static func clamp(_ milliseconds: Int64) -> Int64 { min(max(1, milliseconds), Int64(Int32.max)) }

    /// The whole pipeline, encoded into one buffer: one write, no buffer per message.
    /// ReadyForQuery messages ``pipeline()`` is answered with: its Sync, the COMMIT of a
    /// transaction block, and the reset.
    var answersOwed: Int { block ? 3 : 2 }

    func pipeline() -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(128 + statements.reduce(0) { $0 + $1.sql.utf8.count + 8 * $1.parameters.count })
        if block { Self.appendExecution("BEGIN", to: &out) }
        if ownTimeout {
            Self.appendExecution(
                "SELECT set_config('statement_timeout', $1, true)", parameters: [String(timeoutMilliseconds)],
                to: &out)
        }
        for statement in statements {
            Self.appendExecution(
                statement.sql, parameters: statement.parameters, describe: true,
                maxRows: Int32(clamping: maxRows + 1), to: &out)
        }
        Self.append("S", to: &out) { _ in }
        if block { Self.append("Q", to: &out) { $0.writeNullTerminatedString("COMMIT") } }
        Self.append("Q", to: &out) { $0.writeNullTerminatedString(UpstreamConnection.resetQuery) }
        return out
    }

    /// The pipeline's messages one by one, as the server reads them.
    func messages() -> [WireMessage] {
        var buffer = pipeline()
        var out: [WireMessage] = []
        while let message = try? WireFraming.message(from: &buffer) { out.append(message) }
        return out
    }

    /// One message: type, length, then the body `write` appends.
    private static func append(_ type: Character, to out: inout ByteBuffer, _ write: (inout ByteBuffer) -> Void) {
        out.writeInteger(type.asciiValue!)
        let lengthAt = out.writerIndex
        out.writeInteger(Int32(0))
        write(&out)
        out.setInteger(Int32(out.writerIndex - lengthAt), at: lengthAt)
    }

    /// Parse, Bind (text values, nil for NULL; text results), Describe when the rows'
    /// columns are wanted, and Execute (`maxRows` 0: all) of the unnamed statement.
    private static func appendExecution(
        _ sql: String, parameters: [String?] = [], describe: Bool = false, maxRows: Int32 = 0,
        to out: inout ByteBuffer
    ) {
        append("P", to: &out) {
            $0.writeNullTerminatedString("")
            $0.writeNullTerminatedString(sql)
            $0.writeInteger(Int16(0))  // no parameter types: PostgreSQL infers them
        }
        append("B", to: &out) {
            $0.writeNullTerminatedString("")
            $0.writeNullTerminatedString("")
            $0.writeInteger(Int16(0))  // all parameters in text format
            $0.writeInteger(Int16(parameters.count))
            for value in parameters {
                if let value {
                    $0.writeInteger(Int32(value.utf8.count))
                    $0.writeString(value)
                } else {
                    $0.writeInteger(Int32(-1))
                }
            }
            $0.writeInteger(Int16(0))  // all results in text format
        }
        if describe {
            append("D", to: &out) {
                $0.writeInteger(UInt8(ascii: "P"))
                $0.writeNullTerminatedString("")
            }
        }
        append("E", to: &out) {
            $0.writeNullTerminatedString("")
            $0.writeInteger(maxRows)
        }
    }

    var isDone: Bool { phase == .done }

    /// Reads one message from the server.
    mutating func receive(type: UInt8, body: ByteBuffer) {
        var body = body
        switch type {
        case UInt8(ascii: "Z"):
            let status = body.readInteger(as: UInt8.self)
            switch phase {
            case .reset, .done:
                phase = .done
                resetDone = !resetFailed
            case .commit:
                phase = .reset
            case _ where block:
                // After the Sync: the batch's block is still open ('T', or 'E' after an error);
                // the COMMIT that follows ends it.
                phase = .commit
                if failure == nil, status != UInt8(ascii: "T") {
                    failure = QueryFailure(
                        sqlState: "25000", message: "the batch's transaction ended before its last statement")
                }
            default:
                phase = .reset
                // 'I': the implicit transaction ended (committed, or rolled back after an error).
                // Otherwise a statement's own BEGIN left a block open: DISCARD ALL fails inside it,
                // the connection is closed, and what ran is rolled back — so say so.
                if failure == nil, status != UInt8(ascii: "I") {
                    failure = QueryFailure(
                        sqlState: "25000",
                        message:
                            "a statement opened a transaction block that the request did not close, so it was rolled back; a request is one transaction already (leave out BEGIN and COMMIT)"
                    )
                }
            }
        case UInt8(ascii: "E"):
            // The request's outcome is settled by then; the connection just is not reused.
            if phase == .reset { return resetFailed = true }
            guard failure == nil else { return }
            var fields: [UInt8: String] = [:]
            while let code = body.readInteger(as: UInt8.self), code != 0 {
                fields[code] = body.readNullTerminatedString()
            }
            var index: Int?
            if case .statement(let i) = phase { index = i }
            failure = QueryFailure(
                sqlState: fields[UInt8(ascii: "C")] ?? "XX000", message: fields[UInt8(ascii: "M")] ?? "error",
                detail: fields[UInt8(ascii: "D")], hint: fields[UInt8(ascii: "H")], statementIndex: index)
            // PostgreSQL skips to the Sync; a failed COMMIT (a deferred constraint) has rolled back.
            if phase != .commit { phase = .sync }
        case UInt8(ascii: "T"):
            guard case .statement = phase, let count = body.readInteger(as: Int16.self) else { return }
            current.columns = []
            for _ in 0..<max(0, Int(count)) {
                guard let name = body.readNullTerminatedString(), body.readInteger(as: Int32.self) != nil,
                    body.readInteger(as: Int16.self) != nil, let oid = body.readInteger(as: UInt32.self),
                    body.readInteger(as: Int16.self) != nil, body.readInteger(as: Int32.self) != nil,
                    body.readInteger(as: Int16.self) != nil
                else { return }
                current.columns.append(.init(name: name, typeOID: oid))
            }
        case UInt8(ascii: "D"):
            guard case .statement = phase, !current.truncated else { return }
            if current.rows.count >= maxRows || bytes + body.readableBytes > maxBytes {
                current.truncated = true
                return
            }
            bytes += body.readableBytes
            guard let count = body.readInteger(as: Int16.self) else { return }
            var row: [String?] = []
            row.reserveCapacity(Int(count))
            for _ in 0..<max(0, Int(count)) {
                guard let length = body.readInteger(as: Int32.self) else { return }
                row.append(length < 0 ? nil : body.readString(length: Int(length)))
            }
            current.rows.append(row)
        case UInt8(ascii: "C"), UInt8(ascii: "s"), UInt8(ascii: "I"):
            if phase == .begin, type == UInt8(ascii: "C") { return phase = afterBegin }
            if phase == .timeout, type == UInt8(ascii: "C") { return phase = afterTimeout }
            if phase == .commit, type == UInt8(ascii: "C"), failure == nil,
                body.readNullTerminatedString() != "COMMIT"
            {
                return failure = QueryFailure(sqlState: "40000", message: "the batch's transaction was rolled back")
            }
            guard case .statement(let index) = phase else { return }
            if type == UInt8(ascii: "C") {
                let tag = body.readNullTerminatedString() ?? ""
                current.command = tag.split(separator: " ").first.map(String.init)
                current.rowCount = StatementTracker.rows(tag)
            } else if type == UInt8(ascii: "s") {
                current.truncated = true
                current.command = "SELECT"
                current.rowCount = Int64(current.rows.count)
            }
            results.append(current)
            current = StatementResult()
            phase = index + 1 < statements.count ? .statement(index + 1) : .sync
        default:
            break  // ParseComplete, BindComplete, NoData, notices, ParameterStatus
        }
    }
}
