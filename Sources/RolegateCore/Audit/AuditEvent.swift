import Crypto
public import Foundation

/// One audit record: an authentication, a session start or end, a statement, a token
/// lifecycle change or a policy change. Never holds a token secret or a credential.
///
/// Events form one hash chain per writer ``instance``: each has the next ``sequence``
/// number, the ``previousHash`` of the event before it, and its own ``hash`` over the
/// canonical encoding (``AuditChain/canonicalEncoding(_:)``) of everything else.
public struct AuditEvent: Sendable, Equatable {
    /// Audit blocks store a kind by its place in `allCases`: add new kinds at the end.
    public enum Kind: String, Sendable, CaseIterable, Codable {
        case auth, session, statement, token, policy
        /// Written by retention pruning: records the hash at the cut.
        case checkpoint
        /// An access request's transitions: requested, approved, denied, expired, revoked, finished, used.
        case access
    }

    /// The store's row id: a global order for `--follow`; not part of the hash.
    public var id: Int64?
    public var instance: String
    public var sequence: Int64
    public var at: Date
    public var kind: Kind
    /// What happened: `allowed`/`refused` (auth), `start`/`end` (session), `ok`/`error`
    /// (statement), `issued`/`rotated`/`revoked`/`expired` (token), `applied`/`drift`
    /// (policy), `pruned` (checkpoint).
    public var action: String
    public var service: String?
    public var tokenID: String?
    public var role: String?
    public var database: String?
    /// Groups a session's events: the session start, its statements and its end.
    public var sessionID: String?
    /// The client's address.
    public var client: String?
    /// Statement text as sent, or the SQL a policy change executed (credentials masked).
    public var sql: String?
    public var sqlState: String?
    /// Rows returned or affected (from CommandComplete).
    public var rows: Int64?
    public var durationMicros: Int64?
    /// Everything else, e.g. `tls`, `method`, `reason`, `backend_pid`, `bytes_in`, `command`.
    public var detail: [String: String]
    public var previousHash: String
    public var hash: String

    public init(
        instance: String = "", sequence: Int64 = 0, at: Date = Date(), kind: Kind, action: String,
        service: String? = nil, tokenID: String? = nil, role: String? = nil, database: String? = nil,
        sessionID: String? = nil, client: String? = nil, sql: String? = nil, sqlState: String? = nil,
        rows: Int64? = nil, durationMicros: Int64? = nil, detail: [String: String] = [:], previousHash: String = "",
        hash: String = "", id: Int64? = nil
    ) {
        self.id = id
        self.instance = instance
        self.sequence = sequence
        self.at = at
        self.kind = kind
        self.action = action
        self.service = service
        self.tokenID = tokenID
        self.role = role
        self.database = database
        self.sessionID = sessionID
        self.client = client
        self.sql = sql
        self.sqlState = sqlState
        self.rows = rows
        self.durationMicros = durationMicros
        self.detail = detail
        self.previousHash = previousHash
        self.hash = hash
    }
}

/// The hash chain: how an event is encoded for hashing, how a batch is linked to the
/// chain's head, and how a stored chain is checked.
public enum AuditChain {
    /// The `previousHash` of an instance's first event.
    public static let genesis = String(repeating: "0", count: 64)

    /// A byte-exact, unambiguous encoding of every field but `hash` and `id`: each field
    /// as `name=<length>:<value>;` in a fixed order, absent values as `name=-;`, times as
    /// milliseconds since 1970, and `detail` as its count, then each key and value
    /// (sorted by key) as their own fields.
    public static func canonicalEncoding(_ e: AuditEvent) -> [UInt8] {
        withCanonicalEncoding(e) { Array($0) }
    }

    /// Calls `body` with the canonical encoding of `e`, written into one temporary buffer:
    /// the audit writer hashes every event, so no array, string or sorted copy is made per field.
    static func withCanonicalEncoding<R>(_ e: AuditEvent, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        withCanonicalEncoding(
            e, instance: e.instance, sequence: e.sequence, atMilliseconds: e.at.millisecondsSince1970,
            previousHash: e.previousHash, body)
    }

