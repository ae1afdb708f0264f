import NIOCore
import RolegateTestSupport
import Testing

@testable import PostgresWire

@Suite(.ownThreads) struct FramingTests {
    func bytes(_ values: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: values) }

    func int32(_ value: Int32) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    @Test func startupParsesParametersInOrder() throws {
        var buffer = Frontend.startup(parameters: [
            .init("user", "billing-api"), .init("database", "app"), .init("application_name", "psql"),
        ])
        let packet = try WireFraming.startupPacket(from: &buffer)
        #expect(
            packet
                == .startup(
                    major: 3, minor: 0,
                    parameters: [
                        .init("user", "billing-api"), .init("database", "app"), .init("application_name", "psql"),
                    ]))
        #expect(buffer.readableBytes == 0)
    }

    @Test func startupNeedsAllItsBytes() throws {
        let full = Frontend.startup(parameters: [.init("user", "u")])
        for cut in 0..<full.readableBytes {
            var partial = full.getSlice(at: 0, length: cut)!
            #expect(try WireFraming.startupPacket(from: &partial) == nil)
            #expect(partial.readableBytes == cut)  // nothing consumed
        }
    }

    @Test func specialRequests() throws {
        var ssl = bytes(int32(8) + int32(80_877_103))
        #expect(try WireFraming.startupPacket(from: &ssl) == .sslRequest)
        var gss = bytes(int32(8) + int32(80_877_104))
        #expect(try WireFraming.startupPacket(from: &gss) == .gssEncRequest)
        var cancel = Frontend.cancelRequest(processID: 42, secretKey: [1, 2, 3, 4])
        #expect(try WireFraming.startupPacket(from: &cancel) == .cancel(processID: 42, secretKey: [1, 2, 3, 4]))
        // Protocol 3.2 keys may be longer.
        var long = Frontend.cancelRequest(processID: 7, secretKey: Array(repeating: 9, count: 32))
        #expect(
            try WireFraming.startupPacket(from: &long)
                == .cancel(processID: 7, secretKey: Array(repeating: 9, count: 32)))
        var version = Frontend.startup(parameters: [.init("user", "u"), .init("_pq_.x", "1")], major: 3, minor: 2)
        #expect(
            try WireFraming.startupPacket(from: &version)
                == .startup(major: 3, minor: 2, parameters: [.init("user", "u"), .init("_pq_.x", "1")]))
    }

    @Test(arguments: [Int32(0), 3, 7, -1, Int32.min])
    func tooShortLengthsAreRefused(length: Int32) {
        var buffer = bytes(int32(length) + int32(196_608))
        #expect(throws: FramingError.lengthTooShort(Int(length))) { try WireFraming.startupPacket(from: &buffer) }
    }

    @Test func hugeStartupIsRefusedBeforeReadingIt() {
        var buffer = bytes(int32(Int32.max) + int32(196_608))  // 2 GB announced, 8 bytes sent
        #expect(throws: FramingError.lengthTooLong(Int(Int32.max), limit: 10_000)) {
            try WireFraming.startupPacket(from: &buffer)
        }
    }

    @Test func malformedStartups() {
        // No terminator after the last value.
        var body = int32(196_608) + Array("user\0u\0".utf8)
        var unterminated = bytes(int32(Int32(4 + body.count)) + body)
        #expect(throws: FramingError.self) { try WireFraming.startupPacket(from: &unterminated) }
        // A name without a value.
        body = int32(196_608) + Array("user\0".utf8)
        var noValue = bytes(int32(Int32(4 + body.count)) + body)
        #expect(throws: FramingError.self) { try WireFraming.startupPacket(from: &noValue) }
        // A cancel request with a 2-byte key.
        var shortCancel = bytes(int32(14) + int32(80_877_102) + int32(1) + [1, 2])
        #expect(throws: FramingError.self) { try WireFraming.startupPacket(from: &shortCancel) }
        var sslWithBody = bytes(int32(9) + int32(80_877_103) + [0])
        #expect(throws: FramingError.self) { try WireFraming.startupPacket(from: &sslWithBody) }
    }

    @Test func messagesFrameWithoutCopying() throws {
        var buffer = Frontend.query("SELECT 1").encoded()
        var terminate = Frontend.terminate().encoded()
        buffer.writeBuffer(&terminate)
        let first = try #require(try WireFraming.message(from: &buffer))
        #expect(first.type == UInt8(ascii: "Q"))
        #expect(first.body.getString(at: first.body.readerIndex, length: first.body.readableBytes) == "SELECT 1\0")
        let second = try #require(try WireFraming.message(from: &buffer))
        #expect(second.type == UInt8(ascii: "X") && second.body.readableBytes == 0)
        #expect(try WireFraming.message(from: &buffer) == nil)
    }

    @Test(arguments: [Int32(0), 3, -5, Int32.min])
    func messageLengthBelowFourIsRefused(length: Int32) {
        var buffer = bytes([UInt8(ascii: "Q")] + int32(length))
        #expect(throws: FramingError.lengthTooShort(Int(length))) { try WireFraming.message(from: &buffer) }
    }

    @Test func messageOverTheLimitIsRefusedBeforeReadingIt() {
        var buffer = bytes([UInt8(ascii: "Q")] + int32(Int32.max))
        #expect(throws: FramingError.lengthTooLong(Int(Int32.max), limit: 1 << 20)) {
            try WireFraming.message(from: &buffer, limits: WireLimits(maxMessageLength: 1 << 20))
        }
    }

    @Test func scanFindsTheCompletePrefixAndStopsWhereAsked() throws {
        var buffer = Frontend.query("SELECT 1").encoded()
        var ready = Backend.readyForQuery(UInt8(ascii: "T")).encoded()
        var terminate = Frontend.terminate().encoded()
        buffer.writeBuffer(&ready)
        buffer.writeBuffer(&terminate)
        let full = buffer.readableBytes
        var partial = buffer.getSlice(at: 0, length: full - 2)!  // Terminate cut short
        var types: [UInt8] = []
        var status: UInt8?
        let complete = try WireFraming.scanMessages(partial) { type, body, length in
            types.append(type)
            if type == UInt8(ascii: "Z"), length == 1 { status = partial.getInteger(at: body, as: UInt8.self) }
            return true
        }
        #expect(types == [UInt8(ascii: "Q"), UInt8(ascii: "Z")])
        #expect(status == UInt8(ascii: "T"))
        #expect(complete == full - 5)
        #expect(partial.readableBytes == full - 2)  // nothing consumed
        let beforeTerminate = try WireFraming.scanMessages(buffer) { type, _, _ in type != UInt8(ascii: "X") }
        #expect(beforeTerminate == full - 5)
        partial = ByteBuffer(bytes: [UInt8(ascii: "Q"), 0, 0, 0, 2])
        #expect(throws: FramingError.lengthTooShort(2)) { try WireFraming.scanMessages(partial) { _, _, _ in true } }
    }

    @Test func backendMessagesRoundTrip() throws {
        let messages: [(WireMessage, BackendStartupMessage)] = [
            (Backend.authenticationOk(), .authenticationOk),
            (
                Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"]),
                .authenticationSASL(mechanisms: ["SCRAM-SHA-256"])
            ),
            (Backend.authenticationSASLContinue([1, 2]), .authenticationSASLContinue([1, 2])),
            (Backend.authenticationSASLFinal([3]), .authenticationSASLFinal([3])),
            (Backend.parameterStatus("TimeZone", "UTC"), .parameterStatus(name: "TimeZone", value: "UTC")),
            (
                Backend.backendKeyData(processID: 9, secretKey: [1, 2, 3, 4]),
                .backendKeyData(processID: 9, secretKey: [1, 2, 3, 4])
            ),
            (Backend.readyForQuery(UInt8(ascii: "I")), .readyForQuery(UInt8(ascii: "I"))),
            (
                Backend.negotiateProtocolVersion(minor: 0, unrecognized: ["_pq_.x"]),
                .negotiateProtocolVersion(minor: 0, unrecognized: ["_pq_.x"])
            ),
        ]
        for (message, expected) in messages {
            var encoded = message.encoded()
            let framed = try #require(try WireFraming.message(from: &encoded))
            #expect(BackendStartupMessage(framed) == expected)
        }
        var error = Backend.error(.fatal("28P01", "password authentication failed for user \"x\"")).encoded()
        let framed = try #require(try WireFraming.message(from: &error))
        guard case .error(let fields) = BackendStartupMessage(framed) else {
            Issue.record("not an error")
            return
        }
        #expect(fields.code == "28P01" && fields.severity == "FATAL" && fields.message.hasPrefix("password"))
    }

    @Test func passwordMessageBodies() throws {
        let initial = Frontend.saslInitialResponse(mechanism: "SCRAM-SHA-256", data: Array("n,,n=,r=abc".utf8))
        let parsed = try PasswordMessageBody.saslInitialResponse(initial.body)
        #expect(parsed.mechanism == "SCRAM-SHA-256" && parsed.data == Array("n,,n=,r=abc".utf8))
        var truncated = initial.body
        truncated.moveWriterIndex(to: truncated.writerIndex - 2)
        #expect(throws: PasswordMessageBody.Malformed.self) { try PasswordMessageBody.saslInitialResponse(truncated) }
        #expect(try PasswordMessageBody.password(Frontend.password("secret").body) == "secret")
        #expect(throws: PasswordMessageBody.Malformed.self) {
            try PasswordMessageBody.password(ByteBuffer(string: "no-nul"))
        }
    }

    /// A large message is recognised from its head and counted down as its bytes pass through;
    /// small, complete or too-short ones are left to the framing.
    @Test func aLargeMessagePassesThroughFromItsHead() {
        let total = WireStreaming.threshold + 10
        var head = ByteBuffer()
        head.writeInteger(UInt8(ascii: "B"))
        head.writeInteger(Int32(total - 1))
        head.writeRepeatingByte(7, count: WireStreaming.prefixLength - 1)
        #expect(WireStreaming.head(of: head) == nil, "the prefix is not all here yet")
        head.writeInteger(UInt8(7))
        let found = WireStreaming.head(of: head)
        #expect(found?.type == UInt8(ascii: "B") && found?.totalLength == total)
        #expect(found?.prefix.readableBytes == WireStreaming.prefixLength)

        var small = ByteBuffer()
        small.writeInteger(UInt8(ascii: "Q"))
        small.writeInteger(Int32(1000))
        small.writeRepeatingByte(1, count: 500)
        #expect(WireStreaming.head(of: small) == nil)
        var oversized = ByteBuffer()
        oversized.writeInteger(UInt8(ascii: "B"))
        oversized.writeInteger(Int32(WireStreaming.threshold * 4))
        oversized.writeRepeatingByte(1, count: WireStreaming.prefixLength)
        #expect(WireStreaming.head(of: oversized, limits: WireLimits(maxMessageLength: WireStreaming.threshold)) == nil)

        var streaming = WireStreaming()
        streaming.begin(messageBytes: total)
        #expect(streaming.take(head.readableBytes) == head.readableBytes)
        #expect(streaming.take(total) == total - head.readableBytes)
        #expect(streaming.remaining == 0 && streaming.take(100) == 0)
    }

    /// A connection owes one ReadyForQuery per Query, Sync and FunctionCall, and an extended batch
    /// is open until its Sync: idle only when both are settled, whatever the pipelining.
    @Test func theLedgerKnowsWhenAConnectionIsIdle() {
        func t(_ c: Character) -> UInt8 { c.asciiValue! }
        var ledger = RequestLedger()
        #expect(ledger.idle)
        for type in "QQF" { ledger.sent(t(type)) }
        ledger.ready()
        #expect(!ledger.idle && ledger.owed == 2, "one pipelined query answered, two owed")
        ledger.ready()
        ledger.ready()
        #expect(ledger.idle)
        for type in "PBDE" { ledger.sent(t(type)) }
        #expect(!ledger.idle && ledger.owed == 0 && ledger.batchOpen, "a batch without its Sync")
        ledger.sent(t("S"))
        #expect(!ledger.idle && !ledger.batchOpen)
        ledger.ready()
        #expect(ledger.idle)
        for type in "dcfX" { ledger.sent(t(type)) }
        #expect(ledger.idle, "copy data and terminate owe nothing")
        ledger.ready()
        #expect(ledger.owed == 0, "an unexpected ReadyForQuery does not go below zero")
        ledger.sentRequests(3)
        #expect(ledger.owed == 3)
    }
}
