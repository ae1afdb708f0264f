import Crypto
import Foundation

/// A run of one chain's events stored as one record: the storage unit of the audit log.
///
/// A group commit writes one block (one row, one write) whatever its size. Its events are
/// encoded compactly: every text (service, session, statement, detail) is stored once per block
/// in a table the events refer to by number, so a statement repeated by a session costs a few
/// bytes, and times and sequence numbers are deltas. What queries select on is kept beside the
/// payload as the block's summary: its sequence and time range, the kinds it holds, its counts
/// per kind and action, and its keys (the tokens, sessions and services it mentions).
///
/// **The hash chain** continues through blocks event by event, at a fraction of the cost of
/// hashing each event's canonical text (``AuditChain``, which rows of the layout before blocks
/// keep). A block starts from the hash of the event before it (``previousHash``):
///
/// - `h₀ = SHA-256("rolegate-audit-block-v1" ‖ instance ‖ previous hash ‖ header)`, the header
///   being the format version, the first sequence number and the first event's time;
/// - `hᵢ = SHA-256(hᵢ₋₁ ‖ event i's bytes ‖ the 8-byte digest of each text it refers to)`, a
///   text's digest being the first 8 bytes of its SHA-256. So an event's hash covers its own
///   content and every text it uses, and editing a text changes the hashes of exactly the events
///   that use it, from the first of them on.
///
/// The block stores the hash of its last event (``lastHash``) and per event the first four
/// bytes of its hash, enough to name the first event that no longer matches; every other hash
/// is recomputed when the block is read.
public struct AuditBlock: Sendable, Equatable {
    /// At most this many events per block: an event's id is its block's id times
    /// ``idsPerBlock`` plus its place in the block.
    public static let maxEvents = 16_384
    public static let idsPerBlock: Int64 = 65_536
    static let formatVersion: UInt8 = 1
    static let prefixBytes = 4

    public var instance: String
    public var firstSequence: Int64
    public var lastSequence: Int64
    /// Milliseconds since 1970 of the first and the last event.
    public var firstAt: Int64
    public var lastAt: Int64
    public var count: Int
    /// The hash of the chain's event before this block (``AuditChain/genesis`` for the first).
    public var previousHash: String
    public var lastHash: String
    /// One bit per ``AuditEvent/Kind`` the block holds (``kindBit(_:)``).
    public var kinds: Int64
    /// How many events of each kind and action: `kind action count` lines (``countsByKind``).
    public var counts: String
    /// ``key(token:)``, ``key(session:)`` and ``key(service:)`` of every event, each once.
    public var keys: [String]
    public var payload: [UInt8]

    public init(
        instance: String, firstSequence: Int64, lastSequence: Int64, firstAt: Int64, lastAt: Int64, count: Int,
        previousHash: String, lastHash: String, kinds: Int64, counts: String, keys: [String], payload: [UInt8]
    ) {
        self.instance = instance
        self.firstSequence = firstSequence
        self.lastSequence = lastSequence
        self.firstAt = firstAt
        self.lastAt = lastAt
        self.count = count
        self.previousHash = previousHash
        self.lastHash = lastHash
        self.kinds = kinds
        self.counts = counts
        self.keys = keys
        self.payload = payload
    }

    public static func kindBit(_ kind: AuditEvent.Kind) -> Int64 {
        1 << Int64(AuditEvent.Kind.allCases.firstIndex(of: kind)!)
    }

    public static func key(token: String) -> String { "t:" + token }
    public static func key(session: String) -> String { "s:" + session }
    public static func key(service: String) -> String { "v:" + service }

    /// The id of the event at `index` of the block stored as `block`.
    public static func eventID(block: Int64, index: Int) -> Int64 { block &* idsPerBlock &+ Int64(index) }

    /// ``counts`` read back.
    public var countsByKind: [(kind: AuditEvent.Kind, action: String, count: Int)] { Self.counts(counts) }

    /// ``counts`` as written: events counted by `kind index << 32 | action's text number`, one
    /// `kind action count` line each, in that key's order. `action` names a text by its number.
    static func countsText(_ counts: [Int: Int], action: (Int) -> String) -> String {
        counts.sorted { $0.key < $1.key }.map { key, count in
            "\(AuditEvent.Kind.allCases[key >> 32].rawValue) \(action(key & 0xFFFF_FFFF)) \(count)"
        }.joined(separator: "\n")
    }

