import NIOCore
import PostgresWire
import RolegateTestSupport
import Testing

@testable import RolegateGateway
@testable import RolegateTokens

/// The relay's decisions, both ways, without sockets: what is forwarded, what waits, what
/// ends the session, what is owed by the server, and when a server connection may be reused.
@Suite(.ownThreads) struct RelayMachineTests {
    func message(_ type: Character, _ text: String = "") -> ByteBuffer {
        Backend.message(type) { if !text.isEmpty { $0.writeNullTerminatedString(text) } }.encoded()
    }

    func bytes(_ messages: ByteBuffer...) -> ByteBuffer {
        var all = ByteBuffer()
        for var message in messages { all.writeBuffer(&message) }
        return all
    }

    /// A message of `total` bytes (type and length included) of which only `present` are here.
    func largeMessage(_ type: Character, total: Int, present: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(type.asciiValue!)
        buffer.writeInteger(Int32(total - 1))
        buffer.writeRepeatingByte(UInt8(ascii: "x"), count: present - 5)
        return buffer
    }

    let limits = WireLimits()
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    // MARK: - Client to server

    @Test func forwardsWholeMessagesAndCountsWhatIsOwed() {
        var relay = ClientRelay()
        var ledger = RequestLedger()
        let parse = message("P", "select 1")
        let input = bytes(
            message("Q", "select 1"), parse, message("B"), message("E"), message("S"), message("F"))
        var partial = input
        partial.writeBytes([UInt8(ascii: "Q"), 0, 0])  // the start of the next message
        let step = relay.clientBytes(
            partial, limits: limits, auditing: true, auditAccepting: { true }, ledger: &ledger, now: t0)
        #expect(step.complete == input.readableBytes)
        #expect(step.continued == 0 && step.started == nil && step.next == .readMore)
        // Query, Sync and FunctionCall are each answered by one ReadyForQuery; the batch is closed.
        #expect(ledger.owed == 3 && !ledger.batchOpen)
    }

    @Test func terminateStopsThereAndIsNotForwarded() {
        var relay = ClientRelay()
        var ledger = RequestLedger()
        let query = message("Q", "select 1")
        let step = relay.clientBytes(
            bytes(query, message("X"), message("Q", "select 2")), limits: limits, auditing: false,
            auditAccepting: { true }, ledger: &ledger, now: t0)
        #expect(step.complete == query.readableBytes)
        #expect(step.next == .terminate)
        #expect(ledger.owed == 1)
    }

    @Test func messageTypesOutsideTheRelayPhaseEndTheSession() throws {
        for type: Character in ["p", "Z", "R", "?"] {
            var relay = ClientRelay()
            var ledger = RequestLedger()
            let query = message("Q", "select 1")
            let step = relay.clientBytes(
                bytes(query, message(type, "x")), limits: limits, auditing: false, auditAccepting: { true },
                ledger: &ledger, now: t0)
            #expect(step.complete == query.readableBytes, "the messages before it still go")
            guard case .end(let fields, let reason) = step.next else {
                Issue.record("\(type): \(step.next)")
                continue
            }
            #expect(fields.code == "08P01" && fields.severity == "FATAL")
            #expect(fields.message.contains("'\(type)'"))
            #expect(reason == "error: protocol violation")
        }
    }

