import Foundation
import NIOCore
import RolegateCore

/// A request body's object read strictly: an unknown or repeated key, or a value of the wrong
/// type, is refused with a message that names it (a misspelt `"tll"` must not issue a token
/// with the default lifetime, nor `"parmas"` run a statement without its parameters). Keys
/// come from a short list, so they are found without hashing; `null` counts as absent.
struct JSONFields {
    struct Invalid: Error, Equatable {
        var message: String
    }

    let allowed: [String]
    /// Prefixed to keys in messages (`statements[1].`).
    let path: String
    private var values: [JSONValue?]

    /// Reads `body`'s readable bytes as one JSON document, in place.
    static func document(_ body: ByteBuffer) -> Result<JSONValue, Invalid> {
        body.withUnsafeReadableBytes { document(bytes: $0) }
    }

    private static func document(bytes: UnsafeRawBufferPointer) -> Result<JSONValue, Invalid> {
        Result { () throws(JSONReader.Failure) -> JSONValue in try JSONReader.read(bytes) }
            .mapError { Invalid(message: "the body is not valid JSON: \($0)") }
    }

    /// The fields of `value`, which must be an object like `shape` (named when it is not).
    init(
        _ value: JSONValue, allowed: [String], shape: @autoclosure () -> String, at path: String = "",
        hint: (String) -> String = { _ in "" }
    ) throws(Invalid) {
        guard case .object(let members) = value else {
            throw Invalid(
                message:
                    "\(path.isEmpty ? "expected" : "\(path.dropLast()) must be") a JSON object like \(shape()), got \(value.kind)"
            )
        }
        self.allowed = allowed
        self.path = path
        values = Array(repeating: nil, count: allowed.count)
        for member in members {
            guard let slot = allowed.firstIndex(of: member.key) else {
                throw Invalid(
                    message:
                        "unknown key \"\(path)\(member.key)\" (expected \(allowed.joined(separator: ", ")))\(hint(member.key))"
                )
            }
            guard values[slot] == nil else { throw Invalid(message: "the key \"\(path)\(member.key)\" appears twice") }
            values[slot] = member.value
        }
    }

    subscript(key: String) -> JSONValue? {
        guard let slot = allowed.firstIndex(of: key), let value = values[slot], value != .null else { return nil }
        return value
    }

    func string(_ key: String) throws(Invalid) -> String? {
        guard let value = self[key] else { return nil }
        guard case .string(let text) = value else {
            throw Invalid(message: "\"\(path)\(key)\" must be a string, got \(value.kind)")
        }
        return text
    }

    func requiredString(_ key: String, shape: @autoclosure () -> String) throws(Invalid) -> String {
        guard let text = try string(key) else {
            throw Invalid(message: "missing key \"\(path)\(key)\" (expected \(shape()))")
        }
        return text
    }

    func integer(_ key: String) throws(Invalid) -> Int64? {
        guard let value = self[key] else { return nil }
        guard case .number(let literal) = value else {
            throw Invalid(message: "\"\(path)\(key)\" must be a whole number, got \(value.kind)")
        }
        guard let number = Int64(JSONValue.integralDigits(literal) ?? literal) else {
            throw Invalid(message: "\"\(path)\(key)\" must be a whole number within 64 bits, got \(literal)")
        }
        return number
    }
}
