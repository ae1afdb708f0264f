import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

@Suite(.ownThreads) struct JSONWriterTests {
    /// Objects come out with their keys sorted whatever their number (up to two are ordered
    /// without sorting a copy), and keys and values escaped.
    @Test func objectsHaveSortedKeys() throws {
        let cases: [([String: String], String)] = [
            ([:], "{}"),
            (["command": "SELECT 1"], #"{"command":"SELECT 1"}"#),
            (["prepared": "P0_1", "command": "SELECT 1"], #"{"command":"SELECT 1","prepared":"P0_1"}"#),
            (["command": "SELECT 1", "prepared": "P0_1"], #"{"command":"SELECT 1","prepared":"P0_1"}"#),
            (["z": "", "a\"": "line\nbreak", "m": "\u{1}"], #"{"a\"":"line\nbreak","m":"\u0001","z":""}"#),
        ]
        for (fields, expected) in cases {
            var writer = JSONWriter()
            writer.object(fields)
            #expect(String(decoding: writer.bytes, as: UTF8.self) == expected)
        }
        // Many keys, in whatever order the dictionary holds them.
        let many = Dictionary(uniqueKeysWithValues: (0..<50).map { ("k\($0)", "v\($0)") })
        var writer = JSONWriter()
        writer.object(many)
        let parsed = try JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [String: String]
        #expect(parsed == many)
        let text = String(decoding: writer.bytes, as: UTF8.self)
        let keys = many.keys.sorted()
        let positions = keys.map { text.range(of: "\"\($0)\"")!.lowerBound }
        #expect(positions == positions.sorted())
    }

    /// Strings with and without characters to escape, anywhere in them, read back as they were.
    @Test func stringsReadBackAsWritten() throws {
        var writer = JSONWriter()
        writer.string("plain")
        writer.string("")
        writer.string("\"quoted\" back\\slash\ttab\r\n\u{1}\u{1f} ünï ☃")
        #expect(
            String(decoding: writer.bytes, as: UTF8.self)
                == #""plain""""\"quoted\" back\\slash\ttab\r\n\u0001\u001f ünï ☃""#)
        var generator = SystemRandomNumberGenerator()
        let alphabet: [Character] = [
            "a", "Z", "0", " ", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1b}", "/", "é", "☃", "😀",
        ]
        for _ in 0..<500 {
            let length = Int.random(in: 0...40, using: &generator)
            let text = String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
            var writer = JSONWriter()
            writer.array([text]) { $0.string($1) }
            let back = try JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [String]
            #expect(back == [text], "\(text.debugDescription)")
        }
    }

    /// A writer emptied for reuse starts from nothing.
    @Test func removeAllStartsAgain() {
        var writer = JSONWriter()
        writer.object(["a": "b"])
        writer.removeAll()
        writer.verbatim("plain \"text\"")
        #expect(String(decoding: writer.bytes, as: UTF8.self) == "plain \"text\"")
    }
}
