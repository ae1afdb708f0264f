import Foundation
import NIOCore
import RolegateCore
import RolegateGateway

/// The body of `POST /v1/query` or `POST /v1/batch`, read strictly: an unknown or repeated
/// key, or a value of the wrong type, is refused with a message that names it. A misspelt
/// `"parmas"` must not run the statement without its parameters, and a number must reach
/// PostgreSQL with every digit the client wrote.
struct QueryRequest {
    var statements: [QueryStatement]
    var database: String?
    var timeoutMilliseconds: Int64?
    var maxRows: Int?

    typealias Invalid = JSONFields.Invalid

    static let queryKeys = ["sql", "params", "database", "timeout_ms", "max_rows"]
    static let batchKeys = ["statements", "database", "timeout_ms", "max_rows"]

    /// Reads the body's bytes: malformed JSON and a body of the wrong shape both come back as
    /// one message for a `400`.
    static func parse(_ body: ByteBuffer, batch: Bool) -> Result<QueryRequest, Invalid> {
        JSONFields.document(body).flatMap { value in
            Result { () throws(Invalid) in try QueryRequest(value, batch: batch) }
        }
    }

    init(_ document: JSONValue, batch: Bool) throws(Invalid) {
        var shape: String {
            batch ? "{\"statements\": [{\"sql\": \"…\", \"params\": […]}, …]}" : "{\"sql\": \"…\", \"params\": […]}"
        }
        let fields = try JSONFields(document, allowed: batch ? Self.batchKeys : Self.queryKeys, shape: shape) { key in
            switch (key, batch) {
            case ("statements", false): "; several statements go to /v1/batch"
            case ("sql", true), ("params", true): "; a batch takes {\"statements\": [{\"sql\": …, \"params\": …}]}"
            default: ""
            }
        }
        if batch {
            guard let list = fields["statements"] else {
                throw Invalid(message: "missing key \"statements\" (expected \(shape))")
            }
            guard case .array(let items) = list else {
                throw Invalid(message: "\"statements\" must be an array, got \(list.kind)")
            }
            guard !items.isEmpty else { throw Invalid(message: "\"statements\" is empty: a batch needs a statement") }
            statements = []
            for (index, item) in items.enumerated() {
                let statement = try JSONFields(
                    item, allowed: ["sql", "params"], shape: "{\"sql\": \"…\"}", at: "statements[\(index)].")
                statements.append(try Self.statement(statement))
            }
        } else {
            statements = [try Self.statement(fields)]
        }
        database = try fields.string("database")
        timeoutMilliseconds = try fields.integer("timeout_ms")
        maxRows = try fields.integer("max_rows").map { Int(clamping: $0) }
    }

    private static func statement(_ fields: JSONFields) throws(Invalid) -> QueryStatement {
        let sql = try fields.requiredString("sql", shape: "{\"sql\": \"…\", \"params\": […]}")
        var parameters: [String?] = []
        if let params = fields["params"] {
            guard case .array(let values) = params else {
                throw Invalid(
                    message: "\"\(fields.path)params\" must be an array (the values of $1, $2, …), got \(params.kind)")
            }
            parameters = values.map(\.parameterText)
        }
        return QueryStatement(sql: sql, parameters: parameters)
    }
}

extension JSONValue {
    /// As a statement parameter, in PostgreSQL's text form (nil for NULL). A number goes as the
    /// client wrote it, whole numbers as plain digits (``integralDigits(_:)``); arrays and objects
    /// as compact JSON text with their numbers and member order kept.
    var parameterText: String? {
        switch self {
        case .null: nil
        case .bool(let value): value ? "true" : "false"
        case .number(let literal): Self.integralDigits(literal) ?? literal
        case .string(let value): value
        case .array, .object:
            { () -> String in
                var out = JSONWriter(capacity: 64)
                out.value(self)
                return String(decoding: out.bytes, as: UTF8.self)
            }()
        }
    }
}
