import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

@Suite(.ownThreads) struct AuditChainTests {
    func chain(_ count: Int = 5) -> [AuditEvent] {
        let events = (0..<count).map { i in
            AuditEvent(
                at: Date(timeIntervalSince1970: 1_800_000_000 + Double(i)), kind: .statement, action: "ok",
                service: "reports", tokenID: "tok\(i)", sql: "SELECT \(i)", rows: Int64(i),
                detail: ["command": "SELECT 1"])
        }
        return AuditChain.link(events, instance: "gw1", after: nil)
    }

    @Test func aLinkedChainVerifies() {
        let events = chain()
        #expect(events.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(events[0].previousHash == AuditChain.genesis)
        #expect(events[1].previousHash == events[0].hash)
        #expect(AuditChain.verify(instance: "gw1", events: events, head: (5, events[4].hash)) == nil)
        // Appending continues the same chain.
        let more = AuditChain.link(
            [AuditEvent(kind: .auth, action: "allowed")], instance: "gw1", after: (5, events[4].hash))
        #expect(more[0].sequence == 6 && more[0].previousHash == events[4].hash)
        #expect(AuditChain.verify(instance: "gw1", events: events + more, head: (6, more[0].hash)) == nil)
    }

    @Test func anEditedEventIsNamed() {
        var events = chain()
        events[2].sql = "SELECT 'innocent'"
        let problem = AuditChain.verify(instance: "gw1", events: events, head: (5, events[4].hash))
        #expect(problem?.sequence == 3)
        #expect(problem?.message.contains("altered") == true)
        // Re-hashing the edited event breaks the next link instead.
        events[2].hash = AuditChain.hash(events[2])
        let relinked = AuditChain.verify(instance: "gw1", events: events, head: (5, events[4].hash))
        #expect(relinked?.sequence == 4)
    }

    @Test func deletedAndReorderedEventsAreFound() {
        var events = chain()
        events.remove(at: 1)
        #expect(AuditChain.verify(instance: "gw1", events: events, head: (5, events.last!.hash))?.sequence == 2)
        // Deleting the newest: only the chain head knows.
        let truncated = Array(chain().dropLast())
        let tail = AuditChain.verify(instance: "gw1", events: truncated, head: (5, chain()[4].hash))
        #expect(tail?.sequence == 5)
        #expect(tail?.message.contains("missing") == true)
        // Swapping two events' places (sequence numbers kept in order) breaks their hashes.
        var swapped = chain()
        let third = swapped[2]
        swapped[2] = swapped[3]
        swapped[3] = third
        swapped[2].sequence = 3
        swapped[3].sequence = 4
        #expect(AuditChain.verify(instance: "gw1", events: swapped, head: (5, swapped[4].hash))?.sequence == 3)
        // Deleting the oldest events without a checkpoint.
        let headless = Array(chain().dropFirst(2))
        #expect(AuditChain.verify(instance: "gw1", events: headless, head: (5, headless.last!.hash))?.sequence == 1)
    }

    @Test func pruningWithACheckpointVerifies() {
        let events = chain()
        let checkpoint = AuditChain.link(
            [
                AuditEvent(
                    kind: .checkpoint, action: "pruned",
                    detail: ["pruned_through": "2", "hash_at_cut": events[1].hash])
            ], instance: "gw1", after: (5, events[4].hash))
        let kept = Array(events.dropFirst(2)) + checkpoint
        #expect(AuditChain.verify(instance: "gw1", events: kept, head: (6, checkpoint[0].hash)) == nil)
        // A checkpoint for another cut does not excuse this gap.
        let tooMuch = Array(events.dropFirst(3)) + checkpoint
        #expect(AuditChain.verify(instance: "gw1", events: tooMuch, head: (6, checkpoint[0].hash)) != nil)
    }

    @Test func theEncodingIsUnambiguous() {
        let a = AuditEvent(kind: .statement, action: "ok", sql: "a;b", detail: ["x": "1"])
        var b = a
        b.sql = "a"
        b.detail = ["x": "1", ";b": ""]
        #expect(AuditChain.hash(a) != AuditChain.hash(b))
        var c = a
        c.service = ""
        #expect(AuditChain.hash(a) != AuditChain.hash(c))  // empty is not absent
    }
}

@Suite(.ownThreads) struct CanonicalEncodingTests {
    /// The encoding as first written (a string per number and length): the fast writer must match it.
    static func reference(_ e: AuditEvent) -> [UInt8] {
        var out: [UInt8] = Array("rolegate-audit-v1;".utf8)
        func field(_ name: String, _ value: String?) {
            out += Array(name.utf8) + [UInt8(ascii: "=")]
            if let value {
                out += Array(String(value.utf8.count).utf8) + [UInt8(ascii: ":")] + Array(value.utf8)
            } else {
                out.append(UInt8(ascii: "-"))
            }
            out.append(UInt8(ascii: ";"))
        }
        field("instance", e.instance)
        field("sequence", String(e.sequence))
        field("at", String(e.at.millisecondsSince1970))
        field("kind", e.kind.rawValue)
        field("action", e.action)
        field("service", e.service)
        field("token_id", e.tokenID)
        field("role", e.role)
        field("database", e.database)
        field("session_id", e.sessionID)
        field("client", e.client)
        field("sql", e.sql)
        field("sql_state", e.sqlState)
        field("rows", e.rows.map(String.init))
        field("duration_us", e.durationMicros.map(String.init))
        field("detail", String(e.detail.count))
        for key in e.detail.keys.sorted() {
            field("detail.key", key)
            field("detail.value", e.detail[key])
        }
        field("previous_hash", e.previousHash)
        return out
    }

