import NIOCore
import PostgresWire
import RolegateCore
import RolegateGateway

/// Entry points for the wire fuzz target (`Sources/WireFuzz`, see `fuzz/README.md`): the
/// same parsing a client's bytes go through in a session, without sockets. Each one traps
/// (crashing the fuzzer with the input) when an invariant breaks, so libFuzzer and the
/// replay run in CI both notice.
enum FuzzEntryPoints {
    /// Feeds `bytes` to the code chosen by the first byte.
    static func run(_ bytes: [UInt8]) {
        guard let selector = bytes.first else { return }
        let rest = Array(bytes.dropFirst())
        switch selector % 5 {
        case 0: startupPhase(rest, tls: false)
        case 1: startupPhase(rest, tls: true)
        case 2: relayPhase(rest)
        case 3: scram(rest)
        default: upstreamLogin(rest)
        }
    }

    static let policy: Policy? = try? PolicyLoader.parse(
        text: """
            version: 1
            databases:
              app: {url: "postgres://admin@127.0.0.1:5432/app"}
            roles:
              reader: {grants: [{on: SCHEMA public, privileges: [USAGE]}]}
            services:
              reports: {role: reader}
            """, file: "fuzz.yaml", environment: [:])

    /// A client's bytes from the first one to the end of the authentication: framing,
    /// encryption requests, the startup packet, SCRAM or password messages. Token lookups
    /// find nothing, so a login can never succeed here.
    static func startupPhase(_ bytes: [UInt8], tls: Bool) {
        guard let policy else { preconditionFailure("the fuzz policy does not parse") }
        var machine = ClientSessionMachine(
            settings: .init(
                policy: policy, tlsAvailable: tls, requireTLS: false, passwordOverTLS: tls, passwordOnLoopback: false,
                fromLoopback: false))
        var buffer = ByteBuffer(bytes: bytes)
        let limits = WireLimits()
        var steps = 0
        while buffer.readableBytes > 0, !machine.isClosed, steps < 64 {
            steps += 1
            let before = buffer.readableBytes
            var action: ClientSessionMachine.Action
            do {
                if machine.expectsStartupPacket {
                    guard let packet = try WireFraming.startupPacket(from: &buffer, limits: limits) else { return }
                    action = machine.startupPacket(packet, bytesFollow: buffer.readableBytes > 0)
                    if action == .startTLS { action = machine.tlsEstablished(alpn: nil) }
                } else if machine.expectsPasswordMessage {
                    let authLimits = WireLimits(maxMessageLength: ClientSessionMachine.authMessageLimit)
                    guard let message = try WireFraming.message(from: &buffer, limits: authLimits) else { return }
                    action = machine.passwordMessage(message)
                } else {
                    return
                }
            } catch {
                action = machine.malformedInput(error)
            }
            precondition(buffer.readableBytes <= before, "framing consumed bytes it did not have")
            // What the handler would do next, with a store that knows no token.
            for _ in 0..<4 {
                switch action {
                case .lookUpTokens:
                    action = machine.tokensLoaded(
                        .success(nil), decoySalt: Array(repeating: 7, count: 16), nonce: "N0NCE")
                case .verifyPassword:
                    action = machine.passwordVerified(.failure(.unknown))
                case .admit, .connectUpstream, .startRelaying:
                    preconditionFailure("a login without a token got as far as \(action)")
                case .refuse:
                    precondition(machine.isClosed, "a refusal left the session open")
                    return
                default:
                    break
                }
            }
        }
    }

    /// A session's relayed traffic, both ways, as the relay machines and the audit see it: the
    /// first two bytes split the input into the client's bytes and the server's, and the third
    /// chooses how they are cut into reads (what a network may do to them).
    static func relayPhase(_ bytes: [UInt8]) {
        guard bytes.count >= 3 else { return }
        let split = min(bytes.count - 3, Int(bytes[0]) << 8 | Int(bytes[1]))
        let readSize = 1 + Int(bytes[2]) * 7
        let client = ByteBuffer(bytes: bytes[3..<(3 + split)])
        let server = ByteBuffer(bytes: bytes[(3 + split)...])
        var tracker = StatementTracker(captureParameters: bytes.count % 2 == 0)
        var now: UInt64 = 1
        var ledger = RequestLedger()
        let clientMessages = relayClient(client, readSize: readSize, auditFull: bytes[2] % 3 == 0, ledger: &ledger)
        let serverMessages = relayServer(server, readSize: readSize, ledger: &ledger)
        for index in 0..<max(clientMessages.count, serverMessages.count) {
            now += 1
            if index < clientMessages.count {
                tracker.client(type: clientMessages[index].0, body: clientMessages[index].1, now: now)
            }
            if index < serverMessages.count {
                let done = tracker.server(type: serverMessages[index].0, body: serverMessages[index].1, now: now)
                for statement in done {
                    precondition(statement.finishedAt >= statement.startedAt, "a statement finished before it started")
                    precondition((statement.sql?.utf8.count ?? 0) <= 64 * 1024 + 64, "SQL text was not cut")
                }
            }
        }
        precondition(ledger.owed >= 0, "the ledger owes less than nothing")
    }

