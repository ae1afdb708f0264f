import RolegateTestSupport
import Testing

@testable import RolegateCore

@Suite(.ownThreads) struct GrantTargetTests {
    @Test(arguments: [
        ("DATABASE", GrantTarget.database),
        ("schema Billing", .schema("billing")),
        ("SCHEMA \"Billing\"", .schema("Billing")),
        ("TABLE billing.invoices", .table(schema: "billing", name: "invoices")),
        ("table invoices", .table(schema: "public", name: "invoices")),
        ("TABLE \"a.b\".\"c\"\"d\"", .table(schema: "a.b", name: "c\"d")),
        ("All Tables In Schema public", .allTablesInSchema("public")),
        ("SEQUENCE billing.invoices_id_seq", .sequence(schema: "billing", name: "invoices_id_seq")),
        ("ALL SEQUENCES IN SCHEMA s", .allSequencesInSchema("s")),
        ("FUNCTION billing.close_month(date)", .function(schema: "billing", name: "close_month", arguments: "date")),
        ("FUNCTION f( )", .function(schema: "public", name: "f", arguments: "")),
        ("FUNCTION s.f(numeric(10,2), text)", .function(schema: "s", name: "f", arguments: "numeric(10,2), text")),
        ("ALL FUNCTIONS IN SCHEMA s", .allFunctionsInSchema("s")),
    ])
    func parses(text: String, expected: GrantTarget) throws {
        #expect(try GrantTarget.parse(text) == expected)
    }

    @Test(arguments: [
        ("VIEW v", "unknown object type 'VIEW'"),
        ("TABLE", "expected a table name"),
        ("TABLE a.b.c", "unexpected text"),
        ("TABLE \"unterminated", "unterminated quoted"),
        ("FUNCTION s.f", "needs its argument types"),
        ("FUNCTION s.f(date", "missing ')'"),
        ("FUNCTION s.f(date; DROP TABLE t)", "';' is not allowed"),
        ("ALL VIEWS IN SCHEMA s", "expected ALL TABLES"),
        ("TABLE t; DROP TABLE x", "unexpected text"),
        ("", "expected one of"),
    ])
    func refuses(text: String, message: String) {
        #expect {
            try GrantTarget.parse(text)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test func descriptionQuotesEverything() throws {
        #expect(try GrantTarget.parse("TABLE \"My\"\"T\".x").description == "TABLE \"My\"\"T\".\"x\"")
    }
}

@Suite(.ownThreads) struct DurationTests {
    @Test(arguments: [
        ("30s", 30_000), ("15m", 900_000), ("1h30m", 5_400_000), ("7d", 604_800_000), ("250ms", 250),
    ])
    func parses(text: String, milliseconds: Int64) throws {
        #expect(try DurationText.parse(text) == .milliseconds(milliseconds))
    }

    @Test(arguments: ["", "15", "m", "1x", "1h 2", "-5m", "99999999999999999999d", "1.5h"])
    func refuses(text: String) {
        #expect(throws: DurationText.ParseError.self) { try DurationText.parse(text) }
    }

    @Test func formats() {
        #expect(DurationText.format(.seconds(5400)) == "1h30m")
        #expect(DurationText.format(.milliseconds(250)) == "250ms")
        #expect(DurationText.format(.zero) == "0s")
    }
}

@Suite(.ownThreads) struct SQLQuoteTests {
    @Test func identifiers() {
        #expect(SQLQuote.ident("a") == "\"a\"")
        #expect(SQLQuote.ident("a\"b") == "\"a\"\"b\"")
        #expect(SQLQuote.qualified("s", "t\"") == "\"s\".\"t\"\"\"")
    }

    @Test func literals() {
        #expect(SQLQuote.literal("it's") == "'it''s'")
        #expect(SQLQuote.literal("a\\b") == "E'a\\\\b'")
        #expect(SQLQuote.literal("line\nnext") == "E'line\\nnext'")
        #expect(SQLQuote.literal("x\u{1}") == "E'x\\u0001'")
    }
}

@Suite(.ownThreads) struct ConnectionURLTests {
    @Test func parsesAndRedacts() throws {
        let url = try ConnectionURL(parsing: "postgresql://ad%40min:p%2Fw@db.example:6543/my%20db?sslmode=require")
        #expect(url.user == "ad@min")
        #expect(url.password == "p/w")
        #expect(url.host == "db.example")
        #expect(url.port == 6543)
        #expect(url.database == "my db")
        #expect(url.sslMode == .require)
        #expect(ConnectionURL.redact("postgres://u:secret@h/d") == "postgres://u:***@h/d")
        #expect(!url.displayName.contains("p/w"))
    }

    @Test func defaultsAndErrors() throws {
        let url = try ConnectionURL(parsing: "postgres://u@h")
        #expect(url.port == 5432)
        #expect(url.database == "u")
        #expect(url.sslMode == .prefer)
        #expect(throws: ConnectionURL.ParseError.self) { try ConnectionURL(parsing: "postgres://h/d") }
        #expect(throws: ConnectionURL.ParseError.self) { try ConnectionURL(parsing: "postgres://u@h/d?sslmode=bogus") }
        #expect(throws: ConnectionURL.ParseError.self) { try ConnectionURL(parsing: "postgres://u@h/d?frobnicate=1") }
    }
}