    /// The canonical encoding `e` has once its chain fields are the ones given.
    static func withCanonicalEncoding<R>(
        _ e: AuditEvent, instance: String, sequence: Int64, atMilliseconds: Int64, previousHash: String,
        _ body: (UnsafeRawBufferPointer) -> R
    ) -> R {
        func size(_ text: String?) -> Int { text?.utf8.count ?? 0 }
        var capacity = CanonicalWriter.fixedBound + size(instance) + size(e.kind.rawValue) + size(e.action)
        capacity += size(e.service) + size(e.tokenID) + size(e.role) + size(e.database) + size(e.sessionID)
        capacity += size(e.client) + size(e.sql) + size(e.sqlState) + size(previousHash)
        for (key, value) in e.detail { capacity += CanonicalWriter.detailBound + key.utf8.count + value.utf8.count }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buffer in
            var out = CanonicalWriter(base: buffer.baseAddress!, capacity: capacity)
            out.raw("rolegate-audit-v1;")
            out.field("instance", instance)
            out.field("sequence", sequence)
            out.field("at", atMilliseconds)
            out.field("kind", e.kind.rawValue)
            out.field("action", e.action)
            out.field("service", e.service)
            out.field("token_id", e.tokenID)
            out.field("role", e.role)
            out.field("database", e.database)
            out.field("session_id", e.sessionID)
            out.field("client", e.client)
            out.field("sql", e.sql)
            out.field("sql_state", e.sqlState)
            out.field("rows", e.rows)
            out.field("duration_us", e.durationMicros)
            out.field("detail", Int64(e.detail.count))
            e.detail.forEachInKeyOrder { key, value in
                out.field("detail.key", key)
                out.field("detail.value", value)
            }
            out.field("previous_hash", previousHash)
            return body(UnsafeRawBufferPointer(start: buffer.baseAddress, count: out.count))
        }
    }

    /// Writes fields into a buffer sized by the caller (``fixedBound`` plus the text fields'
    /// byte counts, ``detailBound`` more per detail pair).
    private struct CanonicalWriter {
        /// The prefix, every field name, and per field `=`, `:`, `;` and two 20-digit numbers
        /// (a length and an Int64 value), with room to spare.
        static let fixedBound = 1024
        /// One detail pair's names and separators and two lengths.
        static let detailBound = 96

        let base: UnsafeMutablePointer<UInt8>
        let capacity: Int
        var count = 0

        init(base: UnsafeMutablePointer<UInt8>, capacity: Int) {
            self.base = base
            self.capacity = capacity
        }

        mutating func raw(_ text: StaticString) {
            bytes(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }

        private mutating func bytes(_ source: UnsafeRawBufferPointer) {
            precondition(count + source.count <= capacity, "canonical encoding exceeds its bound")
            guard let start = source.baseAddress, !source.isEmpty else { return }
            (base + count).update(from: start.assumingMemoryBound(to: UInt8.self), count: source.count)
            count += source.count
        }

        private mutating func byte(_ value: UInt8) {
            precondition(count < capacity, "canonical encoding exceeds its bound")
            base[count] = value
            count += 1
        }

        /// `name=<byte count>:<value>;`, or `name=-;` when absent.
        mutating func field(_ name: StaticString, _ value: String?) {
            raw(name)
            guard var value else { return raw("=-;") }
            value.withUTF8 { utf8 in
                byte(UInt8(ascii: "="))
                decimal(Int64(utf8.count))
                byte(UInt8(ascii: ":"))
                bytes(UnsafeRawBufferPointer(utf8))
                byte(UInt8(ascii: ";"))
            }
        }

        /// A number as the field of its decimal text.
        mutating func field(_ name: StaticString, _ value: Int64?) {
            raw(name)
            guard let value else { return raw("=-;") }
            byte(UInt8(ascii: "="))
            decimal(Int64(Self.digits(value)))
            byte(UInt8(ascii: ":"))
            decimal(value)
            byte(UInt8(ascii: ";"))
        }

        /// The length of `value`'s decimal text, sign included.
        private static func digits(_ value: Int64) -> Int {
            var magnitude = value.magnitude
            var count = value < 0 ? 2 : 1
            while magnitude >= 10 {
                magnitude /= 10
                count += 1
            }
            return count
        }

        /// `value` in decimal, as `String(value)` writes it.
        private mutating func decimal(_ value: Int64) {
            let length = Self.digits(value)
            precondition(count + length <= capacity, "canonical encoding exceeds its bound")
            var magnitude = value.magnitude
            var at = count + length
            repeat {
                at -= 1
                base[at] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 { base[count] = UInt8(ascii: "-") }
            count += length
        }
    }

    public static func hash(_ event: AuditEvent) -> String {
        hash(
            event, instance: event.instance, sequence: event.sequence,
            atMilliseconds: event.at.millisecondsSince1970, previousHash: event.previousHash)
    }

    /// The hash `event` has once its chain fields are the ones given.
    static func hash(
        _ event: AuditEvent, instance: String, sequence: Int64, atMilliseconds: Int64, previousHash: String
    ) -> String {
        var hasher = SHA256()
        withCanonicalEncoding(
            event, instance: instance, sequence: sequence, atMilliseconds: atMilliseconds, previousHash: previousHash
        ) { hasher.update(bufferPointer: $0) }
        return hasher.finalize().hex
    }

    /// Links `events` after a chain whose last event is `head` (nil: a new chain): sets
    /// instance, sequence, previous hash and hash. Times are truncated to milliseconds, as stored.
    public static func link(
        _ events: [AuditEvent], instance: String, after head: (sequence: Int64, hash: String)?
    )
        -> [AuditEvent]
    {
        link(events, instance: instance, at: positions(events, instance: instance, after: head))
    }

    /// `events` with the chain fields of their `positions` (from ``positions(_:instance:after:)``).
    public static func link(_ events: [AuditEvent], instance: String, at positions: [Position]) -> [AuditEvent] {
        zip(events, positions).map { event, position in
            var e = event
            e.instance = instance
            e.sequence = position.sequence
            e.at = Date(milliseconds: position.atMilliseconds)
            e.previousHash = position.previousHash
            e.hash = position.hash
            return e
        }
    }

    /// Where ``link(_:instance:after:)`` puts each event in the chain, without copying the
    /// events: for a writer that only stores them (a linked copy of a batch retains a dozen
    /// strings per event and is released again after the commit).
    public static func positions(
        _ events: [AuditEvent], instance: String, after head: (sequence: Int64, hash: String)?
    ) -> [Position] {
        var sequence = head?.sequence ?? 0
        var previous = head?.hash ?? genesis
        var positions: [Position] = []
        positions.reserveCapacity(events.count)
        for event in events {
            sequence += 1
            let at = event.at.millisecondsSince1970
            let hash = hash(
                event, instance: instance, sequence: sequence, atMilliseconds: at, previousHash: previous)
            positions.append(Position(sequence: sequence, atMilliseconds: at, previousHash: previous, hash: hash))
            previous = hash
        }
        return positions
    }

    /// An event's chain fields once linked (its instance is the chain's).
    public struct Position: Sendable, Equatable {
        public var sequence: Int64
        /// Its time as stored: milliseconds since 1970.
        public var atMilliseconds: Int64
        public var previousHash: String
        public var hash: String
    }

    /// One problem `verify` found.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var instance: String
        public var sequence: Int64
        public var id: Int64?
        public var message: String

        public init(instance: String, sequence: Int64, id: Int64?, message: String) {
            self.instance = instance
            self.sequence = sequence
            self.id = id
            self.message = message
        }

        public var description: String {
            "chain \(instance), event #\(sequence)\(id.map { " (id \($0))" } ?? ""): \(message)"
        }
    }

    /// Checks one instance's chain; see ``ChainVerifier``. `events` in sequence order.
    public static func verify(
        instance: String, events: [AuditEvent], head: (sequence: Int64, hash: String)?
    ) -> Problem? {
        var verifier = ChainVerifier(instance: instance)
        for event in events {
            if let problem = verifier.next(event) { return problem }
        }
        return verifier.finish(head: head)
    }
}