    /// A block's ``counts`` text read back.
    public static func counts(_ counts: String) -> [(kind: AuditEvent.Kind, action: String, count: Int)] {
        counts.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3, let kind = AuditEvent.Kind(rawValue: String(parts[0])), let count = Int(parts[2])
            else { return nil }
            return (kind, String(parts[1]), count)
        }
    }
}

// MARK: - Writing

extension AuditBlock {
    /// Links `events` after `head` (nil: a new chain), as ``AuditChain/link(_:instance:after:)``
    /// would, and encodes them as blocks of at most ``maxEvents``.
    public static func seal(
        _ events: [AuditEvent], instance: String, after head: (sequence: Int64, hash: String)?
    ) -> [AuditBlock] {
        var blocks: [AuditBlock] = []
        var head = head
        var start = 0
        while start < events.count {
            let end = min(events.count, start + maxEvents)
            let block = seal(events[start..<end], instance: instance, after: head)
            head = (block.lastSequence, block.lastHash)
            blocks.append(block)
            start = end
        }
        return blocks
    }

    static func seal(
        _ events: ArraySlice<AuditEvent>, instance: String, after head: (sequence: Int64, hash: String)?
    ) -> AuditBlock {
        precondition(!events.isEmpty && events.count <= maxEvents)
        let firstSequence = (head?.sequence ?? 0) + 1
        let firstAt = events.first!.at.millisecondsSince1970
        let previousHash = head?.hash ?? AuditChain.genesis
        var encoder = Encoder(
            start: ChainHasher.start(
                instance: instance, previousHash: previousHash, header: header(firstSequence, firstAt)))
        var lastAt = firstAt
        for event in events {
            lastAt = event.at.millisecondsSince1970
            encoder.append(event, sequenceDelta: 0, atMilliseconds: lastAt, storedPrefix: nil)
        }
        return AuditBlock(
            instance: instance, firstSequence: firstSequence, lastSequence: firstSequence + Int64(events.count) - 1,
            firstAt: firstAt, lastAt: lastAt, count: events.count, previousHash: previousHash,
            lastHash: encoder.chain.hex, kinds: encoder.kinds, counts: encoder.countsText(),
            keys: encoder.keys.sorted(), payload: encoder.payload(firstSequence: firstSequence, firstAt: firstAt))
    }

    /// The payload's header, which `h₀` covers: format version, first sequence, first time.
    static func header(_ firstSequence: Int64, _ firstAt: Int64) -> [UInt8] {
        var out = ByteWriter()
        out.byte(formatVersion)
        out.signed(firstSequence)
        out.signed(firstAt)
        return out.bytes
    }

    /// Builds a payload: the text table, then the events (see ``decode(blockID:)`` for the layout).
    struct Encoder {
        private var texts: [String: Int] = [:]
        private var table = ByteWriter()
        private var body = ByteWriter()
        private var previousAt: Int64?
        private var textCount = 0
        /// Each text's digest, by its number.
        private var digests: [UInt64] = []
        /// The texts the event being written refers to, in order.
        private var used: [Int] = []
        /// The hash of the last event written (`h₀` before the first).
        private(set) var chain: ChainHasher.Hash

        init(start: ChainHasher.Hash) {
            chain = start
        }
        private(set) var kinds: Int64 = 0
        private var counts: [Int: Int] = [:]
        private(set) var keys: Set<String> = []
        /// A session's texts, looked up once per session rather than once per event.
        private var sessions: [String: SessionTexts] = [:]

        private struct SessionTexts {
            var service: String?
            var tokenID: String?
            var role: String?
            var database: String?
            var client: String?
            var refs: (Int?, Int?, Int?, Int?, Int, Int?)
        }

        private mutating func ref(_ text: String) -> Int {
            if let known = texts[text] { return known }
            let index = textCount
            textCount += 1
            texts[text] = index
            table.text(text)
            digests.append(ChainHasher.digest(text))
            return index
        }

