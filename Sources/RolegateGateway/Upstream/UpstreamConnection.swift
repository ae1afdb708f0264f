import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresWire
import RolegateCore

/// Where and as whom to open an upstream connection; connections with equal keys are
/// interchangeable, so the pool reuses them.
struct UpstreamKey: Hashable, Sendable {
    var host: String
    var port: Int
    /// The server's Unix socket, when the database URL names one.
    var socketPath: String?
    var database: String
    var role: String
    /// Startup parameters (besides user and database), sorted by name.
    var parameters: [StartupParameter]

    func hash(into hasher: inout Hasher) {
        hasher.combine(host)
        hasher.combine(port)
        hasher.combine(socketPath)
        hasher.combine(database)
        hasher.combine(role)
        for p in parameters {
            hasher.combine(p.name)
            hasher.combine(p.value)
        }
    }
}

extension UpstreamKey {
    /// Connects to the server this key names, by Unix socket or TCP.
    func connect(with bootstrap: ClientBootstrap) -> EventLoopFuture<any Channel> {
        if let socketPath {
            bootstrap.connect(unixDomainSocketPath: socketPath)
        } else {
            bootstrap.connect(host: host, port: port)
        }
    }
}

/// Receives what the upstream server sends while a client session is attached.
protocol UpstreamSink: AnyObject {
    /// Complete protocol messages, to forward as they are. `status` is the transaction status
    /// of the last ReadyForQuery among them, if any.
    func upstream(_ connection: UpstreamConnection, forward bytes: ByteBuffer, status: UInt8?)
    func upstreamFlush(_ connection: UpstreamConnection)
    func upstreamClosed(_ connection: UpstreamConnection)
}

struct UpstreamError: Error, CustomStringConvertible {
    var description: String
    var sqlState: String?
}

/// One server connection, logged in as a managed role. Lives on one event loop; every
/// method must be called there (it crosses threads only inside futures that complete on
/// that loop, hence `@unchecked Sendable`).
final class UpstreamConnection: @unchecked Sendable {
    let key: UpstreamKey
    let channel: any Channel
    let createdAt: NIODeadline
    var idleSince: NIODeadline = .now()
    var parameterStatus: [(String, String)] = []
    var processID: Int32 = 0
    var secretKey: [UInt8] = []
    /// The transaction status of the last ReadyForQuery ('I' idle, 'T' in a transaction, 'E' failed).
    var status: UInt8 = UInt8(ascii: "I")
    /// True from a client message until the ReadyForQuery that answers it.
    var busy = false
    weak var sink: (any UpstreamSink)?
    /// Owned by the channel's pipeline; gone once the channel is.
    fileprivate weak var handler: UpstreamHandler?

    init(key: UpstreamKey, channel: any Channel) {
        self.key = key
        self.channel = channel
        self.createdAt = .now()
    }

    var isOpen: Bool { channel.isActive }

    /// Sends bytes from the client as they are.
    func write(_ bytes: ByteBuffer) {
        busy = true
        channel.write(bytes, promise: nil)
    }

    func flush() { channel.flush() }

    /// Resets the session (`DISCARD ALL`) so it can serve another client; fails if the
    /// server does not answer with an idle ReadyForQuery.
    func reset() -> EventLoopFuture<Void> {
        guard let handler else {
            return channel.eventLoop.makeFailedFuture(UpstreamError(description: "connection closed"))
        }
        return handler.reset(channel: channel)
    }

    func close() {
        sink = nil
        channel.close(promise: nil)
    }

    /// Opens a connection and logs in as `key.role` with its derived credential.
    static func connect(
        key: UpstreamKey, password: String, on eventLoop: any EventLoop, saltedPasswords: SaltedPasswordCache
    ) -> EventLoopFuture<UpstreamConnection> {
        let ready = eventLoop.makePromise(of: UpstreamConnection.self)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(10))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = UpstreamConnection(key: key, channel: channel)
                    let handler = UpstreamHandler(
                        connection: connection, password: password, ready: ready, saltedPasswords: saltedPasswords)
                    connection.handler = handler
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        key.connect(with: bootstrap).whenFailure { error in
            ready.fail(
                UpstreamError(description: "cannot connect to \(key.host):\(key.port): \(error)", sqlState: "08006"))
        }
        return ready.futureResult
    }
}