/// Walks one instance's chain event by event (in sequence order, so a chain of any length
/// can be read in pages) and stops at the first problem.
///
/// An altered event no longer matches its hash; a deleted one leaves a gap in the sequence
/// (or a head that points past the end); reordered or replaced events break the
/// previous-hash links. A chain may start after #1 only where a checkpoint records the cut.
/// Its arithmetic on sequence numbers wraps: a number edited to an extreme is reported as what
/// it breaks, never a trap that would end the verification without a word.
public struct ChainVerifier: Sendable {
    public let instance: String
    /// The first event's sequence and previous hash.
    private var first: (sequence: Int64, previousHash: String)?
    /// The sequence the next event must have (once one was checked).
    public private(set) var expectedSequence: Int64 = 0
    private var previous = ""
    private var cuts: Set<String> = []
    public private(set) var count = 0

    public init(instance: String) {
        self.instance = instance
    }

    /// The hash of the last event checked (the chain's previous hash for the next).
    public var lastHash: String { previous }

    /// Checks `event`, the next in sequence order. `hashChecked`: its reader already recomputed
    /// its hash from its content and the chain before it (an audit block does), so only the
    /// sequence and the links are checked here.
    public mutating func next(_ event: AuditEvent, hashChecked: Bool = false) -> AuditChain.Problem? {
        func problem(_ sequence: Int64, _ message: String) -> AuditChain.Problem {
            AuditChain.Problem(instance: instance, sequence: sequence, id: event.id, message: message)
        }
        if first == nil {
            first = (event.sequence, event.previousHash)
            expectedSequence = event.sequence
            previous = event.previousHash
        }
        if event.sequence != expectedSequence {
            if event.sequence < expectedSequence {
                return problem(event.sequence, "appears out of order")
            }
            return problem(
                expectedSequence,
                event.sequence &- 1 == expectedSequence
                    ? "is missing" : "is missing (and so are the events up to #\(event.sequence &- 1))")
        }
        if event.instance != instance { return problem(event.sequence, "was moved from chain \(event.instance)") }
        if !hashChecked, AuditChain.hash(event) != event.hash {
            return problem(event.sequence, "was altered (its content no longer matches its hash)")
        }
        if event.previousHash != previous {
            return problem(
                event.sequence,
                "does not follow #\(event.sequence &- 1) (an event before it was altered, replaced or reordered)")
        }
        if event.kind == .checkpoint, let through = event.detail["pruned_through"],
            let hash = event.detail["hash_at_cut"]
        {
            cuts.insert("\(through)|\(hash)")
        }
        previous = event.hash
        expectedSequence &+= 1
        count += 1
        return nil
    }