        private mutating func ref(_ text: String?) -> Int? { text.map { ref($0) } }

        private mutating func note(service: String?, token: String?, session: String?) {
            if let service { keys.insert(AuditBlock.key(service: service)) }
            if let token { keys.insert(AuditBlock.key(token: token)) }
            if let session { keys.insert(AuditBlock.key(session: session)) }
        }

        private mutating func contextRefs(_ e: AuditEvent) -> (Int?, Int?, Int?, Int?, Int?, Int?) {
            guard let session = e.sessionID else {
                note(service: e.service, token: e.tokenID, session: nil)
                return (ref(e.service), ref(e.tokenID), ref(e.role), ref(e.database), nil, ref(e.client))
            }
            if let known = sessions[session], known.service == e.service, known.tokenID == e.tokenID,
                known.role == e.role, known.database == e.database, known.client == e.client
            {
                let r = known.refs
                return (r.0, r.1, r.2, r.3, r.4, r.5)
            }
            note(service: e.service, token: e.tokenID, session: session)
            let refs = (ref(e.service), ref(e.tokenID), ref(e.role), ref(e.database), ref(session), ref(e.client))
            sessions[session] = SessionTexts(
                service: e.service, tokenID: e.tokenID, role: e.role, database: e.database, client: e.client,
                refs: refs)
            return (refs.0, refs.1, refs.2, refs.3, refs.4, refs.5)
        }

        private mutating func write(_ reference: Int?) {
            guard let reference else { return }
            body.unsigned(UInt64(reference))
            used.append(reference)
        }

        /// Writes `e` and chains it. `storedPrefix`: the hash prefix to store instead of its own
        /// (``reencoded(_:instance:)``, which keeps what was stored).
        mutating func append(
            _ e: AuditEvent, sequenceDelta: Int64, atMilliseconds at: Int64, storedPrefix: String?
        ) {
            let start = body.bytes.count
            used.removeAll(keepingCapacity: true)
            body.signed(sequenceDelta)
            body.signed(at - (previousAt ?? at))
            previousAt = at
            let kindIndex = AuditEvent.Kind.allCases.firstIndex(of: e.kind)!
            body.byte(UInt8(kindIndex))
            let action = ref(e.action)
            body.unsigned(UInt64(action))
            used.append(action)
            kinds |= AuditBlock.kindBit(e.kind)
            counts[kindIndex << 32 | action, default: 0] += 1

            let (service, token, role, database, session, client) = contextRefs(e)
            let sql = ref(e.sql)
            let sqlState = ref(e.sqlState)
            var mask: UInt64 = 0
            func flag(_ present: Bool, _ bit: UInt64) { if present { mask |= 1 << bit } }
            flag(service != nil, 0)
            flag(token != nil, 1)
            flag(role != nil, 2)
            flag(database != nil, 3)
            flag(session != nil, 4)
            flag(client != nil, 5)
            flag(sql != nil, 6)
            flag(sqlState != nil, 7)
            flag(e.rows != nil, 8)
            flag(e.durationMicros != nil, 9)
            body.unsigned(mask)
            write(service)
            write(token)
            write(role)
            write(database)
            write(session)
            write(client)
            write(sql)
            write(sqlState)
            if let rows = e.rows { body.signed(rows) }
            if let duration = e.durationMicros { body.signed(duration) }
            body.unsigned(UInt64(e.detail.count))
            e.detail.forEachInKeyOrder { key, value in
                let pair = (ref(key), ref(value))
                body.unsigned(UInt64(pair.0))
                body.unsigned(UInt64(pair.1))
                used.append(pair.0)
                used.append(pair.1)
            }
            chain = body.bytes.withUnsafeBytes { bytes in
                ChainHasher.next(
                    after: chain, event: UnsafeRawBufferPointer(rebasing: bytes[start...]), texts: used,
                    digests: digests)
            }
            if let storedPrefix {
                body.hexPrefix(storedPrefix, bytes: AuditBlock.prefixBytes)
            } else {
                chain.withPrefix(AuditBlock.prefixBytes) { body.bytes.append(contentsOf: $0) }
            }
        }

