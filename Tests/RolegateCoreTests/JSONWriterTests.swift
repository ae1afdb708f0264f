import Foundation
import Testing

@testable import RolegateCore

@Suite struct JSONWriterTests {
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

    /// A writer emptied for reuse starts from nothing.
    @Test func removeAllStartsAgain() {
        var writer = JSONWriter()
        writer.object(["a": "b"])
        writer.removeAll()
        writer.verbatim("plain \"text\"")
        #expect(String(decoding: writer.bytes, as: UTF8.self) == "plain \"text\"")
    }
}
