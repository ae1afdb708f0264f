import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

@Suite(.ownThreads) struct JSONReaderTests {
    func read(_ text: String) throws(JSONReader.Failure) -> JSONValue { try JSONReader.read(text) }

    func failure(_ text: String) -> JSONReader.Failure? {
        do {
            _ = try read(text)
            return nil
        } catch {
            return error
        }
    }

    func failure(bytes: [UInt8]) -> JSONReader.Failure? {
        bytes.withUnsafeBytes { raw -> JSONReader.Failure? in
            do throws(JSONReader.Failure) {
                _ = try JSONReader.read(raw)
                return nil
            } catch {
                return error
            }
        }
    }

    /// Every kind of value, with the numbers' text and the members' order kept as written.
    @Test func valuesReadAsWritten() throws {
        let document = try read(
            """
             {"sql": "SELECT $1", "params": [12345678901234567890123.45, -0.0, 1E400, true, false, null,
              "tab\\there \\"q\\" \\\\ \\/ \\b\\f\\n\\r \\u00e9\\u2603\\ud83d\\ude00"],
              "z": {}, "a": [], "a": [[]]}\r\n
            """)
        let expected: JSONValue = .object([
            JSONMember("sql", .string("SELECT $1")),
            JSONMember(
                "params",
                .array([
                    .number("12345678901234567890123.45"), .number("-0.0"), .number("1E400"), .bool(true),
                    .bool(false), .null, .string("tab\there \"q\" \\ / \u{8}\u{c}\n\r é☃😀"),
                ])),
            JSONMember("z", .object([])), JSONMember("a", .array([])), JSONMember("a", .array([.array([])])),
        ])
        #expect(document == expected)
        #expect(try read("0") == .number("0"))
        #expect(try read(" \"\" ") == .string(""))
        #expect(try read("\"naïve ☃ 😀\"") == .string("naïve ☃ 😀"))
    }

