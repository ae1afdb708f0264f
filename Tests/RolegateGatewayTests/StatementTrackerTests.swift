import NIOCore
import PostgresWire
import RolegateTestSupport
import Testing

@testable import RolegateGateway

/// The audit's view of a session, from the messages both sides send.
@Suite(.ownThreads) struct StatementTrackerTests {
    func body(_ build: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var buffer = ByteBuffer()
        build(&buffer)
        return buffer
    }

    func query(_ sql: String) -> ByteBuffer { body { $0.writeNullTerminatedString(sql) } }
    func parse(_ name: String, _ sql: String) -> ByteBuffer {
        body {
            $0.writeNullTerminatedString(name)
            $0.writeNullTerminatedString(sql)
            $0.writeInteger(Int16(0))
        }
    }
    func bind(_ portal: String, _ statement: String, _ values: [String?], binary: Bool = false) -> ByteBuffer {
        body {
            $0.writeNullTerminatedString(portal)
            $0.writeNullTerminatedString(statement)
            $0.writeInteger(Int16(1))
            $0.writeInteger(Int16(binary ? 1 : 0))
            $0.writeInteger(Int16(values.count))
            for value in values {
                if let value {
                    $0.writeInteger(Int32(value.utf8.count))
                    $0.writeString(value)
                } else {
                    $0.writeInteger(Int32(-1))
                }
            }
            $0.writeInteger(Int16(0))
        }
    }
    func execute(_ portal: String) -> ByteBuffer {
        body {
            $0.writeNullTerminatedString(portal)
            $0.writeInteger(Int32(0))
        }
    }
    func tag(_ text: String) -> ByteBuffer { body { $0.writeNullTerminatedString(text) } }
    func error(_ code: String) -> ByteBuffer {
        body {
            $0.writeInteger(UInt8(ascii: "S"))
            $0.writeNullTerminatedString("ERROR")
            $0.writeInteger(UInt8(ascii: "C"))
            $0.writeNullTerminatedString(code)
            $0.writeInteger(UInt8(0))
        }
    }
    let idle = ByteBuffer(bytes: [UInt8(ascii: "I")])
    let empty = ByteBuffer()

    func t(_ c: Character) -> UInt8 { UInt8(ascii: c.unicodeScalars.first!) }

    @Test func aSimpleQueryIsOneStatementWithItsTagsAndRows() {
        var tracker = StatementTracker(captureParameters: false)
        tracker.client(type: t("Q"), body: query("INSERT INTO t VALUES (1); SELECT * FROM t"), now: 100)
        #expect(tracker.server(type: t("C"), body: tag("INSERT 0 1"), now: 200).isEmpty)
        #expect(tracker.server(type: t("C"), body: tag("SELECT 4"), now: 300).isEmpty)
        let done = tracker.server(type: t("Z"), body: idle, now: 400)
        #expect(done.count == 1)
        #expect(done[0].sql == "INSERT INTO t VALUES (1); SELECT * FROM t")
        #expect(done[0].command == "INSERT 0 1; SELECT 4")
        #expect(done[0].rows == 5)
        #expect(done[0].sqlState == nil)
        #expect(done[0].finishedAt - done[0].startedAt == 300)
        #expect(tracker.count == 1)
    }

    func functionCall(oid: UInt32, _ arguments: [String]) -> ByteBuffer {
        body {
            $0.writeInteger(oid)
            $0.writeInteger(Int16(1))
            $0.writeInteger(Int16(0))
            $0.writeInteger(Int16(arguments.count))
            for argument in arguments {
                $0.writeInteger(Int32(argument.utf8.count))
                $0.writeString(argument)
            }
            $0.writeInteger(Int16(0))
        }
    }

    /// A FunctionCall is a statement: recorded with its function (by name when built in), its
    /// arguments only when parameters are captured, its error; and pipelined between queries it
    /// does not throw the pairing of answers to statements off.
    @Test func aFunctionCallIsOneStatementAndKeepsThePipelinePaired() {
        var tracker = StatementTracker(captureParameters: true)
        tracker.client(type: t("Q"), body: query("SELECT 1"), now: 10)
        tracker.client(type: t("F"), body: functionCall(oid: 952, ["16385", "131072"]), now: 20)
        tracker.client(type: t("F"), body: functionCall(oid: 99_999, []), now: 30)
        tracker.client(type: t("Q"), body: query("SELECT 2"), now: 40)
        #expect(tracker.count == 4)
        var done: [StatementTracker.Statement] = []
        for (type, message) in [
            (t("C"), tag("SELECT 1")), (t("Z"), idle),
            (
                t("V"),
                body {
                    $0.writeInteger(Int32(4)); $0.writeInteger(Int32(0))
                }
            ), (t("Z"), idle),
            (t("E"), error("42883")), (t("Z"), idle),
            (t("C"), tag("SELECT 1")), (t("Z"), idle),
        ] {
            done += tracker.server(type: type, body: message, now: 100)
        }
        #expect(done.map(\.sql) == ["SELECT 1", nil, nil, "SELECT 2"])
        #expect(done[1].function == .init(oid: 952) && done[1].function?.name == "lo_open")
        #expect(done[1].parameters == ["16385", "131072"] && done[1].sqlState == nil)
        #expect(done[2].function?.oid == 99_999 && done[2].function?.name == nil && done[2].sqlState == "42883")
        #expect(done[3].sqlState == nil && done[3].rows == 1)

        var quiet = StatementTracker(captureParameters: false)
        quiet.client(type: t("F"), body: functionCall(oid: 2026, ["secret-argument"]), now: 0)
        _ = quiet.server(type: t("V"), body: empty, now: 1)
        let call = quiet.server(type: t("Z"), body: idle, now: 2)
        #expect(call.count == 1 && call[0].parameters == nil && call[0].function?.name == "pg_backend_pid")
    }

