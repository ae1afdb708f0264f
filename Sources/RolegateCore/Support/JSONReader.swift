/// A JSON value as a client wrote it. Numbers keep their literal text, so a 30-digit `numeric`
/// or a decimal fraction reaches PostgreSQL with every digit (a `Double` keeps about 17), and
/// objects keep their members in document order.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The number exactly as written (valid JSON number syntax: `-12`, `0.50`, `1e400`).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order, a repeated key included.
    case object([JSONMember])

    /// What the value is, for error messages ("expected a string, got an array").
    public var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

public struct JSONMember: Equatable, Sendable {
    public var key: String
    public var value: JSONValue

    public init(_ key: String, _ value: JSONValue) {
        self.key = key
        self.value = value
    }
}

/// Reads one JSON document (RFC 8259) strictly: no comments, trailing commas, single quotes,
/// leading zeros, `NaN`, lone UTF-16 surrogates, invalid UTF-8 or unescaped control
/// characters, and at most ``maxDepth`` nested arrays and objects (a body of 100,000 `[`s must
/// not exhaust the stack). A failure names the line, column and what was expected, so a
/// truncated or hand-typed body gets an answer a person can act on.
public enum JSONReader {
    public static let maxDepth = 128

    public struct Failure: Error, Equatable, CustomStringConvertible {
        /// Where the problem is, as a byte offset and as a 1-based line and column (in bytes).
        public var offset: Int
        public var line: Int
        public var column: Int
        public var problem: String

        public var description: String { "line \(line), column \(column): \(problem)" }
    }

    public static func read(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> JSONValue {
        var parser = Parser(bytes: bytes)
        return try parser.document()
    }

    public static func read(_ text: String) throws(Failure) -> JSONValue {
        var text = text
        return try text.withUTF8 { utf8 in
            Result { () throws(Failure) -> JSONValue in try read(UnsafeRawBufferPointer(utf8)) }
        }.get()
    }

    private struct Parser {
        let bytes: UnsafeRawBufferPointer
        var index = 0
        var depth = 0

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        mutating func document() throws(Failure) -> JSONValue {
            skipSpace()
            guard index < bytes.count else { throw failure("the document is empty: expected a JSON value") }
            let value = try value()
            skipSpace()
            guard index == bytes.count else { throw failure("unexpected \(found) after the JSON value") }
            return value
        }

        private mutating func value() throws(Failure) -> JSONValue {
            guard index < bytes.count else { throw endsEarly("expected a value") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object()
            case UInt8(ascii: "["): return try array()
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"):
                try literal("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try literal("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw failure("expected a value, found \(found)")
            }
        }

        private mutating func object() throws(Failure) -> JSONValue {
            try enter()
            var members: [JSONMember] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                leave()
                return .object(members)
            }
            while true {
                skipSpace()
                guard index < bytes.count else { throw endsEarly("expected a key in double quotes") }
                guard bytes[index] == UInt8(ascii: "\"") else {
                    if bytes[index] == UInt8(ascii: "}"), !members.isEmpty {
                        throw failure("a trailing comma before '}'")
                    }
                    throw failure("expected a key in double quotes, found \(found)")
                }
                let key = try string()
                skipSpace()
                guard index < bytes.count else { throw endsEarly("expected ':' after the key \(quoted(key))") }
                guard bytes[index] == UInt8(ascii: ":") else {
                    throw failure("expected ':' after the key \(quoted(key)), found \(found)")
                }
                index += 1
                skipSpace()
                members.append(JSONMember(key, try value()))
                skipSpace()
                guard index < bytes.count else {
                    throw endsEarly("expected ',' or '}' after the value of \(quoted(key))")
                }
                switch bytes[index] {
                case UInt8(ascii: ","):
                    index += 1
                case UInt8(ascii: "}"):
                    leave()
                    return .object(members)
                default:
                    throw failure("expected ',' or '}' after the value of \(quoted(key)), found \(found)")
                }
            }
        }

        private mutating func array() throws(Failure) -> JSONValue {
            try enter()
            var elements: [JSONValue] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                leave()
                return .array(elements)
            }
            while true {
                skipSpace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "]"), !elements.isEmpty {
                    throw failure("a trailing comma before ']'")
                }
                elements.append(try value())
                skipSpace()
                guard index < bytes.count else { throw endsEarly("expected ',' or ']' after an array element") }
                switch bytes[index] {
                case UInt8(ascii: ","):
                    index += 1
                case UInt8(ascii: "]"):
                    leave()
                    return .array(elements)
                default:
                    throw failure("expected ',' or ']' after an array element, found \(found)")
                }
            }
        }

        /// Steps over the opening bracket, counting the depth.
        private mutating func enter() throws(Failure) {
            depth += 1
            guard depth <= JSONReader.maxDepth else {
                throw failure("arrays and objects nested deeper than \(JSONReader.maxDepth) levels")
            }
            index += 1
        }