    /// Each mistake is named, with the line and column where it is.
    @Test func mistakesAreNamedWhereTheyAre() {
        let cases: [(String, String, Int, Int)] = [
            ("", "the document is empty", 1, 1),
            ("{\"sql\": ", "ends early (truncated?): expected a value", 1, 9),
            ("{\"sql\": \"SELECT 1", "a string that starts at line 1, column 9 never ends", 1, 18),
            ("{\"sql\": \"x\"", "expected ',' or '}' after the value of \"sql\"", 1, 12),
            ("{\"sql\": \"x\",}", "a trailing comma before '}'", 1, 13),
            ("[1, 2,]", "a trailing comma before ']'", 1, 7),
            ("{sql: 1}", "expected a key in double quotes, found 'sql'", 1, 2),
            ("{'sql': 1}", "expected a key in double quotes, found '''", 1, 2),
            ("{\"a\" 1}", "expected ':' after the key \"a\", found '1'", 1, 6),
            ("[1 2]", "expected ',' or ']' after an array element, found '2'", 1, 4),
            ("{\n  \"params\": [01]\n}", "a number with a leading zero", 2, 14),
            ("[-]", "expected a digit after '-', found ']'", 1, 3),
            ("[1.]", "expected a digit after '.', found ']'", 1, 4),
            ("[1e]", "expected a digit in the exponent", 1, 4),
            ("[+1]", "expected a value, found '+'", 1, 2),
            ("[NaN]", "expected a value, found 'NaN'", 1, 2),
            ("[tru]", "expected a value, found 'tru'", 1, 2),
            ("[nul", "ends early (truncated?): expected null", 1, 5),
            ("\"a\tb\"", "an unescaped control character (byte 0x09) inside a string", 1, 3),
            ("\"\\x\"", "an unknown escape '\\x' in a string", 1, 3),
            ("\"\\u12g4\"", "a \\u escape needs four hexadecimal digits, found 'g4'", 1, 6),
            ("\"\\ud800\"", "a lone UTF-16 surrogate \\uD800 (no low surrogate after it)", 1, 2),
            ("\"\\ud800\\u0041\"", "a lone UTF-16 surrogate \\uD800", 1, 2),
            ("\"\\udc00\"", "a lone UTF-16 surrogate \\uDC00 (no high surrogate before it)", 1, 2),
            ("{} {}", "unexpected '{' after the JSON value", 1, 4),
            ("// comment\n{}", "expected a value, found '/'", 1, 1),
        ]
        for (text, problem, line, column) in cases {
            let found = failure(text)
            #expect(found?.problem.contains(problem) == true, "\(text): \(found?.description ?? "accepted")")
            #expect(found?.line == line && found?.column == column, "\(text): \(found?.description ?? "accepted")")
        }
        #expect(
            failure("{\"sql\": ")?.description
                == "line 1, column 9: the document ends early (truncated?): expected a value")
    }

    /// Bytes that are not UTF-8 are refused at the first bad one, escaped or not.
    @Test func invalidUTF8IsRefusedWhereItStarts() {
        for bad: [UInt8] in [
            [0xFF], [0xC3], [0xE2, 0x98], [0xED, 0xA0, 0x80], [0xC0, 0xAF], [0xF5, 0x80, 0x80, 0x80],
        ] {
            let plain = Array("[\"ok é ".utf8) + bad + Array(" tail\"]".utf8)
            let found = failure(bytes: plain)
            #expect(found?.problem == "a string that is not valid UTF-8", "\(bad)")
            #expect(found?.offset == 8, "\(bad): \(found?.description ?? "accepted")")
            let escaped = Array("[\"\\n ".utf8) + bad + Array("\"]".utf8)
            #expect(failure(bytes: escaped)?.offset == 5, "\(bad)")
        }
        #expect(
            failure(bytes: Array("[".utf8) + [0xFF] + Array("]".utf8))?.problem
                == "expected a value, found a non-ASCII byte")
    }

    /// Nesting stops at the limit, and a body of nothing but brackets does not exhaust the stack.
    @Test func nestingIsBounded() throws {
        let deepest =
            String(repeating: "[", count: JSONReader.maxDepth) + String(repeating: "]", count: JSONReader.maxDepth)
        #expect(throws: Never.self) { try read(deepest) }
        let tooDeep = "[" + deepest + "]"
        #expect(failure(tooDeep)?.problem.contains("nested deeper than \(JSONReader.maxDepth) levels") == true)
        #expect(failure(String(repeating: "[{\"a\":", count: 100_000))?.offset == 6 * JSONReader.maxDepth / 2)
    }

    /// Random documents written by ``JSONWriter/value(_:)`` read back equal, and Foundation's
    /// parser reads the same text as the same strings and numbers.
    @Test func randomDocumentsRoundTrip() throws {
        var random = try TestRandom()
        for _ in 0..<500 {
            let value = Self.randomValue(depth: 0, using: &random)
            var writer = JSONWriter()
            writer.value(value)
            let back = try writer.bytes.withUnsafeBytes { raw in try JSONReader.read(raw) }
            #expect(back == value, "\(random.replay)")
            let foundation = try JSONSerialization.jsonObject(with: Data(writer.bytes), options: .fragmentsAllowed)
            #expect(
                Self.sameAsFoundation(value, foundation),
                "\(String(decoding: writer.bytes, as: UTF8.self)) (\(random.replay))")
        }
    }

    /// What one parser accepts the other does too: mutations of valid documents (a byte
    /// dropped, doubled or replaced) are read or refused alike by this reader and Foundation's,
    /// except numbers past a `Double`'s range, which Foundation refuses and this reader keeps
    /// as written (PostgreSQL's `numeric` takes them), and a trailing comma (`[1,]`, `{"a":1,}`),
    /// which Foundation accepts and this reader refuses by name, as RFC 8259 and PostgreSQL do.
    @Test func acceptsWhatFoundationAccepts() throws {
        var random = try TestRandom()
        let alphabet = Array("{}[]\",:.-+eE0123456789 \\/u\"tfnalrsx\u{1}".utf8) + [0xC3, 0xA9, 0xFF]
        var disagreements: [String] = []
        for _ in 0..<4000 {
            var writer = JSONWriter()
            writer.value(Self.randomValue(depth: 0, using: &random))
            var bytes = writer.bytes
            for _ in 0..<Int.random(in: 1...3, using: &random) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes.remove(at: at)
                case 1: bytes.insert(bytes[at], at: at)
                default: bytes[at] = alphabet.randomElement(using: &random)!
                }
            }
            let outcome = bytes.withUnsafeBytes { raw in
                Result { () throws(JSONReader.Failure) in try JSONReader.read(raw) }
            }
            let read = try? outcome.get()
            let ours = read != nil
            let theirs = (try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed)) != nil
            let trailingComma: Bool
            if case .failure(let failure) = outcome {
                trailingComma = failure.problem.hasPrefix("a trailing comma")
            } else {
                trailingComma = false
            }
            if ours != theirs, !(read.map(Self.hasNumberPastDouble) ?? false), !(trailingComma && theirs) {
                disagreements.append("\(ours ? "we accept" : "we refuse"): \(String(decoding: bytes, as: UTF8.self))")
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(10)) (\(random.replay))")
    }

    /// Whole numbers written with a fraction or exponent become digits; everything else stays as written.
    @Test func wholeNumbersBecomeDigits() {
        let cases: [(String, String?)] = [
            ("1", nil), ("12345678901234567890123", nil), ("1.0", "1"), ("-2.50E2", "-250"), ("1e3", "1000"),
            ("100e-2", "1"), ("10.0", "10"), ("1.5e1", "15"), ("0.0", "0"), ("-0.0", "0"), ("0e7", "0"),
            ("1.5", nil), ("0.5", nil), ("1e-1", nil), ("12345678901234567890.5", nil),
            ("1e39", String("1") + String(repeating: "0", count: 39)),
            ("1e40", nil), ("1E400", nil), ("1e-400", nil), ("5e99999999999999999999", nil),
        ]
        for (literal, expected) in cases {
            #expect(JSONValue.integralDigits(literal) == expected, "\(literal)")
        }
    }

    static func randomValue(depth: Int, using random: inout some RandomNumberGenerator) -> JSONValue {
        switch Int.random(in: 0..<(depth < 3 ? 8 : 6), using: &random) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &random))
        case 2: return .number(String(Int64.random(in: .min ... .max, using: &random)))
        case 3:
            let digits = (0..<Int.random(in: 1...30, using: &random)).map { _ in
                String(Int.random(in: 0...9, using: &random))
            }
            return .number(
                "\(Int.random(in: 1...9, using: &random))\(digits.joined()).\(Int.random(in: 0...999, using: &random))"
                    + "e-\(Int.random(in: 0...20, using: &random))")
        case 4, 5:
            let scalars = (0..<Int.random(in: 0...12, using: &random)).map { _ -> Character in
                let pool: [ClosedRange<UInt32>] = [
                    0...0x7F, 0x80...0x7FF, 0x800...0xD7FF, 0xE000...0xFFFF, 0x10000...0x10FFFF,
                ]
                return Character(
                    Unicode.Scalar(UInt32.random(in: pool.randomElement(using: &random)!, using: &random))!)
            }
            return .string(String(scalars))
        case 6:
            return .array(
                (0..<Int.random(in: 0...4, using: &random)).map { _ in randomValue(depth: depth + 1, using: &random) })
        default:
            let keys = (0..<Int.random(in: 0...4, using: &random)).map {
                "k\($0)\(Bool.random(using: &random) ? "\"é" : "")"
            }
            return .object(keys.map { JSONMember($0, randomValue(depth: depth + 1, using: &random)) })
        }
    }

    static func hasNumberPastDouble(_ value: JSONValue) -> Bool {
        switch value {
        case .number(let literal):
            let double = Double(literal) ?? .infinity
            return !double.isFinite || (double == 0 && literal.contains { ("1"..."9").contains($0) })
        case .array(let elements): return elements.contains(where: hasNumberPastDouble)
        case .object(let members): return members.contains { hasNumberPastDouble($0.value) }
        default: return false
        }
    }

    static func sameAsFoundation(_ value: JSONValue, _ foundation: Any) -> Bool {
        switch value {
        case .null: return foundation is NSNull
        case .bool(let flag): return (foundation as? Bool) == flag
        case .number(let literal):
            guard let number = foundation as? NSNumber else { return false }
            return Int64(literal).map { number.int64Value == $0 }
                ?? (abs(number.doubleValue - Double(literal)!) <= abs(Double(literal)!) * 1e-15)
        case .string(let text): return (foundation as? String) == text
        case .array(let elements):
            guard let array = foundation as? [Any], array.count == elements.count else { return false }
            return zip(elements, array).allSatisfy { sameAsFoundation($0, $1) }
        case .object(let members):
            guard let object = foundation as? [String: Any], object.count == members.count else { return false }
            return members.allSatisfy { member in object[member.key].map { sameAsFoundation(member.value, $0) } ?? false
            }
        }
    }
}