    @Test func aFailedSimpleQueryCarriesItsSQLState() {
        var tracker = StatementTracker(captureParameters: false)
        tracker.client(type: t("Q"), body: query("SELECT * FROM secret"), now: 0)
        _ = tracker.server(type: t("E"), body: error("42501"), now: 1)
        let done = tracker.server(type: t("Z"), body: idle, now: 2)
        #expect(done.first?.sqlState == "42501")
    }

    @Test func extendedExecutionsCarryTheirParsedSQLAndSkippedOnesAreMarked() {
        var tracker = StatementTracker(captureParameters: true)
        tracker.client(type: t("P"), body: parse("s1", "SELECT $1::int"), now: 0)
        tracker.client(type: t("B"), body: bind("", "s1", ["7"]), now: 0)
        tracker.client(type: t("E"), body: execute(""), now: 0)
        tracker.client(type: t("P"), body: parse("", "SELECT 1/$1"), now: 0)
        tracker.client(type: t("B"), body: bind("", "", ["0"]), now: 0)
        tracker.client(type: t("E"), body: execute(""), now: 0)
        tracker.client(type: t("B"), body: bind("", "s1", [nil]), now: 0)
        tracker.client(type: t("E"), body: execute(""), now: 0)
        tracker.client(type: t("S"), body: empty, now: 0)
        let first = tracker.server(type: t("C"), body: tag("SELECT 1"), now: 5)
        #expect(first.map(\.sql) == ["SELECT $1::int"])
        #expect(first[0].parameters == ["7"])
        #expect(first[0].preparedName == "s1")
        #expect(first[0].rows == 1)
        let failed = tracker.server(type: t("E"), body: error("22012"), now: 6)
        #expect(failed.count == 2)
        #expect(failed[0].sql == "SELECT 1/$1" && failed[0].sqlState == "22012" && failed[0].executed)
        #expect(failed[1].sql == "SELECT $1::int" && !failed[1].executed && failed[1].parameters == ["NULL"])
        #expect(tracker.server(type: t("Z"), body: idle, now: 7).isEmpty)
        #expect(tracker.count == 3)
        // The tracker is back in step: the next simple query lines up.
        tracker.client(type: t("Q"), body: query("SELECT 2"), now: 8)
        _ = tracker.server(type: t("C"), body: tag("SELECT 1"), now: 9)
        #expect(tracker.server(type: t("Z"), body: idle, now: 10).map(\.sql) == ["SELECT 2"])
    }

    /// The unnamed statement and portal are kept apart from named ones, and Close forgets each.
    @Test func namedAndUnnamedStatementsAndPortalsStayApartUntilClosed() {
        func close(_ kind: Character, _ name: String) -> ByteBuffer {
            body {
                $0.writeInteger(UInt8(ascii: kind.unicodeScalars.first!))
                $0.writeNullTerminatedString(name)
            }
        }
        var tracker = StatementTracker(captureParameters: false)
        tracker.client(type: t("P"), body: parse("", "SELECT 'unnamed'"), now: 0)
        tracker.client(type: t("P"), body: parse("s1", "SELECT 'named'"), now: 0)
        tracker.client(type: t("B"), body: bind("p1", "s1", []), now: 0)
        tracker.client(type: t("B"), body: bind("", "", []), now: 0)
        tracker.client(type: t("E"), body: execute("p1"), now: 0)
        tracker.client(type: t("E"), body: execute(""), now: 0)
        tracker.client(type: t("C"), body: close("S", ""), now: 0)
        tracker.client(type: t("C"), body: close("P", "p1"), now: 0)
        tracker.client(type: t("B"), body: bind("", "", []), now: 0)
        tracker.client(type: t("E"), body: execute(""), now: 0)
        tracker.client(type: t("E"), body: execute("p1"), now: 0)
        tracker.client(type: t("B"), body: bind("", "s1", []), now: 0)
        tracker.client(type: t("E"), body: execute(""), now: 0)
        tracker.client(type: t("S"), body: empty, now: 0)
        var sql: [String?] = []
        for _ in 0..<5 { sql += tracker.server(type: t("C"), body: tag("SELECT 1"), now: 1).map(\.sql) }
        #expect(sql == ["SELECT 'named'", "SELECT 'unnamed'", nil, nil, "SELECT 'named'"])
    }