        func countsText() -> String {
            var names = [String](repeating: "", count: textCount)
            for (text, index) in texts { names[index] = text }
            return AuditBlock.countsText(counts) { names[$0] }
        }

        func payload(firstSequence: Int64, firstAt: Int64) -> [UInt8] {
            var out = ByteWriter()
            out.bytes.reserveCapacity(table.bytes.count + body.bytes.count + 24)
            out.bytes = AuditBlock.header(firstSequence, firstAt)
            out.unsigned(UInt64(textCount))
            out.bytes += table.bytes
            out.bytes += body.bytes
            return out.bytes
        }
    }
}

// MARK: - Reading

extension AuditBlock {
    /// A payload that cannot be read: it was cut short or edited into something that is not a block.
    public struct Unreadable: Error, CustomStringConvertible {
        public var description: String
    }

    /// A block's events, read back.
    public struct Events: Sendable {
        public var events: [AuditEvent]
        /// The first event whose stored hash (or, for the last, the block's) is not what its
        /// content and the chain before it give: it, or the block, was altered.
        public var firstAltered: Int?
    }

    /// Reads the events with every chain field (sequence, previous hash, hash) and their ids.
    /// `hashing: false` skips the hashes (left empty) for reads that only count or filter.
    public func decode(blockID: Int64?, hashing: Bool = true) throws(Unreadable) -> Events {
        var scanner = try PayloadScanner(payload)
        let texts = scanner.texts.map { String(decoding: payload[$0], as: UTF8.self) }
        let digests = hashing ? scanner.digests() : []
        var events: [AuditEvent] = []
        events.reserveCapacity(count)
        // Wrapping arithmetic: an edited delta must make the block unreadable, not trap.
        var sequence = scanner.firstSequence &- 1
        var at = scanner.firstAt
        var chain = ChainHasher.start(
            instance: instance, previousHash: previousHash, header: Self.header(scanner.firstSequence, scanner.firstAt))
        var previous = previousHash
        var firstAltered: Int?
        var stored = PayloadScanner.Event()
        var fields = [String?](repeating: nil, count: 8)
        var lastDetailRefs: [Int] = []
        var lastDetail: [String: String] = [:]
        while !scanner.atEnd {
            try scanner.next(into: &stored)
            sequence = sequence &+ 1 &+ stored.sequenceDelta
            at = at &+ stored.atDelta
            // Consecutive events mostly carry the same detail: one dictionary for all of them.
            if stored.detail != lastDetailRefs {
                var detail = [String: String](minimumCapacity: stored.detail.count / 2)
                for pair in stride(from: 0, to: stored.detail.count, by: 2) {
                    detail[texts[stored.detail[pair]]] = texts[stored.detail[pair + 1]]
                }
                lastDetailRefs = stored.detail
                lastDetail = detail
            }
            for field in fields.indices { fields[field] = stored.fields[field].map { texts[$0] } }
            var event = AuditEvent(
                instance: instance, sequence: sequence, at: Date(milliseconds: at),
                kind: AuditEvent.Kind.allCases[stored.kind], action: texts[stored.action], service: fields[0],
                tokenID: fields[1], role: fields[2], database: fields[3], sessionID: fields[4], client: fields[5],
                sql: fields[6], sqlState: fields[7], rows: stored.rows, durationMicros: stored.duration,
                detail: lastDetail, id: blockID.map { Self.eventID(block: $0, index: events.count) })
            if hashing {
                chain = scanner.chain(after: chain, stored, digests: digests)
                event.previousHash = previous
                event.hash = chain.hex
                if firstAltered == nil, !chain.hasPrefix(stored.prefix) { firstAltered = events.count }
                previous = event.hash
            }
            events.append(event)
        }
        guard events.count == count, sequence == lastSequence else {
            throw Unreadable(description: "it holds \(events.count) events where its summary says \(count)")
        }
        if hashing, firstAltered == nil, previous != lastHash { firstAltered = events.count - 1 }
        return Events(events: events, firstAltered: firstAltered)
    }

    /// Whether the block is intact as stored: its events numbered on from ``firstSequence``
    /// without a gap, each matching its stored hash, the last ending at ``lastHash``, and its
    /// summary (``kinds``, ``counts``) what its events give. See ``intactKeys``.
    public var isIntact: Bool { intactKeys != nil }