    /// Checks a whole block of `count` events its reader vouched for inside (``AuditBlock/isIntact``:
    /// numbered without a gap, each matching its hash, ending at `lastHash`): only that it
    /// follows on from the events before it.
    public mutating func nextBlock(
        firstSequence: Int64, count blockCount: Int, previousHash: String, lastHash: String
    ) -> AuditChain.Problem? {
        if first == nil {
            first = (firstSequence, previousHash)
            expectedSequence = firstSequence
            previous = previousHash
        }
        func problem(_ sequence: Int64, _ message: String) -> AuditChain.Problem {
            AuditChain.Problem(instance: instance, sequence: sequence, id: nil, message: message)
        }
        if firstSequence != expectedSequence {
            if firstSequence < expectedSequence { return problem(firstSequence, "appears out of order") }
            return problem(
                expectedSequence,
                firstSequence &- 1 == expectedSequence
                    ? "is missing" : "is missing (and so are the events up to #\(firstSequence &- 1))")
        }
        if previousHash != previous {
            return problem(
                firstSequence,
                "does not follow #\(firstSequence &- 1) (an event before it was altered, replaced or reordered)")
        }
        previous = lastHash
        expectedSequence &+= Int64(blockCount)
        count += blockCount
        return nil
    }

    /// After the last event: checks where the chain starts and that it ends where the
    /// store's chain head says.
    public func finish(head: (sequence: Int64, hash: String)?) -> AuditChain.Problem? {
        guard let first else {
            if let head, head.sequence > 0 {
                return AuditChain.Problem(
                    instance: instance, sequence: 1, id: nil,
                    message: "is missing, as are all events up to #\(head.sequence) the chain head records")
            }
            return nil
        }
        if first.sequence != 1, !cuts.contains("\(first.sequence &- 1)|\(first.previousHash)") {
            return AuditChain.Problem(
                instance: instance, sequence: 1, id: nil,
                message:
                    "is missing (events #1 to #\(first.sequence &- 1) are gone and no checkpoint records pruning them)")
        }
        let last = expectedSequence &- 1
        if let head {
            if head.sequence > last {
                return AuditChain.Problem(
                    instance: instance, sequence: last &+ 1, id: nil,
                    message: head.sequence == last &+ 1
                        ? "is missing (the chain head records it as the last event)"
                        : "is missing, as are the events up to #\(head.sequence) the chain head records")
            }
            if head.sequence == last, head.hash != previous {
                return AuditChain.Problem(
                    instance: instance, sequence: last, id: nil,
                    message: "differs from the last event the chain head recorded")
            }
        }
        return nil
    }
}