        /// Steps over the closing bracket.
        private mutating func leave() {
            depth -= 1
            index += 1
        }

        private mutating func string() throws(Failure) -> String {
            let start = index
            index += 1
            var run = index
            // Only a string with escapes is copied into a buffer (every escape adds at least a
            // byte to it); others are validated in place.
            var unescaped: [UInt8] = []
            while true {
                guard index < bytes.count else {
                    throw endsEarly("a string that starts at \(Self.position(of: start, in: bytes)) never ends")
                }
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let text: String?
                    if !unescaped.isEmpty {
                        unescaped.append(contentsOf: bytes[run..<index])
                        text = String(validating: unescaped, as: UTF8.self)
                    } else {
                        text = String(validating: UnsafeRawBufferPointer(rebasing: bytes[run..<index]), as: UTF8.self)
                    }
                    guard let text else {
                        throw Self.failure(
                            at: firstInvalidUTF8(from: start + 1), in: bytes, "a string that is not valid UTF-8")
                    }
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") {
                    unescaped.append(contentsOf: bytes[run..<index])
                    try escape(into: &unescaped)
                    run = index
                } else if byte < 0x20 {
                    throw failure("an unescaped control character (byte 0x\(Self.hex(byte))) inside a string")
                } else {
                    index += 1
                }
            }
        }

        /// Decodes the escape at `index` (a backslash) into `out` as UTF-8.
        private mutating func escape(into out: inout [UInt8]) throws(Failure) {
            let start = index
            index += 1
            guard index < bytes.count else { throw endsEarly("an escape ends early") }
            let letter = bytes[index]
            index += 1
            switch letter {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(letter)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var unit = try hex4()
                if (0xD800...0xDBFF).contains(unit) {
                    let lone = Self.failure(
                        at: start, in: bytes, "a lone UTF-16 surrogate \\u\(Self.hex(unit)) (no low surrogate after it)"
                    )
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                        bytes[index + 1] == UInt8(ascii: "u")
                    else { throw lone }
                    index += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw lone }
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(unit) {
                    throw Self.failure(
                        at: start, in: bytes,
                        "a lone UTF-16 surrogate \\u\(Self.hex(unit)) (no high surrogate before it)")
                }
                UTF8.encode(Unicode.Scalar(unit)!) { out.append($0) }
            default:
                index -= 1
                throw failure("an unknown escape '\\\(Self.printable(letter))' in a string")
            }
        }

        private mutating func hex4() throws(Failure) -> UInt32 {
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard index < bytes.count else { throw endsEarly("a \\u escape ends early") }
                let byte = bytes[index]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw failure("a \\u escape needs four hexadecimal digits, found \(found)")
                }
                value = value << 4 | UInt32(digit)
                index += 1
            }
            return value
        }

        private mutating func number() throws(Failure) -> String {
            let start = index
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard try digits(after: "'-'") else {
                throw failure("expected a digit after '-', found \(found)")
            }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
                if index < bytes.count, isDigit(bytes[index]) {
                    throw Self.failure(
                        at: start, in: bytes, "a number with a leading zero (JSON has no octal: write 1, not 01)")
                }
            } else {
                skipDigits()
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard try digits(after: "'.'") else { throw failure("expected a digit after '.', found \(found)") }
                skipDigits()
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                    index += 1
                }
                guard try digits(after: "the exponent's 'e'") else {
                    throw failure("expected a digit in the exponent, found \(found)")
                }
                skipDigits()
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        }

        /// Whether a digit is at `index`; throws when the document ends there.
        private func digits(after what: String) throws(Failure) -> Bool {
            guard index < bytes.count else { throw endsEarly("expected a digit after \(what)") }
            return isDigit(bytes[index])
        }

        private mutating func skipDigits() {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }

        private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

        private mutating func literal(_ word: StaticString) throws(Failure) {
            let start = index
            for expected in UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount) {
                guard index < bytes.count else { throw endsEarly("expected \(word)") }
                guard bytes[index] == expected else {
                    throw Self.failure(
                        at: start, in: bytes, "expected a value, found \(Self.snippet(bytes, from: start))")
                }
                index += 1
            }
        }

        private mutating func skipSpace() {
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): index += 1
                default: return
                }
            }
        }

        /// Where the bytes from `start` stop being UTF-8 (the start of the first bad sequence).
        private func firstInvalidUTF8(from start: Int) -> Int {
            var position = start
            while position < index {
                let lead = bytes[position]
                let length =
                    lead < 0x80
                    ? 1
                    : lead >= 0xC2 && lead <= 0xDF
                        ? 2
                        : lead >= 0xE0 && lead <= 0xEF
                            ? 3
                            : lead >= 0xF0 && lead <= 0xF4 ? 4 : 0
                guard length > 0, position + length <= index,
                    String(
                        validating: UnsafeRawBufferPointer(rebasing: bytes[position..<position + length]), as: UTF8.self
                    )
                        != nil
                else { return position }
                position += length
            }
            return start
        }

        // MARK: messages

        private var found: String {
            index < bytes.count ? Self.snippet(bytes, from: index) : "the end of the document"
        }

        private func failure(_ problem: String) -> Failure { Self.failure(at: index, in: bytes, problem) }

        private func endsEarly(_ expected: String) -> Failure {
            Self.failure(at: bytes.count, in: bytes, "the document ends early (truncated?): \(expected)")
        }

        private func quoted(_ key: String) -> String {
            "\"\(key.count > 40 ? String(key.prefix(40)) + "…" : key)\""
        }

        static func failure(at offset: Int, in bytes: UnsafeRawBufferPointer, _ problem: String) -> Failure {
            var line = 1
            var lineStart = 0
            for position in 0..<min(offset, bytes.count) where bytes[position] == UInt8(ascii: "\n") {
                line += 1
                lineStart = position + 1
            }
            return Failure(offset: offset, line: line, column: offset - lineStart + 1, problem: problem)
        }

        static func position(of offset: Int, in bytes: UnsafeRawBufferPointer) -> String {
            let at = failure(at: offset, in: bytes, "")
            return "line \(at.line), column \(at.column)"
        }

        /// The token at `offset` as a person would name it: `'x'`, `'tru'`, `byte 0x00`.
        static func snippet(_ bytes: UnsafeRawBufferPointer, from offset: Int) -> String {
            let byte = bytes[offset]
            guard byte >= 0x20, byte < 0x7F else {
                return byte < 0x20 || byte == 0x7F ? "a control character (byte 0x\(hex(byte)))" : "a non-ASCII byte"
            }
            var end = offset
            while end < bytes.count, end - offset < 12, isWordByte(bytes[end]) { end += 1 }
            if end == offset { end += 1 }
            return "'\(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<end]), as: UTF8.self))'"
        }

        private static func isWordByte(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }

        static func printable(_ byte: UInt8) -> String {
            byte >= 0x20 && byte < 0x7F ? String(UnicodeScalar(byte)) : "\\x\(hex(byte))"
        }

        static func hex(_ value: some BinaryInteger) -> String {
            let digits = String(value, radix: 16, uppercase: true)
            let width = value > 0xFF ? 4 : 2
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
    }
}