    /// When the block ``isIntact``, the keys its events give (sorted, as ``keys`` is written),
    /// for the caller to hold against the keys stored for it; nil otherwise. The verification
    /// walk's fast path: nothing is decoded into events, and a block it does not vouch for is
    /// read in full to name what is wrong.
    public var intactKeys: [String]? {
        guard var scanner = try? PayloadScanner(payload), scanner.firstSequence == firstSequence else { return nil }
        let digests = scanner.digests()
        var chain = ChainHasher.start(
            instance: instance, previousHash: previousHash, header: Self.header(firstSequence, scanner.firstAt))
        var stored = PayloadScanner.Event()
        var events = 0
        var kinds: Int64 = 0
        var counts: [Int: Int] = [:]
        // Texts used as a service (field 0), a token (field 1), a session (field 4).
        var keyed: [Set<Int>] = [[], [], []]
        while !scanner.atEnd {
            guard (try? scanner.next(into: &stored)) != nil, stored.sequenceDelta == 0 else { return nil }
            kinds |= 1 << Int64(stored.kind)
            counts[stored.kind << 32 | stored.action, default: 0] += 1
            if let service = stored.fields[0] { keyed[0].insert(service) }
            if let token = stored.fields[1] { keyed[1].insert(token) }
            if let session = stored.fields[4] { keyed[2].insert(session) }
            chain = scanner.chain(after: chain, stored, digests: digests)
            guard chain.hasPrefix(stored.prefix) else { return nil }
            events += 1
        }
        guard events == count, lastSequence == firstSequence &+ Int64(count) &- 1, chain.hex == lastHash,
            kinds == self.kinds
        else { return nil }
        func text(_ index: Int) -> String { String(decoding: payload[scanner.texts[index]], as: UTF8.self) }
        guard Self.countsText(counts, action: text) == self.counts else { return nil }
        return
            (keyed[0].map { Self.key(service: text($0)) } + keyed[1].map { Self.key(token: text($0)) }
            + keyed[2].map { Self.key(session: text($0)) }).sorted()
    }

    /// The summary `events` (as read back from a block) give: what a block of them stores.
    public static func summary(
        of events: [AuditEvent], instance: String
    ) -> (kinds: Int64, counts: String, keys: [String]) {
        let block = reencoded(events, instance: instance)
        return (block.kinds, block.counts, block.keys)
    }

    /// Encodes events already linked (their sequences and hashes set), as they are: for tools
    /// and tests that rewrite a stored block. The summary is the events' own.
    public static func reencoded(_ events: [AuditEvent], instance: String) -> AuditBlock {
        precondition(!events.isEmpty && events.count <= maxEvents)
        let first = events[0]
        let last = events[events.count - 1]
        let firstAt = first.at.millisecondsSince1970
        var encoder = Encoder(
            start: ChainHasher.start(
                instance: instance, previousHash: first.previousHash, header: header(first.sequence, firstAt)))
        var expected = first.sequence
        for event in events {
            encoder.append(
                event, sequenceDelta: event.sequence &- expected, atMilliseconds: event.at.millisecondsSince1970,
                storedPrefix: event.hash)
            expected = event.sequence &+ 1
        }
        return AuditBlock(
            instance: instance, firstSequence: first.sequence, lastSequence: last.sequence, firstAt: firstAt,
            lastAt: last.at.millisecondsSince1970, count: events.count, previousHash: first.previousHash,
            lastHash: last.hash, kinds: encoder.kinds, counts: encoder.countsText(), keys: encoder.keys.sorted(),
            payload: encoder.payload(firstSequence: first.sequence, firstAt: firstAt))
    }

}

// MARK: - Reading