    /// The detail reused from one statement event to the next always matches the statement.
    @Test func aStatementsDetailFollowsItsCommandAndPreparedName() {
        var memo = StatementDetail()
        let calls: [(String?, String?, [String: String])] = [
            (nil, nil, [:]),
            ("SELECT 1", nil, ["command": "SELECT 1"]),
            ("SELECT 1", nil, ["command": "SELECT 1"]),
            ("SELECT 1", "P0_1", ["command": "SELECT 1", "prepared": "P0_1"]),
            ("SELECT 1", "", ["command": "SELECT 1"]),
            ("INSERT 0 1", "", ["command": "INSERT 0 1"]),
            (nil, "P0_1", ["prepared": "P0_1"]),
            (nil, nil, [:]),
        ]
        for (command, prepared, expected) in calls {
            #expect(
                memo.detail(command: command, prepared: prepared) == expected, "\(command ?? "-") \(prepared ?? "-")")
        }
    }

    @Test func aParseErrorWithoutExecuteIsStillRecorded() {
        var tracker = StatementTracker(captureParameters: false)
        tracker.client(type: t("P"), body: parse("bad", "SELEC 1"), now: 0)
        tracker.client(type: t("S"), body: empty, now: 0)
        let failed = tracker.server(type: t("E"), body: error("42601"), now: 1)
        #expect(failed.map(\.sql) == ["SELEC 1"])
        #expect(failed.first?.sqlState == "42601")
    }

    @Test func parametersAreOnlyCapturedWhenAskedAndBinaryIsHex() {
        var off = StatementTracker(captureParameters: false)
        off.client(type: t("P"), body: parse("", "SELECT $1"), now: 0)
        off.client(type: t("B"), body: bind("", "", ["secret"]), now: 0)
        off.client(type: t("E"), body: execute(""), now: 0)
        #expect(off.server(type: t("C"), body: tag("SELECT 1"), now: 1).first?.parameters == nil)
        var on = StatementTracker(captureParameters: true)
        on.client(type: t("P"), body: parse("", "SELECT $1"), now: 0)
        on.client(type: t("B"), body: bind("", "", ["AB"], binary: true), now: 0)
        on.client(type: t("E"), body: execute(""), now: 0)
        #expect(on.server(type: t("C"), body: tag("SELECT 1"), now: 1).first?.parameters == ["\\x4142"])
    }

    @Test func hugeStatementsAreCut() {
        var tracker = StatementTracker(captureParameters: false)
        tracker.client(type: t("Q"), body: query(String(repeating: "x", count: 100_000)), now: 0)
        let sql = tracker.server(type: t("Z"), body: idle, now: 1).first?.sql ?? ""
        #expect(sql.hasSuffix("… (100000 bytes)"))
        #expect(sql.utf8.count < 70_000)
    }

    @Test func rowCountsComeFromTheTagsThatCarryThem() {
        #expect(StatementTracker.rows("SELECT 3") == 3)
        #expect(StatementTracker.rows("INSERT 0 12") == 12)
        #expect(StatementTracker.rows("UPDATE 0") == 0)
        #expect(StatementTracker.rows("COPY 9223372036854775807") == Int64.max)
        #expect(StatementTracker.rows("COPY 9223372036854775808") == nil)
        #expect(StatementTracker.rows("SELECT") == nil)
        #expect(StatementTracker.rows("SELECT ") == nil)
        #expect(StatementTracker.rows("CREATE TABLE") == nil)
        #expect(StatementTracker.rows("SET 5") == nil)
        #expect(StatementTracker.rows("SELECTED 5") == nil)
        #expect(StatementTracker.rows("DELETE x1") == nil)
        #expect(StatementTracker.rows("") == nil)
    }
}

extension StatementTrackerTests {
    /// A session that ends with statements unanswered (a kill, a revocation) still has them in the
    /// audit log, in order, marked interrupted: the server may have run them.
    @Test func statementsUnansweredAtTheEndAreReportedInterrupted() {
        var tracker = StatementTracker(captureParameters: false)
        tracker.client(type: t("Q"), body: query("SELECT 1"), now: 10)
        _ = tracker.server(type: t("C"), body: tag("SELECT 1"), now: 20)
        #expect(tracker.server(type: t("Z"), body: idle, now: 30).count == 1)
        tracker.client(type: t("P"), body: parse("", "UPDATE t SET x = 1"), now: 40)
        tracker.client(type: t("B"), body: bind("", "", []), now: 40)
        tracker.client(type: t("E"), body: execute(""), now: 40)
        tracker.client(type: t("S"), body: ByteBuffer(), now: 40)
        tracker.client(type: t("Q"), body: query("DROP TABLE t"), now: 50)
        var interrupted: [StatementTracker.Statement] = []
        tracker.interrupted(now: 90) { interrupted.append($0) }
        #expect(interrupted.map(\.sql) == ["UPDATE t SET x = 1", "DROP TABLE t"])
        #expect(interrupted.allSatisfy { $0.interrupted && $0.finishedAt == 90 })
        var again: [StatementTracker.Statement] = []
        tracker.interrupted(now: 100) { again.append($0) }
        #expect(again.isEmpty, "each is reported once")
    }
}
