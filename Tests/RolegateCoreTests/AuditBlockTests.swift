import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

/// The audit log's storage unit: events in, the same events (and chain) out, a few bytes per
/// repeated statement, and a payload edited behind the store's back named or refused, never
/// read as something else.
@Suite(.ownThreads) struct AuditBlockTests {
    /// Every field set, unset, empty or awkward; times that go backwards; several sessions.
    func varied(_ count: Int) -> [AuditEvent] {
        (0..<count).map { i -> AuditEvent in
            let offset: Double = Double(i % 7 == 0 ? -i : i) / 1000
            let kinds = AuditEvent.Kind.allCases
            let sql: String? = i % 6 == 0 ? nil : "SELECT 'ünï\"cødé' -- \(i % 4)\n\t\u{1}"
            let rows: Int64? = i % 4 == 0 ? nil : Int64(i) * 1_000_000_007
            let detail: [String: String] =
                i % 2 == 0 ? [:] : ["command": "SELECT \(i % 2)", "quote\"key": "line\nbreak\u{7f}", "z": ""]
            return AuditEvent(
                at: Date(timeIntervalSince1970: 1_800_000_000 + offset), kind: kinds[i % kinds.count],
                action: i % 3 == 0 ? "error" : "ok", service: i % 5 == 0 ? nil : "dash", tokenID: "tok\(i % 4)",
                role: "reader", database: i % 7 == 0 ? "" : "app", sessionID: i % 9 == 0 ? nil : "s\(i / 10)",
                client: "127.0.0.1:\(i % 3)", sql: sql, sqlState: i % 3 == 0 ? "42501" : nil, rows: rows,
                durationMicros: Int64(-i), detail: detail)
        }
    }

    @Test func eventsComeBackAsTheChainLinkedThem() throws {
        let events = varied(500)
        let head: (sequence: Int64, hash: String) = (41, String(repeating: "ab", count: 32))
        let linked = AuditChain.link(events, instance: "gw", after: head)
        let blocks = AuditBlock.seal(events, instance: "gw", after: head)
        #expect(blocks.count == 1)
        let block = blocks[0]
        #expect(block.firstSequence == 42 && block.lastSequence == 541 && block.count == 500)
        #expect(block.previousHash == head.hash)
        #expect(block.firstAt == linked.first!.at.millisecondsSince1970)
        #expect(block.lastAt == linked.last!.at.millisecondsSince1970)
        let read = try block.decode(blockID: 7)
        #expect(read.firstAltered == nil)
        #expect(read.events.map(\.id) == (0..<500).map { AuditBlock.eventID(block: 7, index: $0) })
        // The content as linked; the chain through the block, from its previous hash to its last.
        var content = read.events
        var expected = linked
        for index in content.indices {
            content[index].id = nil
            (content[index].hash, content[index].previousHash) = ("", "")
            (expected[index].hash, expected[index].previousHash) = ("", "")
        }
        #expect(content == expected)
        #expect(read.events.first?.previousHash == head.hash && read.events.last?.hash == block.lastHash)
        #expect(zip(read.events, read.events.dropFirst()).allSatisfy { $0.hash == $1.previousHash })
        #expect(Set(read.events.map(\.hash)).count == 500)
        #expect(block.isIntact)
        // Without hashing (counting, filtering) the content is the same.
        let unhashed = try block.decode(blockID: nil, hashing: false).events
        #expect(unhashed.map(\.sql) == linked.map(\.sql) && unhashed.map(\.detail) == linked.map(\.detail))
    }

    @Test func theSummaryNamesWhatTheBlockHolds() {
        let block = AuditBlock.seal(varied(40), instance: "gw", after: nil)[0]
        #expect(block.keys.contains(AuditBlock.key(token: "tok3")))
        #expect(block.keys.contains(AuditBlock.key(session: "s3")))
        #expect(block.keys.contains(AuditBlock.key(service: "dash")))
        #expect(!block.keys.contains(AuditBlock.key(token: "tok4")))
        #expect(Set(block.keys).count == block.keys.count)
        for kind in AuditEvent.Kind.allCases { #expect(block.kinds & AuditBlock.kindBit(kind) != 0) }
        let counted = block.countsByKind.reduce(0) { $0 + $1.count }
        #expect(counted == 40)
        let statementsOK = varied(40).filter { $0.kind == .statement && $0.action == "ok" }.count
        #expect(block.countsByKind.first { $0.kind == .statement && $0.action == "ok" }?.count == statementsOK)
    }

    /// A session repeating one prepared statement costs a few bytes per statement: each text is
    /// stored once per block, the session's service, token, role, database and client once.
    @Test func aRepeatedStatementCostsAFewBytes() {
        let sessions = (0..<16).map { "sess-\($0)-\(UUID().uuidString.prefix(8))" }
        let start = Date()
        let events = (0..<4000).map { i in
            AuditEvent(
                at: start + Double(i) / 40_000, kind: .statement, action: "ok", service: "bench",
                tokenID: "r0a1b2c3d4e5f6g7", role: "bench_reader", database: "bench", sessionID: sessions[i % 16],
                client: "127.0.0.1:\(50000 + i % 16)", sql: "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
                rows: 1, durationMicros: Int64(40 + i % 200), detail: ["command": "SELECT", "prepared": "P0_1"])
        }
        let block = AuditBlock.seal(events, instance: "gw", after: nil)[0]
        let perEvent = Double(block.payload.count) / Double(events.count)
        #expect(perEvent < 30, "\(perEvent) bytes per statement")
    }

    @Test func anEditedEventIsTheFirstAlteredOne() throws {
        let events = varied(30)
        let block = AuditBlock.seal(events, instance: "gw", after: nil)[0]
        var read = try block.decode(blockID: nil).events
        read[12].rows = 999
        let edited = AuditBlock.reencoded(read, instance: "gw")
        var stored = block
        stored.payload = edited.payload
        #expect(try stored.decode(blockID: nil).firstAltered == 12)
        // Its last hash edited: the last event no longer ends where the block says.
        var lastEdited = block
        lastEdited.lastHash = AuditChain.genesis
        #expect(try lastEdited.decode(blockID: nil).firstAltered == 29)
        // The chain before it changed: its first event is the first that does not match.
        var moved = block
        moved.previousHash = String(repeating: "1", count: 64)
        #expect(try moved.decode(blockID: nil).firstAltered == 0)
    }

    /// A text edited in place (same length, as someone editing the stored bytes would) changes
    /// the hashes of the events that use it, from the first of them: that one is named.
    @Test func anEditedTextNamesTheFirstEventThatUsesIt() throws {
        var events = varied(30)
        events[17].sql = "SELECT 'only seventeen'"
        events[23].sql = "SELECT 'only seventeen'"
        let block = AuditBlock.seal(events, instance: "gw", after: nil)[0]
        #expect(block.isIntact)
        var edited = block
        let text = Array("SELECT 'only seventeen'".utf8)
        let at = try #require(
            (0...(block.payload.count - text.count)).first { Array(block.payload[$0..<$0 + text.count]) == text })
        edited.payload[at + 8] = UInt8(ascii: "O")
        #expect(!edited.isIntact)
        #expect(try edited.decode(blockID: nil).firstAltered == 17)
        // The same block as another chain's, or after another event: its first event is named.
        var moved = block
        moved.instance = "gw-b"
        #expect(!moved.isIntact)
        #expect(try moved.decode(blockID: nil).firstAltered == 0)
    }