/// The one reader of a block's payload: its header, where each text of its table lies, and
/// its events field by field as text references, never making a string. ``AuditBlock/decode(blockID:hashing:)``
/// builds events from it and ``AuditBlock/intactKeys`` (the fast verification) only hashes and
/// counts, so the two cannot read the layout differently.
struct PayloadScanner {
    /// One event as stored.
    struct Event {
        var sequenceDelta: Int64 = 0
        var atDelta: Int64 = 0
        /// Its place in ``AuditEvent/Kind/allCases``.
        var kind = 0
        var action = 0
        /// The texts of service, token, role, database, session, client, SQL and SQLSTATE, when present.
        var fields = [Int?](repeating: nil, count: 8)
        var rows: Int64?
        var duration: Int64?
        /// Detail keys and values, alternating.
        var detail: [Int] = []
        /// Every text it uses, in the order the chain hashes their digests.
        var used: [Int] = []
        /// Its bytes (what the chain hashes) and the first bytes of its stored hash.
        var bytes: Range<Int> = 0..<0
        var prefix: ArraySlice<UInt8> = []
    }

    private var reader: ByteReader
    let firstSequence: Int64
    let firstAt: Int64
    /// Where each text of the table lies in the payload.
    let texts: [Range<Int>]
    /// Events read so far.
    private(set) var read = 0

    init(_ payload: [UInt8]) throws(AuditBlock.Unreadable) {
        reader = ByteReader(payload)
        guard reader.byte() == AuditBlock.formatVersion, let firstSequence = reader.signed(),
            let firstAt = reader.signed(), let textCount = reader.unsigned(), textCount <= UInt64(payload.count)
        else { throw AuditBlock.Unreadable(description: "its header is not a block's") }
        var texts: [Range<Int>] = []
        texts.reserveCapacity(Int(textCount))
        for _ in 0..<textCount {
            guard let length = reader.unsigned(), length <= UInt64(payload.count - reader.offset) else {
                throw AuditBlock.Unreadable(description: "its text table is cut short")
            }
            texts.append(reader.offset..<reader.offset + Int(length))
            reader.offset += Int(length)
        }
        (self.firstSequence, self.firstAt, self.texts) = (firstSequence, firstAt, texts)
    }

    var atEnd: Bool { reader.atEnd }

    /// The 8-byte digest of each text, from its bytes as stored.
    func digests() -> [UInt64] {
        reader.bytes.withUnsafeBytes { all in
            texts.map { ChainHasher.digest(UnsafeRawBufferPointer(rebasing: all[$0])) }
        }
    }

    /// The chain's hash after `event`, read by this scanner (see ``AuditBlock``); `digests` are
    /// ``digests()``.
    func chain(after previous: ChainHasher.Hash, _ event: Event, digests: [UInt64]) -> ChainHasher.Hash {
        reader.bytes.withUnsafeBytes { all in
            ChainHasher.next(
                after: previous, event: UnsafeRawBufferPointer(rebasing: all[event.bytes]), texts: event.used,
                digests: digests)
        }
    }

    /// Reads the next event into `event` (its arrays reused).
    mutating func next(into event: inout Event) throws(AuditBlock.Unreadable) {
        read += 1
        var cutShort: AuditBlock.Unreadable {
            AuditBlock.Unreadable(description: "event \(read) of the block is cut short")
        }
        let start = reader.offset
        event.used.removeAll(keepingCapacity: true)
        event.detail.removeAll(keepingCapacity: true)
        guard let sequenceDelta = reader.signed(), let atDelta = reader.signed(), let kind = reader.byte(),
            Int(kind) < AuditEvent.Kind.allCases.count, let action = reader.unsigned(), let mask = reader.unsigned()
        else { throw cutShort }
        (event.sequenceDelta, event.atDelta, event.kind) = (sequenceDelta, atDelta, Int(kind))
        event.action = try text(action)
        event.used.append(event.action)
        for field in 0..<8 {
            if mask & (1 << UInt64(field)) == 0 {
                event.fields[field] = nil
            } else {
                guard let reference = reader.unsigned() else { throw cutShort }
                let text = try text(reference)
                event.fields[field] = text
                event.used.append(text)
            }
        }
        event.rows = nil
        event.duration = nil
        if mask & (1 << 8) != 0 {
            guard let rows = reader.signed() else { throw cutShort }
            event.rows = rows
        }
        if mask & (1 << 9) != 0 {
            guard let duration = reader.signed() else { throw cutShort }
            event.duration = duration
        }
        guard let pairs = reader.unsigned(), pairs <= UInt64(reader.bytes.count) else { throw cutShort }
        for _ in 0..<(2 * pairs) {
            guard let reference = reader.unsigned() else { throw cutShort }
            let text = try text(reference)
            event.detail.append(text)
            event.used.append(text)
        }
        event.bytes = start..<reader.offset
        guard let prefix = reader.raw(AuditBlock.prefixBytes) else { throw cutShort }
        event.prefix = prefix
    }