    @Test func randomEventsEncodeAsTheReferenceDoes() {
        var generator = SystemRandomNumberGenerator()
        let texts: [String?] = [nil, "", "x", "é∑😀", String(repeating: "long ", count: 300), "a;b=c:d"]
        let numbers: [Int64?] = [nil, 0, 9, 10, -1, -10, Int64.max, Int64.min, 1_800_000_000_123]
        func text() -> String? { texts.randomElement(using: &generator)! }
        func number() -> Int64? { numbers.randomElement(using: &generator)! }
        for _ in 0..<2000 {
            var detail: [String: String] = [:]
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                detail[text() ?? "k\(Int.random(in: 0...99))"] = text() ?? ""
            }
            let event = AuditEvent(
                instance: text() ?? "gw", sequence: number() ?? 1,
                at: Date(milliseconds: Int64.random(in: -1_000_000...4_000_000_000_000, using: &generator)),
                kind: AuditEvent.Kind.allCases.randomElement(using: &generator)!, action: text() ?? "ok",
                service: text(), tokenID: text(), role: text(), database: text(), sessionID: text(), client: text(),
                sql: text(), sqlState: text(), rows: number(), durationMicros: number(), detail: detail,
                previousHash: text() ?? "")
            let fast = AuditChain.canonicalEncoding(event)
            let slow = Self.reference(event)
            #expect(
                fast == slow, "\(String(decoding: fast, as: UTF8.self)) != \(String(decoding: slow, as: UTF8.self))")
            if fast != slow { return }
        }
    }

    /// The encoding is what every stored hash was computed over: it must never change.
    @Test func theEncodingIsByteForByteTheDocumentedOne() {
        let event = AuditEvent(
            instance: "gw", sequence: 12, at: Date(milliseconds: 1_800_000_000_123), kind: .statement, action: "ok",
            service: "dash", tokenID: "tok", role: nil, database: "app", sessionID: "s1", client: nil,
            sql: "SELECT 'é'", sqlState: nil, rows: 3, durationMicros: -5,
            detail: ["prepared": "p1", "command": "SELECT 3"], previousHash: "abc")
        let expected =
            "rolegate-audit-v1;instance=2:gw;sequence=2:12;at=13:1800000000123;kind=9:statement;action=2:ok;"
            + "service=4:dash;token_id=3:tok;role=-;database=3:app;session_id=2:s1;client=-;sql=11:SELECT 'é';"
            + "sql_state=-;rows=1:3;duration_us=2:-5;detail=1:2;detail.key=7:command;detail.value=8:SELECT 3;"
            + "detail.key=8:prepared;detail.value=2:p1;previous_hash=3:abc;"
        #expect(String(decoding: AuditChain.canonicalEncoding(event), as: UTF8.self) == expected)
        var single = event
        single.detail = ["command": "SELECT 3"]
        #expect(
            String(decoding: AuditChain.canonicalEncoding(single), as: UTF8.self).contains(
                "detail=1:1;detail.key=7:command;detail.value=8:SELECT 3;previous_hash"))
    }
}

@Suite(.ownThreads) struct TimestampTests {
    /// The hand-written RFC 3339 form equals Foundation's formatter's, before 1970 too.
    @Test func millisecondTimestampsMatchFoundationsFormatter() {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        var generator = SystemRandomNumberGenerator()
        let fixed: [Int64] = [0, 1, 999, 1000, -1, -999, -1000, -1001, 1_800_000_000_123, 253_402_300_799_999]
        let random = (0..<2000).map { _ in Int64.random(in: -2_000_000_000_000...4_000_000_000_000, using: &generator) }
        for milliseconds in fixed + random {
            let date = Date(milliseconds: milliseconds)
            #expect(date.rfc3339Milliseconds == formatter.string(from: date), "\(milliseconds)")
            if date.rfc3339Milliseconds != formatter.string(from: date) { return }
        }
        #expect(Date(milliseconds: 1_800_000_000_123).rfc3339Milliseconds == "2027-01-15T08:00:00.123Z")
    }

    /// A time made from a count of milliseconds gives that count back (a time read from a store
    /// and written back must not drift): truncating the floating-point value straight away lost a
    /// millisecond for ~0.6% of the instants from 2037 on (and in 2004–2006).
    @Test func millisecondCountsComeBackUnchanged() {
        var generator = SystemRandomNumberGenerator()
        // Instants that came back one millisecond short.
        let fixed: [Int64] = [
            0, 1, -1, -1001, 1_099_999_999_999, 2_157_950_874_443, 2_171_500_556_640, 2_183_988_966_437,
        ]
        // 1970 to 2200.
        let random = (0..<200_000).map { _ in Int64.random(in: 0...7_258_118_400_000, using: &generator) }
        var wrong: [Int64] = []
        for milliseconds in fixed + random {
            let date = Date(milliseconds: milliseconds)
            if date.millisecondsSince1970 != milliseconds || date.wholeMilliseconds != date {
                wrong.append(milliseconds)
            }
        }
        let wrongCount = wrong.count
        #expect(wrongCount == 0, "e.g. \(wrong.prefix(5))")
        // Truncation still truncates.
        #expect(Date(timeIntervalSince1970: 1_800_000_000.1239).millisecondsSince1970 == 1_800_000_000_123)
        #expect(Date(timeIntervalSince1970: -0.0005).millisecondsSince1970 == -1)
        // Far beyond any stored time (an audit filter of `since=700000000d`): clamped, never a trap.
        let farPast = Date().addingTimeInterval(-700_000_000 * 86_400)
        #expect(farPast.millisecondsSince1970 == Int64.min / 1000)
        #expect(Date(timeIntervalSince1970: 1e17).millisecondsSince1970 == Int64.max / 1000)
        #expect(Date(timeIntervalSince1970: -1e12).millisecondsSince1970 == -1_000_000_000_000_000)
    }
}