    @Test func brokenFramingEndsTheSession() {
        var relay = ClientRelay()
        var ledger = RequestLedger()
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(ascii: "Q"))
        buffer.writeInteger(Int32(2))  // shorter than its own length field
        let step = relay.clientBytes(
            buffer, limits: limits, auditing: false, auditAccepting: { true }, ledger: &ledger, now: t0)
        guard case .end(let fields, _) = step.next else {
            Issue.record("\(step.next)")
            return
        }
        #expect(fields.code == "08P01")
        #expect(step.complete == 0 && ledger.idle)
    }

    @Test func aFullAuditQueueHoldsStatementsThenEndsTheSession() {
        var relay = ClientRelay()
        var ledger = RequestLedger()
        let parse = message("P", "select 1")
        let input = bytes(parse, message("B"), message("E"), message("S"))
        var asked = 0
        let full: () -> Bool = {
            asked += 1
            return false
        }
        // Parse and Bind go; Execute waits for room.
        let first = relay.clientBytes(
            input, limits: limits, auditing: true, auditAccepting: full, ledger: &ledger, now: t0)
        #expect(first.complete == parse.readableBytes + message("B").readableBytes)
        #expect(first.next == .hold(ClientRelay.auditRetry))
        #expect(asked == 1)
        var rest = input
        rest.moveReaderIndex(forwardBy: first.complete)
        // Still full a second later: held again.
        let second = relay.clientBytes(
            rest, limits: limits, auditing: true, auditAccepting: full, ledger: &ledger, now: t0 + .seconds(1))
        #expect(second.complete == 0 && second.next == .hold(ClientRelay.auditRetry))
        // Past the limit: the session ends, the statement never went.
        let third = relay.clientBytes(
            rest, limits: limits, auditing: true, auditAccepting: full, ledger: &ledger,
            now: t0 + ClientRelay.auditWaitLimit + .milliseconds(1))
        guard case .end(let fields, let reason) = third.next else {
            Issue.record("\(third.next)")
            return
        }
        #expect(fields.code == "53000" && reason == "error: audit log unavailable")
        #expect(third.complete == 0)
    }

    @Test func roomInTheQueueAgainLetsTheHeldStatementGo() {
        var relay = ClientRelay()
        var ledger = RequestLedger()
        let query = message("Q", "select 1")
        let held = relay.clientBytes(
            query, limits: limits, auditing: true, auditAccepting: { false }, ledger: &ledger, now: t0)
        #expect(held.next == .hold(ClientRelay.auditRetry) && ledger.idle)
        let sent = relay.clientBytes(
            query, limits: limits, auditing: true, auditAccepting: { true }, ledger: &ledger, now: t0 + .seconds(1))
        #expect(sent.complete == query.readableBytes && sent.next == .readMore)
        #expect(relay.heldSince == nil && ledger.owed == 1)
        // Without the audit of statements, the queue is never asked.
        var unaudited = ClientRelay()
        let step = unaudited.clientBytes(
            query, limits: limits, auditing: false,
            auditAccepting: {
                Issue.record("asked")
                return false
            }, ledger: &ledger, now: t0)
        #expect(step.complete == query.readableBytes)
    }

    @Test func aLargeMessagePassesThroughAsItArrives() {
        var relay = ClientRelay()
        var ledger = RequestLedger()
        let total = 3 * WireStreaming.threshold
        let sync = message("S")
        let head = largeMessage("B", total: total, present: WireStreaming.prefixLength + 100)
        var first = bytes(message("P", "select $1"), head)
        let parseLength = message("P", "select $1").readableBytes
        let step = relay.clientBytes(
            first, limits: limits, auditing: true, auditAccepting: { true }, ledger: &ledger, now: t0)
        #expect(step.complete == parseLength)
        #expect(step.started?.type == UInt8(ascii: "B") && step.started?.totalLength == total)
        #expect(step.startedBytes == head.readableBytes)
        #expect(relay.insideMessage && ledger.batchOpen)
        first.moveReaderIndex(forwardBy: first.readableBytes)
        // The middle: all of it continues the message.
        let middle = ByteBuffer(repeating: UInt8(ascii: "x"), count: WireStreaming.threshold)
        let next = relay.clientBytes(
            middle, limits: limits, auditing: true, auditAccepting: { true }, ledger: &ledger, now: t0)
        #expect(next.continued == middle.readableBytes && next.complete == 0 && next.started == nil)
        // The end of the message and a Sync after it.
        let left = total - head.readableBytes - middle.readableBytes
        let last = bytes(ByteBuffer(repeating: UInt8(ascii: "x"), count: left), sync)
        let end = relay.clientBytes(
            last, limits: limits, auditing: true, auditAccepting: { true }, ledger: &ledger, now: t0)
        #expect(end.continued == left && end.complete == sync.readableBytes)
        #expect(!relay.insideMessage && ledger.owed == 1 && !ledger.batchOpen)
    }

    @Test func aLargeStatementWaitsForTheAuditQueueBeforeItStarts() {
        var relay = ClientRelay()
        var ledger = RequestLedger()
        let head = largeMessage("Q", total: 2 * WireStreaming.threshold, present: WireStreaming.prefixLength + 10)
        let step = relay.clientBytes(
            head, limits: limits, auditing: true, auditAccepting: { false }, ledger: &ledger, now: t0)
        #expect(step.started == nil && step.startedBytes == 0 && !relay.insideMessage)
        #expect(step.next == .hold(ClientRelay.auditRetry) && ledger.idle)
    }

    // MARK: - The session machine around it

    @Test func theServerConnectionIsReusedOnlyAfterACleanEnd() throws {
        var machine = try relayingMachine()
        #expect(machine.serverConnectionReusable)
        var ledger = RequestLedger()
        // Mid-message: the server holds part of a message nobody will finish.
        _ = machine.clientBytes(
            largeMessage("d", total: 2 * WireStreaming.threshold, present: WireStreaming.prefixLength + 10),
            limits: limits, auditing: false, auditAccepting: { true }, ledger: &ledger, now: t0)
        #expect(!machine.serverConnectionReusable)

        var revoked = try relayingMachine()
        let action = revoked.ended(
            SessionEnd(cause: .tokenRevoked, code: "57P01", message: "terminating connection: token revoked"))
        #expect(action == .refuse(ErrorFields.fatal("57P01", "terminating connection: token revoked")))
        #expect(revoked.isClosed && !revoked.serverConnectionReusable)
        // Nothing is relayed once closed.
        let after = revoked.clientBytes(
            message("Q", "select 1"), limits: limits, auditing: false, auditAccepting: { true }, ledger: &ledger,
            now: t0)
        #expect(after.complete == 0)

        var quitting = try relayingMachine()
        let quit = quitting.clientBytes(
            message("X"), limits: limits, auditing: false, auditAccepting: { true }, ledger: &ledger, now: t0)
        #expect(quit.next == .terminate && quitting.isClosed && quitting.serverConnectionReusable)
    }

    /// A machine that went through a password login to relaying.
    func relayingMachine() throws -> ClientSessionMachine {
        let fixtures = ClientSessionMachineTests()
        var machine = fixtures.machine(loopback: true, passwordOnLoopback: true)
        _ = machine.startupPacket(
            fixtures.startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
        _ = machine.passwordMessage(Frontend.password(fixtures.token))
        _ = machine.passwordVerified(.success(TokenVerifier.Verified(record: fixtures.record())))
        _ = machine.admission(nil)
        _ = machine.upstreamReady(
            parameterStatus: [], transactionStatus: UInt8(ascii: "I"), cancelKey: CancelKey(processID: 7, secret: [1]))
        try #require(machine.isRelaying)
        return machine
    }

    // MARK: - Server to client

    @Test func serverAnswersCarryStatusFatalErrorsAndStatementEnds() throws {
        var relay = ServerRelay()
        var ledger = RequestLedger()
        ledger.sent(UInt8(ascii: "Q"))
        ledger.sent(UInt8(ascii: "Q"))
        let row = message("D", "1")
        let ready = Backend.readyForQuery(UInt8(ascii: "T")).encoded()
        let step = try relay.serverBytes(bytes(row, message("C", "SELECT 1"), ready), observing: true, ledger: &ledger)
        #expect(step.complete == row.readableBytes + message("C", "SELECT 1").readableBytes + ready.readableBytes)
        #expect(step.status == UInt8(ascii: "T") && step.endsStatements && step.fatal == nil)
        #expect(ledger.owed == 1)
        // Rows alone end no statement; unobserved, nothing is looked for.
        #expect(try relay.serverBytes(row, observing: true, ledger: &ledger).endsStatements == false)
        #expect(
            try relay.serverBytes(message("C", "SELECT 1"), observing: false, ledger: &ledger).endsStatements == false)
        let fatal = Backend.error(ErrorFields.fatal("57P01", "terminating connection due to administrator command"))
            .encoded()
        let ended = try relay.serverBytes(fatal, observing: false, ledger: &ledger)
        #expect(ended.fatal?.code == "57P01" && ended.complete == fatal.readableBytes)
    }

    @Test func aLargeServerMessagePassesThroughButWhatEndsAStatementIsReadWhole() throws {
        var relay = ServerRelay()
        var ledger = RequestLedger()
        let total = 2 * WireStreaming.threshold
        let head = largeMessage("D", total: total, present: WireStreaming.prefixLength + 5)
        let step = try relay.serverBytes(head, observing: true, ledger: &ledger)
        #expect(step.startedBytes == head.readableBytes && relay.insideMessage)
        let rest = ByteBuffer(repeating: 0, count: total - head.readableBytes)
        let ready = Backend.readyForQuery(UInt8(ascii: "I")).encoded()
        let end = try relay.serverBytes(bytes(rest, ready), observing: true, ledger: &ledger)
        #expect(end.continued == rest.readableBytes && end.complete == ready.readableBytes)
        #expect(end.status == UInt8(ascii: "I") && !relay.insideMessage)
        // A large error message is waited for whole (a FATAL must be read).
        var errors = ServerRelay()
        let error = largeMessage("E", total: total, present: WireStreaming.prefixLength + 5)
        let waited = try errors.serverBytes(error, observing: false, ledger: &ledger)
        #expect(waited.startedBytes == 0 && waited.complete == 0 && !errors.insideMessage)
    }

    @Test func brokenServerFramingThrows() {
        var relay = ServerRelay()
        var ledger = RequestLedger()
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(ascii: "D"))
        buffer.writeInteger(Int32(1))
        #expect(throws: FramingError.self) { try relay.serverBytes(buffer, observing: false, ledger: &ledger) }
    }
}