    private func text(_ reference: UInt64) throws(AuditBlock.Unreadable) -> Int {
        guard reference < UInt64(texts.count) else {
            throw AuditBlock.Unreadable(description: "an event refers to a text the block does not have")
        }
        return Int(reference)
    }
}

// MARK: - Hashing

/// The chain's hashing inside blocks (see ``AuditBlock``).
enum ChainHasher {
    typealias Hash = SHA256Digest

    static func start(instance: String, previousHash: String, header: [UInt8]) -> Hash {
        var hasher = SHA256()
        hasher.update(data: Array("rolegate-audit-block-v1\0".utf8))
        hasher.update(data: Array(instance.utf8) + [0])
        hasher.update(data: Array(previousHash.utf8) + [0])
        hasher.update(data: header)
        return hasher.finalize()
    }

    /// `hᵢ` from `hᵢ₋₁`, the event's bytes and the digests of the texts it uses.
    static func next(after previous: Hash, event: UnsafeRawBufferPointer, texts: [Int], digests: [UInt64]) -> Hash {
        var hasher = SHA256()
        previous.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        hasher.update(bufferPointer: event)
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: max(texts.count, 1)) { buffer in
            for (index, text) in texts.enumerated() { buffer[index] = digests[text].littleEndian }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer.baseAddress, count: 8 * texts.count))
        }
        return hasher.finalize()
    }

    /// A text's digest: the first 8 bytes of its SHA-256.
    static func digest(_ text: String) -> UInt64 {
        var text = text
        return text.withUTF8 { digest(UnsafeRawBufferPointer($0)) }
    }

    static func digest(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        SHA256.hash(data: bytes).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }
}

extension SHA256Digest {
    /// Lowercase hex, as ``AuditChain`` writes hashes.
    var hex: String {
        withUnsafeBytes { bytes in
            String(unsafeUninitializedCapacity: 2 * bytes.count) { out in
                let digits: StaticString = "0123456789abcdef"
                var at = 0
                for byte in bytes {
                    out[at] = digits.utf8Start[Int(byte >> 4)]
                    out[at + 1] = digits.utf8Start[Int(byte & 0x0F)]
                    at += 2
                }
                return at
            }
        }
    }

    func withPrefix<R>(_ count: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
    }

    func hasPrefix(_ prefix: ArraySlice<UInt8>) -> Bool {
        withUnsafeBytes { bytes in prefix.enumerated().allSatisfy { bytes[$0.offset] == $0.element } }
    }
}

// MARK: - Bytes

/// Writes varints (LEB128; signed numbers zigzag-encoded) and length-prefixed texts.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func unsigned(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func signed(_ value: Int64) {
        unsigned(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    mutating func text(_ text: String) {
        var text = text
        text.withUTF8 { utf8 in
            unsigned(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    /// The first `count` bytes of a hex digest, as bytes.
    mutating func hexPrefix(_ hex: String, bytes count: Int) {
        var hex = hex
        hex.withUTF8 { utf8 in
            for index in 0..<count {
                bytes.append(ByteReader.nibble(utf8[2 * index]) << 4 | ByteReader.nibble(utf8[2 * index + 1]))
            }
        }
    }
}

struct ByteReader {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { offset >= bytes.count }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func unsigned() -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count, shift < 64 {
            let byte = bytes[offset]
            offset += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
        return nil
    }

    mutating func signed() -> Int64? {
        guard let raw = unsigned() else { return nil }
        return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
    }

    mutating func raw(_ count: Int) -> ArraySlice<UInt8>? {
        guard count <= bytes.count - offset else { return nil }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    static func nibble(_ hex: UInt8) -> UInt8 {
        switch hex {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): hex - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): hex - UInt8(ascii: "a") + 10
        default: 0
        }
    }
}