/// PBKDF2 results for role credentials, so pooled logins do not pay for it again.
final class SaltedPasswordCache: Sendable {
    private let entries = NIOLockedValueBox([String: [UInt8]]())

    func saltedPassword(password: String, salt: [UInt8], iterations: Int) -> [UInt8] {
        let key =
            "\(Data(SHA256.hash(data: Array(password.utf8))).base64EncodedString())|\(Data(salt).base64EncodedString())|\(iterations)"
        if let cached = entries.withLockedValue({ $0[key] }) { return cached }
        let computed = SCRAMSHA256.saltedPassword(password: password, salt: salt, iterations: iterations)
        entries.withLockedValue { $0[key] = computed }
        return computed
    }
}

/// The upstream side: logs in, then frames what the server sends and hands complete
/// messages to the attached client session.
private final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        case startingUp(scram: SCRAMClient?)
        case ready
        case resetting(EventLoopPromise<Void>)
        case failed
    }

    let connection: UpstreamConnection
    let password: String
    let ready: EventLoopPromise<UpstreamConnection>
    let saltedPasswords: SaltedPasswordCache
    var state = State.startingUp(scram: nil)
    var pending: ByteBuffer?

    init(
        connection: UpstreamConnection, password: String, ready: EventLoopPromise<UpstreamConnection>,
        saltedPasswords: SaltedPasswordCache
    ) {
        self.connection = connection
        self.password = password
        self.ready = ready
        self.saltedPasswords = saltedPasswords
    }

    func channelActive(context: ChannelHandlerContext) {
        let key = connection.key
        var parameters = [StartupParameter("user", key.role), StartupParameter("database", key.database)]
        parameters += key.parameters
        context.writeAndFlush(wrapOutboundOut(Frontend.startup(parameters: parameters)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = pending {
            buffered.writeBuffer(&incoming)
            incoming = buffered
            pending = nil
        }
        if case .ready = state, let sink = connection.sink {
            relay(&incoming, to: sink, context: context)
        } else {
            handleControl(&incoming, context: context)
        }
        if incoming.readableBytes > 0 {
            // Keep only the incomplete tail.
            pending = incoming
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .ready = state, let sink = connection.sink { sink.upstreamFlush(connection) }
    }

    /// Forwards every complete message in one slice, without copying them.
    private func relay(_ buffer: inout ByteBuffer, to sink: any UpstreamSink, context: ChannelHandlerContext) {
        var status: UInt8?
        let complete: Int
        do {
            complete = try WireFraming.scanMessages(buffer) { type, body, length in
                if type == UInt8(ascii: "Z"), length == 1 { status = buffer.getInteger(at: body, as: UInt8.self) }
                return true
            }
        } catch {
            fail(context: context, UpstreamError(description: "the server sent a malformed message: \(error)"))
            return
        }
        guard complete > 0 else { return }
        let slice = buffer.readSlice(length: complete)!
        if let status {
            connection.status = status
            connection.busy = false
        }
        sink.upstream(connection, forward: slice, status: status)
    }

    private func handleControl(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        while true {
            let message: WireMessage?
            do {
                message = try WireFraming.message(from: &buffer)
            } catch {
                fail(context: context, UpstreamError(description: "the server sent a malformed message: \(error)"))
                return
            }
            guard let message else { return }
            switch state {
            case .startingUp(let scram): startup(message, scram: scram, context: context)
            case .resetting(let promise):
                switch BackendStartupMessage(message) {
                case .readyForQuery(let status):
                    connection.status = status
                    state = .ready
                    if status == UInt8(ascii: "I") {
                        promise.succeed(())
                    } else {
                        promise.fail(UpstreamError(description: "the server is not idle after DISCARD ALL"))
                    }
                case .error(let fields):
                    state = .failed
                    promise.fail(UpstreamError(description: fields.message, sqlState: fields.code))
                default: break  // CommandComplete, ParameterStatus resets
                }
            case .ready:
                // Nobody attached (an idle pooled connection): only notices or a shutdown may come.
                if case .error = BackendStartupMessage(message) { context.close(promise: nil) }
            case .failed: return
            }
        }
    }

    private func startup(_ message: WireMessage, scram: SCRAMClient?, context: ChannelHandlerContext) {
        switch BackendStartupMessage(message) {
        case .authenticationOk: break
        case .authenticationSASL(let mechanisms):
            guard mechanisms.contains("SCRAM-SHA-256") else {
                fail(context: context, UpstreamError(description: "the server offers no supported SASL mechanism"))
                return
            }
            let cache = saltedPasswords
            let password = password
            let client = SCRAMClient(password: password) { salt, iterations in
                cache.saltedPassword(password: password, salt: salt, iterations: iterations)
            }
            state = .startingUp(scram: client)
            write(Frontend.saslInitialResponse(mechanism: "SCRAM-SHA-256", data: client.clientFirst()), context)
        case .authenticationSASLContinue(let data):
            guard var client = scram else {
                return fail(context: context, UpstreamError(description: "unexpected SASL message"))
            }
            do {
                let final = try client.receiveServerFirst(data)
                state = .startingUp(scram: client)
                write(Frontend.saslResponse(final), context)
            } catch {
                fail(context: context, UpstreamError(description: "upstream SCRAM failed: \(error)"))
            }
        case .authenticationSASLFinal(let data):
            do {
                try scram?.receiveServerFinal(data)
            } catch {
                fail(context: context, UpstreamError(description: "upstream SCRAM failed: \(error)"))
            }
        case .authenticationCleartextPassword:
            write(Frontend.password(password), context)
        case .authenticationMD5Password(let salt):
            let inner = Insecure.MD5.hash(data: Array((password + connection.key.role).utf8)).map {
                String(format: "%02x", $0)
            }.joined()
            let outer = Insecure.MD5.hash(data: Array(inner.utf8) + salt).map { String(format: "%02x", $0) }.joined()
            write(Frontend.password("md5" + outer), context)
        case .authenticationOther(let code):
            fail(
                context: context,
                UpstreamError(description: "the server asks for an unsupported authentication method (\(code))"))
        case .parameterStatus(let name, let value):
            connection.parameterStatus.append((name, value))
        case .backendKeyData(let pid, let secret):
            connection.processID = pid
            connection.secretKey = secret
        case .readyForQuery(let status):
            connection.status = status
            state = .ready
            ready.succeed(connection)
        case .error(let fields):
            fail(context: context, UpstreamError(description: fields.message, sqlState: fields.code))
        case .notice, .negotiateProtocolVersion, .other: break
        }
    }

    func reset(channel: any Channel) -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        guard case .ready = state, channel.isActive else {
            promise.fail(UpstreamError(description: "connection not reusable"))
            return promise.futureResult
        }
        state = .resetting(promise)
        channel.writeAndFlush(Frontend.query("DISCARD ALL").encoded(), promise: nil)
        return promise.futureResult
    }

    private func write(_ message: WireMessage, _ context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(message.encoded()), promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ error: UpstreamError) {
        if case .startingUp = state { ready.fail(error) }
        if case .resetting(let promise) = state { promise.fail(error) }
        state = .failed
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .startingUp:
            ready.fail(UpstreamError(description: "the server closed the connection during login", sqlState: "08006"))
        case .resetting(let promise): promise.fail(UpstreamError(description: "the server closed the connection"))
        default: break
        }
        state = .failed
        connection.sink?.upstreamClosed(connection)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, UpstreamError(description: "\(error)", sqlState: "08006"))
    }
}
