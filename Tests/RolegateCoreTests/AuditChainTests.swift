import Foundation
import Testing

@testable import RolegateCore

@Suite struct AuditChainTests {
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

@Suite struct CanonicalEncodingTests {
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
