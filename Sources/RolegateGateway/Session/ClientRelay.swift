package import NIOCore
package import PostgresWire
import RolegateAudit

/// The relay phase of a client session, client to server: which of the client's bytes go to
/// the server now, which wait, and when the session ends. Pure: the session handler gives it
/// what the client sent and performs the ``Step`` it returns (see
/// ``ClientSessionMachine/clientBytes(_:limits:auditing:auditAccepting:ledger:now:)``).
///
/// What it decides:
/// - **Message types.** Only what PostgreSQL accepts after its login passes: anything else is a
///   protocol violation, refused here as PostgreSQL would (`08P01`, then close), so a client's
///   garbage never costs the pooled server connection.
/// - **Answers owed.** Every message it lets through is counted in the server connection's
///   ``RequestLedger`` (the pool takes a connection back only when nothing is owed).
/// - **Statements and the audit.** Under `on_failure: block`, a statement (Query, Execute,
///   FunctionCall) is not sent while the audit queue is full: it is held for up to
///   ``auditWaitLimit``, then the session ends with `53000`. The messages before it still go.
/// - **Large messages** (``WireStreaming/threshold`` and over) pass through as their bytes
///   arrive, after their head went to the audit.
/// - **Terminate** ends the session; the server connection is then free to go back to the pool.
package struct ClientRelay {
    /// How long a statement waits for room in a full audit queue before the session ends.
    package static let auditWaitLimit: TimeAmount = .seconds(2)
    /// How often a held statement looks again.
    package static let auditRetry: TimeAmount = .milliseconds(10)

    /// What to do with the front of the client's buffer, in order: ``continued`` bytes of a large
    /// message passing through, then ``complete`` whole messages, then the first ``startedBytes``
    /// of a large message that starts here (``started``). Whatever follows stays buffered.
    package struct Step: Equatable {
        package var continued = 0
        package var complete = 0
        package var started: WireStreaming.Head?
        package var startedBytes = 0
        package var next = Next.readMore

        package static func == (lhs: Step, rhs: Step) -> Bool {
            lhs.continued == rhs.continued && lhs.complete == rhs.complete && lhs.started?.type == rhs.started?.type
                && lhs.started?.totalLength == rhs.started?.totalLength && lhs.startedBytes == rhs.startedBytes
                && lhs.next == rhs.next
        }
    }

    package enum Next: Equatable {
        /// Everything that could go went: wait for more bytes.
        case readMore
        /// A statement waits for room in the audit queue: look again after this long (its bytes stay buffered).
        case hold(TimeAmount)
        /// The client sent Terminate (not forwarded): close; the server connection may be reused.
        case terminate
        /// The session ends with this FATAL error; `reason` is the audit's end reason.
        case end(ErrorFields, reason: String)
    }

    package init() {}

    /// Bytes of a large message still to pass through.
    package private(set) var streaming = WireStreaming()
    /// Since when a statement waits for room in the audit queue.
    package private(set) var heldSince: NIODeadline?

    /// In the middle of a large message: the server connection holds part of it, so it cannot
    /// serve anyone else.
    package var insideMessage: Bool { streaming.remaining > 0 }

    /// Message types a client may send once its session relays: PostgreSQL's frontend messages
    /// other than the startup packet and authentication responses.
    package static func allowed(_ type: UInt8) -> Bool {
        switch type {
        case UInt8(ascii: "Q"), UInt8(ascii: "P"), UInt8(ascii: "B"), UInt8(ascii: "E"), UInt8(ascii: "D"),
            UInt8(ascii: "C"), UInt8(ascii: "S"), UInt8(ascii: "H"), UInt8(ascii: "F"), UInt8(ascii: "d"),
            UInt8(ascii: "c"), UInt8(ascii: "f"), UInt8(ascii: "X"):
            true
        default: false
        }
    }

    /// Messages that start a statement the audit records.
    package static func startsStatement(_ type: UInt8) -> Bool {
        type == UInt8(ascii: "Q") || type == UInt8(ascii: "E") || type == UInt8(ascii: "F")
    }

    /// Decides what happens to `buffer` (the client's unprocessed bytes) and counts what it lets
    /// through in `ledger`. `auditing`: statements are recorded; `auditAccepting` is asked only
    /// when a statement is about to go; `now` only when one must wait.
    package mutating func clientBytes(
        _ buffer: ByteBuffer, limits: WireLimits, auditing: Bool, auditAccepting: () -> Bool,
        ledger: inout RequestLedger, now: @autoclosure () -> NIODeadline
    ) -> Step {
        var step = Step()
        var rest = buffer
        if streaming.remaining > 0 {
            step.continued = streaming.take(rest.readableBytes)
            rest.moveReaderIndex(forwardBy: step.continued)
            if rest.readableBytes == 0 { return step }
        }
        var stop: Next?
        var auditFull = false
        do {
            step.complete = try WireFraming.scanMessages(rest, limits: limits) { type, _, _ in
                guard Self.allowed(type) else {
                    stop = .end(Self.invalidType(type), reason: "error: protocol violation")
                    return false
                }
                if type == UInt8(ascii: "X") {
                    stop = .terminate
                    return false
                }
                if auditing, Self.startsStatement(type), !auditAccepting() {
                    auditFull = true
                    return false
                }
                ledger.sent(type)
                return true
            }
        } catch {
            step.next = .end(ErrorFields.fatal("08P01", error.description), reason: "error: protocol violation")
            return step
        }
        rest.moveReaderIndex(forwardBy: step.complete)
        if stop == nil, !auditFull, let head = WireStreaming.head(of: rest, limits: limits) {
            if !Self.allowed(head.type) {
                stop = .end(Self.invalidType(head.type), reason: "error: protocol violation")
            } else if auditing, Self.startsStatement(head.type), !auditAccepting() {
                auditFull = true
            } else {
                streaming.begin(messageBytes: head.totalLength)
                ledger.sent(head.type)
                step.started = head
                step.startedBytes = streaming.take(rest.readableBytes)
            }
        }
        if auditFull {
            step.next = hold(now())
        } else {
            heldSince = nil
            step.next = stop ?? .readMore
        }
        return step
    }

    private mutating func hold(_ now: NIODeadline) -> Next {
        let since = heldSince ?? now
        guard now - since < Self.auditWaitLimit else {
            heldSince = nil
            return .end(
                ErrorFields.fatal("53000", AuditWriter.statementsRefused), reason: "error: audit log unavailable")
        }
        heldSince = since
        return .hold(Self.auditRetry)
    }

    private static func invalidType(_ type: UInt8) -> ErrorFields {
        let shown =
            (0x20..<0x7f).contains(type) ? "'\(Character(Unicode.Scalar(type)))'" : "0x\(String(type, radix: 16))"
        return ErrorFields.fatal("08P01", "invalid frontend message type \(shown) during a session")
    }
}