    /// The client's bytes through the session's relay in reads of `readSize`: the relay never
    /// forwards more than it was given, forwards whole messages of allowed types only, and
    /// forwards nothing after it ended the session. Returns the whole messages it forwarded.
    static func relayClient(
        _ bytes: ByteBuffer, readSize: Int, auditFull: Bool, ledger: inout RequestLedger
    ) -> [(UInt8, ByteBuffer)] {
        var relay = ClientRelay()
        var pending = ByteBuffer()
        var input = bytes
        var forwarded: [(UInt8, ByteBuffer)] = []
        let start = NIODeadline.uptimeNanoseconds(1)
        var reads: Int64 = 0
        while input.readableBytes > 0 {
            var read = input.readSlice(length: min(readSize, input.readableBytes))!
            pending.writeBuffer(&read)
            reads += 1
            let step = relay.clientBytes(
                pending, limits: WireLimits(), auditing: true, auditAccepting: { !auditFull }, ledger: &ledger,
                now: start + .milliseconds(reads * 100))
            let used = step.continued + step.complete + step.startedBytes
            precondition(used <= pending.readableBytes, "the relay forwarded bytes it did not have")
            precondition(step.started == nil || step.startedBytes > 0, "a large message started with no bytes")
            pending.moveReaderIndex(forwardBy: step.continued)
            let complete = pending.readSlice(length: step.complete)!
            _ = try? WireFraming.scanMessages(complete) { type, body, length in
                precondition(ClientRelay.allowed(type) && type != UInt8(ascii: "X"), "forwarded a message it refuses")
                forwarded.append((type, complete.getSlice(at: body, length: length)!))
                return true
            }
            pending.moveReaderIndex(forwardBy: step.startedBytes)
            switch step.next {
            case .readMore: continue
            case .hold: precondition(auditFull, "held a statement with room in the audit queue")
            case .terminate, .end: return forwarded
            }
        }
        return forwarded
    }

    /// The server's bytes through the upstream relay in reads of `readSize`, with the same
    /// promises. Returns the whole messages it forwarded.
    static func relayServer(_ bytes: ByteBuffer, readSize: Int, ledger: inout RequestLedger) -> [(UInt8, ByteBuffer)] {
        var relay = ServerRelay()
        var pending = ByteBuffer()
        var input = bytes
        var forwarded: [(UInt8, ByteBuffer)] = []
        while input.readableBytes > 0 {
            var read = input.readSlice(length: min(readSize, input.readableBytes))!
            pending.writeBuffer(&read)
            guard let step = try? relay.serverBytes(pending, observing: true, ledger: &ledger) else {
                return forwarded  // the upstream handler closes the connection
            }
            precondition(
                step.continued + step.complete + step.startedBytes <= pending.readableBytes,
                "the relay forwarded bytes it did not have")
            pending.moveReaderIndex(forwardBy: step.continued)
            let complete = pending.readSlice(length: step.complete)!
            _ = try? WireFraming.scanMessages(complete) { type, body, length in
                forwarded.append((type, complete.getSlice(at: body, length: length)!))
                return true
            }
            pending.moveReaderIndex(forwardBy: step.startedBytes)
        }
        return forwarded
    }

    /// A server's bytes to the gateway's upstream login, as the upstream handler frames them:
    /// whatever a server sends, the credential never leaves in clear text or as MD5 (the fuzz
    /// database allows neither), and no login is ready without the server's SCRAM signature
    /// (which random bytes cannot forge).
    static func upstreamLogin(_ bytes: [UInt8]) {
        var machine = UpstreamLoginMachine(
            settings: .init(role: "reader", database: "app", allowed: .standard, encrypted: bytes.count % 2 == 0),
            password: upstreamPassword
        ) { _, _ in Array(repeating: 5, count: 32) }
        var buffer = ByteBuffer(bytes: bytes)
        while let message = try? WireFraming.message(from: &buffer) {
            let action = machine.received(BackendStartupMessage(message))
            if case .send(let reply) = action {
                let sent = String(decoding: reply.encoded().readableBytesView, as: UTF8.self)
                precondition(!sent.contains(upstreamPassword) && !sent.contains("md5"), "the credential left")
            }
            precondition(action != .ready, "an upstream login was ready without the server's SCRAM signature")
            if case .fail = action { return }
        }
    }

    static let upstreamPassword = "the-role-credential"

    /// The SCRAM server with arbitrary client messages (split at the first zero byte).
    static func scram(_ bytes: [UInt8]) {
        let cut = bytes.firstIndex(of: 0) ?? bytes.count
        let first = Array(bytes[..<cut])
        let final = cut < bytes.count ? Array(bytes[(cut + 1)...]) : []
        var server = SCRAMServer(salt: Array(repeating: 1, count: 16), iterations: 4096, serverNonce: "SERVERNONCE")
        guard (try? server.receiveClientFirst(first)) != nil else { return }
        _ = try? server.receiveClientFinal(final, candidates: [scramVerifier])
        // A second final on the same exchange is always out of order.
        precondition((try? server.receiveClientFinal(final, candidates: [scramVerifier])) == nil, "a SCRAM replay")
    }

    static let scramVerifier = SCRAMSHA256.verifier(password: "the-token", salt: Array(repeating: 1, count: 16))
}
