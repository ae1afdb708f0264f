import Foundation
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

    struct Invalid: Error, Equatable {
        var message: String
    }

    static let queryKeys = ["sql", "params", "database", "timeout_ms", "max_rows"]
    static let batchKeys = ["statements", "database", "timeout_ms", "max_rows"]

    /// Reads the body's bytes: malformed JSON and a body of the wrong shape both come back as
    /// one message for a `400`.
    static func parse(_ body: Data, batch: Bool) -> Result<QueryRequest, Invalid> {
        let document = body.withUnsafeBytes { bytes in
            Result { () throws(JSONReader.Failure) -> JSONValue in try JSONReader.read(bytes) }
        }
        switch document {
        case .failure(let failure): return .failure(Invalid(message: "the body is not valid JSON: \(failure)"))
        case .success(let value): return Result { () throws(Invalid) in try QueryRequest(value, batch: batch) }
        }
    }

    init(_ document: JSONValue, batch: Bool) throws(Invalid) {
        var shape: String {
            batch ? "{\"statements\": [{\"sql\": \"…\", \"params\": […]}, …]}" : "{\"sql\": \"…\", \"params\": […]}"
        }
        guard case .object(let members) = document else {
            throw Invalid(message: "expected a JSON object like \(shape), got \(document.kind)")
        }
        let fields = try Self.fields(members, allowed: batch ? Self.batchKeys : Self.queryKeys, at: "") { key in
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
                let path = "statements[\(index)]."
                guard case .object(let members) = item else {
                    throw Invalid(
                        message: "statements[\(index)] must be an object like {\"sql\": \"…\"}, got \(item.kind)")
                }
                let statement = try Self.fields(members, allowed: ["sql", "params"], at: path) { _ in "" }
                statements.append(try Self.statement(statement, at: path))
            }
        } else {
            guard fields["sql"] != nil else { throw Invalid(message: "missing key \"sql\" (expected \(shape))") }
            statements = [try Self.statement(fields, at: "")]
        }
        database = try Self.string(fields["database"], "database")
        timeoutMilliseconds = try Self.integer(fields["timeout_ms"], "timeout_ms")
        maxRows = try Self.integer(fields["max_rows"], "max_rows").map { Int(clamping: $0) }
    }

    /// An object's members by key, for keys from a short list (no hashing); `null` counts as absent.
    struct Fields {
        let allowed: [String]
        var values: [JSONValue?]

        subscript(key: String) -> JSONValue? {
            guard let slot = allowed.firstIndex(of: key), case let value? = values[slot], value != .null else {
                return nil
            }
            return value
        }
    }

    /// The members of an object, refusing unknown and repeated keys.
    private static func fields(
        _ members: [JSONMember], allowed: [String], at path: String, hint: (String) -> String
    ) throws(Invalid) -> Fields {
        var fields = Fields(allowed: allowed, values: Array(repeating: nil, count: allowed.count))
        for member in members {
            guard let slot = allowed.firstIndex(of: member.key) else {
                throw Invalid(
                    message:
                        "unknown key \"\(path)\(member.key)\" (expected \(allowed.joined(separator: ", ")))\(hint(member.key))"
                )
            }
            guard fields.values[slot] == nil else {
                throw Invalid(message: "the key \"\(path)\(member.key)\" appears twice")
            }
            fields.values[slot] = member.value
        }
        return fields
    }

    private static func statement(_ fields: Fields, at path: String) throws(Invalid) -> QueryStatement {
        guard let sql = try string(fields["sql"], path + "sql") else {
            throw Invalid(message: "missing key \"\(path)sql\"")
        }
        var parameters: [String?] = []
        if let params = fields["params"] {
            guard case .array(let values) = params else {
                throw Invalid(
                    message: "\"\(path)params\" must be an array (the values of $1, $2, …), got \(params.kind)")
            }
            parameters = values.map(\.parameterText)
        }
        return QueryStatement(sql: sql, parameters: parameters)
    }

    private static func string(_ value: JSONValue?, _ name: String) throws(Invalid) -> String? {
        guard let value else { return nil }
        guard case .string(let text) = value else {
            throw Invalid(message: "\"\(name)\" must be a string, got \(value.kind)")
        }
        return text
    }

    private static func integer(_ value: JSONValue?, _ name: String) throws(Invalid) -> Int64? {
        guard let value else { return nil }
        guard case .number(let literal) = value else {
            throw Invalid(message: "\"\(name)\" must be a whole number, got \(value.kind)")
        }
        guard let number = Int64(JSONValue.integralDigits(literal) ?? literal) else {
            throw Invalid(message: "\"\(name)\" must be a whole number within 64 bits, got \(literal)")
        }
        return number
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