extension JSONValue {
    /// A whole number written with a fraction or an exponent (`1.0`, `1e3`, `-2.50E2`) as plain
    /// digits (`1`, `1000`, `-250`), so it fits an integer column as before; nil for any other
    /// number (it goes as written: exact for `numeric`, correctly rounded for `float8`) and for
    /// one that would have more than 40 digits.
    public static func integralDigits(_ literal: String) -> String? {
        guard
            literal.utf8.contains(where: {
                $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E")
            })
        else { return nil }
        let utf8 = Array(literal.utf8)
        var position = 0
        let negative = utf8.first == UInt8(ascii: "-")
        if negative { position += 1 }
        var mantissa: [UInt8] = []
        var fractionDigits = 0
        var inFraction = false
        while position < utf8.count, utf8[position] != UInt8(ascii: "e"), utf8[position] != UInt8(ascii: "E") {
            if utf8[position] == UInt8(ascii: ".") {
                inFraction = true
            } else {
                mantissa.append(utf8[position])
                if inFraction { fractionDigits += 1 }
            }
            position += 1
        }
        var exponent = 0
        if position < utf8.count {
            // Past 4 digits of exponent the number is far outside 40 digits or is a fraction.
            guard let value = Int(String(decoding: utf8[(position + 1)...], as: UTF8.self)),
                abs(value) < 10_000
            else { return nil }
            exponent = value
        }
        guard let firstNonZero = mantissa.firstIndex(where: { $0 != UInt8(ascii: "0") }) else { return "0" }
        var digits = Array(mantissa[firstNonZero...])
        let scale = exponent - fractionDigits
        if scale >= 0 {
            guard digits.count + scale <= 40 else { return nil }
            digits += repeatElement(UInt8(ascii: "0"), count: scale)
        } else {
            guard -scale < digits.count, digits.suffix(-scale).allSatisfy({ $0 == UInt8(ascii: "0") }) else {
                return nil
            }
            digits.removeLast(-scale)
        }
        return (negative ? "-" : "") + String(decoding: digits, as: UTF8.self)
    }
}

extension JSONWriter {
    /// `value` as compact JSON: numbers as written, members in their order.
    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: null()
        case .bool(let flag): bool(flag)
        case .number(let literal): verbatim(literal)
        case .string(let text): string(text)
        case .array(let elements): array(elements) { out, element in out.value(element) }
        case .object(let members):
            raw("{")
            for (position, member) in members.enumerated() {
                if position > 0 { raw(",") }
                string(member.key)
                raw(":")
                self.value(member.value)
            }
            raw("}")
        }
    }
}