    /// Every truncation and many single-byte edits: the block is refused or its edit named,
    /// never read back as the same events without a word.
    @Test func aDamagedPayloadIsRefusedOrNamed() {
        let block = AuditBlock.seal(varied(20), instance: "gw", after: nil)[0]
        for length in 0..<block.payload.count {
            var cut = block
            cut.payload = Array(block.payload.prefix(length))
            #expect(throws: AuditBlock.Unreadable.self) { try cut.decode(blockID: nil) }
        }
        for offset in stride(from: 0, to: block.payload.count, by: 3) {
            var flipped = block
            flipped.payload[offset] ^= 0x5A
            #expect(!flipped.isIntact, "a byte changed at \(offset) went unnoticed by the fast check")
            let result = try? flipped.decode(blockID: nil)
            if let result { #expect(result.firstAltered != nil, "a byte changed at \(offset) went unnoticed") }
        }
    }

    /// Someone with write access to the store can set any number to anything: verification
    /// must name what that breaks, not trap on the arithmetic.
    @Test func numbersEditedToTheirExtremesAreNamedNotACrash() throws {
        let block = AuditBlock.seal(varied(3), instance: "gw", after: nil)[0]
        var scanner = try PayloadScanner(block.payload)
        var first = PayloadScanner.Event()
        try scanner.next(into: &first)
        for (field, value) in [(0, Int64.max), (0, Int64.min), (1, Int64.max), (1, Int64.min)] {
            // The first event's sequence delta (field 0) or time delta (field 1), rewritten.
            var rest = ByteReader(block.payload)
            rest.offset = first.bytes.lowerBound
            let sequenceDelta = rest.signed()!
            let afterSequence = rest.offset
            _ = rest.signed()!
            var number = ByteWriter()
            number.signed(value)
            var edited = block
            if field == 0 {
                edited.payload =
                    Array(block.payload[..<first.bytes.lowerBound]) + number.bytes
                    + block.payload[afterSequence...]
            } else {
                var sequence = ByteWriter()
                sequence.signed(sequenceDelta)
                edited.payload =
                    Array(block.payload[..<first.bytes.lowerBound]) + sequence.bytes + number.bytes
                    + block.payload[rest.offset...]
            }
            #expect(!edited.isIntact)
            if let read = try? edited.decode(blockID: Int64.max) {
                #expect(read.firstAltered == 0, "field \(field) = \(value) went unnoticed")
            }
        }
        var summary = block
        summary.firstSequence = .min
        summary.lastSequence = .max
        #expect(!summary.isIntact)
        // A chain whose first block claims to start at the lowest number there is.
        var verifier = ChainVerifier(instance: "gw")
        #expect(
            verifier.nextBlock(firstSequence: .min, count: 3, previousHash: AuditChain.genesis, lastHash: "x") == nil)
        #expect(verifier.finish(head: (.max, "y"))?.message.contains("is missing") == true)
        #expect(verifier.nextBlock(firstSequence: .max, count: 1, previousHash: "x", lastHash: "z") != nil)
    }

    @Test func largeBatchesAreSplitIntoBlocksThatJoinUp() throws {
        let events = (0..<(AuditBlock.maxEvents + 10)).map { i in
            AuditEvent(
                at: Date(timeIntervalSince1970: 1_800_000_000), kind: .statement, action: "ok", sql: "S \(i % 5)")
        }
        let blocks = AuditBlock.seal(events, instance: "gw", after: nil)
        #expect(blocks.map(\.count) == [AuditBlock.maxEvents, 10])
        #expect(blocks[1].previousHash == blocks[0].lastHash)
        #expect(blocks[1].firstSequence == Int64(AuditBlock.maxEvents) + 1)
        let all = try blocks[0].decode(blockID: 1).events + blocks[1].decode(blockID: 2).events
        #expect(zip(all, all.dropFirst()).allSatisfy { $0.hash == $1.previousHash && $0.sequence + 1 == $1.sequence })
        #expect(all.last?.hash == blocks[1].lastHash && blocks.allSatisfy(\.isIntact))
    }
}
