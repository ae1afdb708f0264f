import NIOCore
import PostgresWire
import RolegateTestSupport
import Testing

@testable import RolegateGateway
@testable import RolegateHTTP

/// The HTTP data API's conversation with PostgreSQL, message by message.
@Suite(.ownThreads) struct QueryExchangeTests {
    func t(_ c: Character) -> UInt8 { UInt8(ascii: c.unicodeScalars.first!) }
    func tag(_ text: String) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeNullTerminatedString(text)
        return b
    }
    let idle = ByteBuffer(bytes: [UInt8(ascii: "I")])
    let inBlock = ByteBuffer(bytes: [UInt8(ascii: "T")])
    let failedBlock = ByteBuffer(bytes: [UInt8(ascii: "E")])
    func rowDescription(_ columns: [(String, UInt32)]) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(Int16(columns.count))
        for (name, oid) in columns {
            b.writeNullTerminatedString(name)
            b.writeInteger(Int32(0))
            b.writeInteger(Int16(0))
            b.writeInteger(oid)
            b.writeInteger(Int16(-1))
            b.writeInteger(Int32(-1))
            b.writeInteger(Int16(0))
        }
        return b
    }
    func dataRow(_ values: [String?]) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(Int16(values.count))
        for value in values {
            if let value {
                b.writeInteger(Int32(value.utf8.count))
                b.writeString(value)
            } else {
                b.writeInteger(Int32(-1))
            }
        }
        return b
    }
    func error(_ code: String, _ message: String) -> ByteBuffer {
        var b = ByteBuffer()
        for (field, value) in [("S", "ERROR"), ("C", code), ("M", message)] {
            b.writeInteger(UInt8(ascii: field.unicodeScalars.first!))
            b.writeNullTerminatedString(value)
        }
        b.writeInteger(UInt8(0))
        return b
    }

    /// The closing DISCARD ALL's answer.
    func reset(_ x: inout QueryExchange) {
        #expect(!x.isDone)
        x.receive(type: t("C"), body: tag("DISCARD ALL"))
        x.receive(type: t("Z"), body: idle)
    }

    /// A batch's BEGIN answered.
    func begin(_ x: inout QueryExchange) {
        x.receive(type: t("1"), body: ByteBuffer())
        x.receive(type: t("2"), body: ByteBuffer())
        x.receive(type: t("C"), body: tag("BEGIN"))
    }

    /// A batch's Sync and COMMIT answered: `committed` or rolled back after a failed statement.
    func commit(_ x: inout QueryExchange, committed: Bool = true) {
        x.receive(type: t("Z"), body: committed ? inBlock : failedBlock)
        #expect(x.phase == .commit)
        x.receive(type: t("C"), body: tag(committed ? "COMMIT" : "ROLLBACK"))
        x.receive(type: t("Z"), body: idle)
    }

    func exchange(_ statements: [QueryStatement], maxRows: Int = 10, timeout: Int64 = 5000) -> QueryExchange {
        QueryExchange(
            statements: statements, maxRows: maxRows, maxBytes: 1 << 20, timeoutMilliseconds: timeout,
            usualTimeoutMilliseconds: 5000)
    }

    @Test func theStatementIsOneImplicitTransactionWithTextResults() {
        let x = exchange([QueryStatement(sql: "SELECT $1", parameters: ["7"])])
        let messages = x.messages()
        #expect(messages.last == Frontend.query("DISCARD ALL"))
        #expect(messages.map { Character(Unicode.Scalar($0.type)) } == ["P", "B", "D", "E", "S", "Q"])
        // Byte for byte: unnamed portal and statement, no parameter formats (text), one
        // parameter of length 1, no result formats (text); and nothing else in the pipeline.
        var bind = ByteBuffer(bytes: [0, 0, 0, 0, 0, 1, 0, 0, 0, 1])
        bind.writeString("7")
        bind.writeInteger(Int16(0))
        #expect(messages[1] == WireMessage(type: "B", body: bind))
        #expect(messages[4] == WireMessage(type: "S", body: ByteBuffer()))
        #expect(x.pipeline().readableBytes == messages.reduce(0) { $0 + 5 + $1.body.readableBytes })
        #expect(QueryExchange.timeoutParameter(milliseconds: 5000) == StartupParameter("statement_timeout", "5000"))
        #expect(QueryExchange.timeoutParameter(milliseconds: 0).value == "1")
        #expect(QueryExchange.timeoutParameter(milliseconds: 1 << 40).value == "2147483647")
    }

    @Test func aTimeoutOtherThanTheConnectionsIsSetForTheTransactionOnly() throws {
        var x = exchange([QueryStatement(sql: "SELECT 1")], timeout: 250)
        let messages = x.messages()
        #expect(
            messages.map { Character(Unicode.Scalar($0.type)) } == ["P", "B", "E", "P", "B", "D", "E", "S", "Q"])
        var parse = messages[0].body
        _ = parse.readNullTerminatedString()
        #expect(parse.readNullTerminatedString() == "SELECT set_config('statement_timeout', $1, true)")
        let bind = messages[1].body
        #expect(bind.getString(at: bind.writerIndex - 5, length: 3) == "250")
        // Its row and tag are not a result of the request's.
        x.receive(type: t("2"), body: ByteBuffer())
        x.receive(type: t("D"), body: dataRow(["250ms"]))
        x.receive(type: t("C"), body: tag("SELECT 1"))
        x.receive(type: t("T"), body: rowDescription([("?column?", 23)]))
        x.receive(type: t("D"), body: dataRow(["1"]))
        x.receive(type: t("C"), body: tag("SELECT 1"))
        x.receive(type: t("Z"), body: idle)
        reset(&x)
        #expect(x.isDone && x.failure == nil && x.results.map(\.rows) == [[["1"]]])

        // A refused timeout fails the request without naming a statement.
        var refused = exchange([QueryStatement(sql: "SELECT 1")], timeout: 250)
        refused.receive(type: t("E"), body: error("22023", "invalid value"))
        refused.receive(type: t("Z"), body: idle)
        reset(&refused)
        #expect(refused.failure?.sqlState == "22023" && refused.failure?.statementIndex == nil)
        #expect(refused.results.isEmpty)
    }

    @Test func aTransactionBlockLeftOpenFailsTheRequest() {
        var x = exchange([QueryStatement(sql: "BEGIN")])
        #expect(x.refusal == nil, "a single statement is sent as it is")
        x.receive(type: t("C"), body: tag("BEGIN"))
        x.receive(type: t("Z"), body: inBlock)
        x.receive(type: t("E"), body: error("25001", "DISCARD ALL cannot run inside a transaction block"))
        x.receive(type: t("Z"), body: inBlock)
        #expect(x.isDone && !x.resetDone)
        #expect(x.failure?.sqlState == "25000" && x.failure?.message.contains("rolled back") == true)
    }

    /// A batch runs in a block of its own: BEGIN first, COMMIT after the Sync (a simple query,
    /// so that it also ends a block that failed), then the reset.
    @Test func aBatchIsATransactionBlockOfItsOwn() {
        var x = exchange([QueryStatement(sql: "SELECT $1", parameters: ["7"]), QueryStatement(sql: "SELECT 2")])
        #expect(x.refusal == nil)
        let messages = x.messages()
        #expect(
            messages.map { Character(Unicode.Scalar($0.type)) } == [
                "P", "B", "E", "P", "B", "D", "E", "P", "B", "D", "E", "S", "Q", "Q",
            ])
        var parse = messages[0].body
        _ = parse.readNullTerminatedString()
        #expect(parse.readNullTerminatedString() == "BEGIN")
        #expect(Array(messages.suffix(2)) == [Frontend.query("COMMIT"), Frontend.query("DISCARD ALL")])
        begin(&x)
        for value in ["7", "2"] {
            x.receive(type: t("T"), body: rowDescription([("?column?", 23)]))
            x.receive(type: t("D"), body: dataRow([value]))
            x.receive(type: t("C"), body: tag("SELECT 1"))
        }
        commit(&x)
        reset(&x)
        #expect(x.isDone && x.resetDone && x.failure == nil)
        #expect(x.results.map(\.rows) == [[["7"]], [["2"]]])

        // A COMMIT that fails (a deferred constraint) fails the request, naming no statement.
        var deferred = exchange([QueryStatement(sql: "INSERT INTO a VALUES (1)"), QueryStatement(sql: "SELECT 1")])
        begin(&deferred)
        deferred.receive(type: t("C"), body: tag("INSERT 0 1"))
        deferred.receive(type: t("C"), body: tag("SELECT 1"))
        deferred.receive(type: t("Z"), body: inBlock)
        deferred.receive(type: t("E"), body: error("23503", "violates foreign key constraint"))
        deferred.receive(type: t("Z"), body: idle)
        reset(&deferred)
        #expect(deferred.isDone && deferred.resetDone)
        #expect(deferred.failure?.sqlState == "23503" && deferred.failure?.statementIndex == nil)

        // Whatever ended the block before the COMMIT is reported, never a success.
        var ended = exchange([QueryStatement(sql: "SELECT 1"), QueryStatement(sql: "SELECT 2")])
        begin(&ended)
        ended.receive(type: t("C"), body: tag("SELECT 1"))
        ended.receive(type: t("C"), body: tag("SELECT 1"))
        ended.receive(type: t("Z"), body: idle)
        ended.receive(type: t("C"), body: tag("COMMIT"))
        ended.receive(type: t("Z"), body: idle)
        reset(&ended)
        #expect(ended.failure?.sqlState == "25000")
    }

    /// Transaction control that would end the batch's block early is refused before anything is
    /// sent, naming the statement; savepoints stay inside the block and are allowed.
    @Test func transactionControlInABatchIsRefused() {
        let refused = [
            "COMMIT", "commit and chain", "  /* a /* nested */ comment */ -- and a line\n END", "ROLLBACK",
            "rollback work", "ROLLBACK PREPARED 'x'", "ABORT", "BEGIN", "begin isolation level serializable",
            "START TRANSACTION", "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'",
        ]
        for sql in refused {
            let x = exchange([QueryStatement(sql: "SELECT 1"), QueryStatement(sql: sql)])
            #expect(x.refusal?.statementIndex == 1, "\(sql)")
            #expect(x.refusal?.sqlState == "25000")
        }
        #expect(
            exchange([QueryStatement(sql: "commit"), QueryStatement(sql: "SELECT 1")]).refusal?.message.hasPrefix(
                "COMMIT is not allowed in a batch") == true)
        let allowed = [
            "SAVEPOINT a", "RELEASE SAVEPOINT a", "ROLLBACK TO a", "rollback work to savepoint a",
            "ROLLBACK TRANSACTION TO SAVEPOINT a", "PREPARE q AS SELECT 1", "SELECT 'COMMIT'", "/* COMMIT */ SELECT 1",
            "-- ROLLBACK\nSELECT 1", "DO $$ BEGIN PERFORM 1; END $$", "CALL p()", "ending", "committed_rows", "end1",
            "",
            "/* unterminated",
        ]
        for sql in allowed {
            #expect(exchange([QueryStatement(sql: "SELECT 1"), QueryStatement(sql: sql)]).refusal == nil, "\(sql)")
        }
    }

    @Test func resultsAreCollectedPerStatement() {
        var x = exchange([
            QueryStatement(sql: "SELECT id, name FROM t"), QueryStatement(sql: "INSERT INTO t VALUES (3)"),
        ])
        begin(&x)
        x.receive(type: t("1"), body: ByteBuffer())
        x.receive(type: t("2"), body: ByteBuffer())
        x.receive(type: t("T"), body: rowDescription([("id", 23), ("name", 25)]))
        x.receive(type: t("D"), body: dataRow(["1", "ada"]))
        x.receive(type: t("D"), body: dataRow(["2", nil]))
        x.receive(type: t("C"), body: tag("SELECT 2"))
        x.receive(type: t("n"), body: ByteBuffer())
        x.receive(type: t("C"), body: tag("INSERT 0 1"))
        commit(&x)
        reset(&x)
        #expect(x.isDone && x.failure == nil && x.resetDone)
        #expect(x.results.count == 2)
        #expect(x.results[0].columns.map(\.name) == ["id", "name"] && x.results[0].columns.map(\.typeOID) == [23, 25])
        #expect(x.results[0].rows == [["1", "ada"], ["2", nil]])
        #expect(x.results[0].command == "SELECT" && x.results[0].rowCount == 2)
        #expect(x.results[1].command == "INSERT" && x.results[1].rowCount == 1 && x.results[1].rows.isEmpty)
    }

    @Test func theFirstErrorNamesItsStatementAndTheRestIsRolledBack() {
        var x = exchange([
            QueryStatement(sql: "SELECT 1"), QueryStatement(sql: "DELETE FROM secret"), QueryStatement(sql: "SELECT 3"),
        ])
        begin(&x)
        x.receive(type: t("T"), body: rowDescription([("?column?", 23)]))
        x.receive(type: t("D"), body: dataRow(["1"]))
        x.receive(type: t("C"), body: tag("SELECT 1"))
        x.receive(type: t("E"), body: error("42501", "permission denied for table secret"))
        commit(&x, committed: false)  // PostgreSQL skipped to the Sync; the COMMIT rolls back
        reset(&x)
        #expect(x.isDone && x.resetDone)
        #expect(
            x.failure
                == QueryFailure(sqlState: "42501", message: "permission denied for table secret", statementIndex: 1))
    }

    @Test func rowsPastTheLimitAreCutAndMarked() {
        var x = exchange([QueryStatement(sql: "SELECT g FROM generate_series(1, 5) g")], maxRows: 2)
        x.receive(type: t("T"), body: rowDescription([("g", 23)]))
        for i in 1...3 { x.receive(type: t("D"), body: dataRow(["\(i)"])) }
        x.receive(type: t("s"), body: ByteBuffer())  // PortalSuspended after maxRows + 1
        x.receive(type: t("Z"), body: idle)
        reset(&x)
        #expect(x.results.first?.rows == [["1"], ["2"]])
        #expect(x.results.first?.truncated == true)
    }

    @Test func aFailedResetKeepsTheAnswerButNotTheConnection() {
        var x = exchange([QueryStatement(sql: "SELECT 1")])
        x.receive(type: t("T"), body: rowDescription([("?column?", 23)]))
        x.receive(type: t("D"), body: dataRow(["1"]))
        x.receive(type: t("C"), body: tag("SELECT 1"))
        x.receive(type: t("Z"), body: idle)
        x.receive(type: t("E"), body: error("XX000", "could not discard"))
        x.receive(type: t("Z"), body: idle)
        #expect(x.isDone && x.failure == nil && !x.resetDone)
        #expect(x.results.first?.rows == [["1"]])
    }
}
