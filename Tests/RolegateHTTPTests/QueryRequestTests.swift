import Foundation
import NIOCore
import RolegateCore
import RolegateGateway
import RolegateTestSupport
import Testing

@testable import RolegateHTTP

@Suite(.ownThreads) struct QueryRequestTests {
    func parse(_ body: String, batch: Bool = false) -> Result<QueryRequest, QueryRequest.Invalid> {
        QueryRequest.parse(ByteBuffer(string: body), batch: batch)
    }

    func message(_ body: String, batch: Bool = false) -> String? {
        if case .failure(let invalid) = parse(body, batch: batch) { return invalid.message }
        return nil
    }

    /// Parameters reach PostgreSQL as the client wrote them: every digit of a number, whole
    /// numbers as digits, arrays and objects as compact JSON with their numbers and key order.
    @Test func parametersKeepEveryDigit() throws {
        let request = try parse(
            #"""
            {"sql": "SELECT $1", "params": [12345678901234567890123.000000000000000000001, 0.1000000000000000055511151231257827,
             1.0, 1e3, -2.50E2, 1E400, 7, -0, true, null, "text \"q\" é",
             {"z": 1.10, "a": [1e2, "x"], "z": 2}, []], "timeout_ms": 1500.0, "max_rows": 10, "database": null}
            """#
        ).get()
        #expect(
            request.statements == [
                QueryStatement(
                    sql: "SELECT $1",
                    parameters: [
                        "12345678901234567890123.000000000000000000001", "0.1000000000000000055511151231257827", "1",
                        "1000",
                        "-250", "1E400", "7", "-0", "true", nil, "text \"q\" é", #"{"z":1.10,"a":[1e2,"x"],"z":2}"#,
                        "[]",
                    ])
            ])
        #expect(request.timeoutMilliseconds == 1500 && request.maxRows == 10 && request.database == nil)
        let batch = try parse(
            #"{"statements": [{"sql": "SELECT 1"}, {"sql": "SELECT $1", "params": [2]}]}"#, batch: true
        )
        .get()
        #expect(
            batch.statements == [QueryStatement(sql: "SELECT 1"), QueryStatement(sql: "SELECT $1", parameters: ["2"])])
    }

    /// A body of the wrong shape is refused with a message that names the key and what it needs.
    @Test func wrongShapesAreNamed() {
        let cases: [(String, Bool, String)] = [
            (
                #"{"sql": "SELECT $1", "parmas": [1]}"#, false,
                #"unknown key "parmas" (expected sql, params, database, timeout_ms, max_rows)"#
            ),
            (#"{"statements": [{"sql": "SELECT 1"}]}"#, false, "several statements go to /v1/batch"),
            (
                #"{"sql": "SELECT 1"}"#, true,
                #"unknown key "sql" (expected statements, database, timeout_ms, max_rows); a batch takes"#
            ),
            (#"{"sql": "SELECT 1", "sql": "DROP TABLE t"}"#, false, #"the key "sql" appears twice"#),
            (#"{"params": [1]}"#, false, #"missing key "sql" (expected {"sql": "…", "params": […]})"#),
            (#"{"sql": null}"#, false, #"missing key "sql""#),
            (#"{"sql": 1}"#, false, #""sql" must be a string, got a number"#),
            (
                #"{"sql": "SELECT $1", "params": 1}"#, false,
                #""params" must be an array (the values of $1, $2, …), got a number"#
            ),
            (
                #"{"sql": "SELECT 1", "timeout_ms": 1.5}"#, false,
                #""timeout_ms" must be a whole number within 64 bits, got 1.5"#
            ),
            (
                #"{"sql": "SELECT 1", "timeout_ms": "100"}"#, false,
                #""timeout_ms" must be a whole number, got a string"#
            ),
            (
                #"{"sql": "SELECT 1", "max_rows": 1e30}"#, false,
                #""max_rows" must be a whole number within 64 bits, got 1e30"#
            ),
            (#"{"sql": "SELECT 1", "database": ["app"]}"#, false, #""database" must be a string, got an array"#),
            (
                #"[{"sql": "SELECT 1"}]"#, false,
                #"expected a JSON object like {"sql": "…", "params": […]}, got an array"#
            ),
            (#"{}"#, true, #"missing key "statements""#),
            (#"{"statements": []}"#, true, #""statements" is empty"#),
            (#"{"statements": {"sql": "SELECT 1"}}"#, true, #""statements" must be an array, got an object"#),
            (
                #"{"statements": ["SELECT 1"]}"#, true,
                #"statements[0] must be a JSON object like {"sql": "…"}, got a string"#
            ),
            (
                #"{"statements": [{"sql": "SELECT 1"}, {"sql": "SELECT 2", "param": []}]}"#, true,
                #"unknown key "statements[1].param" (expected sql, params)"#
            ),
            (#"{"statements": [{"sql": "SELECT 1"}, {}]}"#, true, #"missing key "statements[1].sql""#),
            (
                #"{"sql": "SELECT 1""#, false,
                "the body is not valid JSON: line 1, column 19: the document ends early (truncated?)"
            ),
            (
                #"{"sql": "SELECT 1", "params": [1,]}"#, false,
                "the body is not valid JSON: line 1, column 34: a trailing comma before ']'"
            ),
        ]
        for (body, batch, expected) in cases {
            let found = message(body, batch: batch)
            #expect(found?.contains(expected) == true, "\(body): \(found ?? "accepted")")
        }
    }
}
