import Crypto
import Foundation
import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix
import NIOSSL
package import PostgresWire
package import RolegateCore

/// Where and as whom to open an upstream connection; connections with equal keys are
/// interchangeable, so the pool reuses them.
package struct UpstreamKey: Hashable, Sendable {
    let host: String
    let port: Int
    /// The server's Unix socket, when the database URL names one.
    let socketPath: String?
    let database: String
    let role: String
    let tls: UpstreamTLS
    /// How the gateway may prove the role's credential to this server (the database's `upstream_auth`).
    let auth: UpstreamAuthMethods
    /// Startup parameters (besides user and database), sorted by name.
    let parameters: [StartupParameter]
    /// The fields' hash, computed once: a key is looked up in a pool several times per
    /// HTTP request, and hashing its strings each time showed in profiles.
    private let fieldsHash: Int

    init(
        host: String, port: Int, socketPath: String?, database: String, role: String, tls: UpstreamTLS,
        auth: UpstreamAuthMethods = .standard, parameters: [StartupParameter]
    ) {
        self.host = host
        self.port = port
        self.socketPath = socketPath
        self.database = database
        self.role = role
        self.tls = tls
        self.auth = auth
        self.parameters = parameters
        var hasher = Hasher()
        hasher.combine(host)
        hasher.combine(port)
        hasher.combine(socketPath)
        hasher.combine(database)
        hasher.combine(role)
        hasher.combine(tls)
        hasher.combine(auth)
        for p in parameters {
            hasher.combine(p.name)
            hasher.combine(p.value)
        }
        fieldsHash = hasher.finalize()
    }

    package func hash(into hasher: inout Hasher) { hasher.combine(fieldsHash) }
}

extension UpstreamKey {
    /// The server `url` names (TCP or its Unix socket, TLS as its sslmode says), as `role`,
    /// with `parameters` (sorted here, so equal sets make equal keys), logging in by one of `auth`.
    package init(
        url: ConnectionURL, role: String, auth: UpstreamAuthMethods = .standard, parameters: [StartupParameter]
    ) {
        self.init(
            host: url.host, port: url.port,
            socketPath: url.unixSocketDirectory.map { "\($0)/.s.PGSQL.\(url.port)" }, database: url.database,
            role: role, tls: UpstreamTLS(url), auth: auth, parameters: parameters.sorted { $0.name < $1.name })
    }

    /// Connects to the server this key names, by Unix socket or TCP.
    func connect(with bootstrap: ClientBootstrap) -> EventLoopFuture<any Channel> {
        if let socketPath {
            bootstrap.connect(unixDomainSocketPath: socketPath)
        } else {
            bootstrap.connect(host: host, port: port)
        }
    }
}

/// TLS to the server, as the database URL's `sslmode` (and `sslrootcert`) ask, with libpq's
/// meanings: `disable`/`allow` plain, `prefer` TLS when the server offers it, `require`
/// TLS without verification, `verify-ca` and `verify-full` verified. Unix sockets are never
/// encrypted.
struct UpstreamTLS: Hashable, Sendable {
    var mode: ConnectionURL.SSLMode
    var rootCertificate: String?

    init(mode: ConnectionURL.SSLMode, rootCertificate: String? = nil) {
        self.mode = mode
        self.rootCertificate = rootCertificate
    }

    init(_ url: ConnectionURL) {
        self.init(mode: url.unixSocketDirectory == nil ? url.sslMode : .disable, rootCertificate: url.sslRootCert)
    }

    /// Whether to send `SSLRequest` at all.
    var attempts: Bool { mode != .disable && mode != .allow }
    /// Whether a server answering `N` is refused.
    var required: Bool { [.require, .verifyCA, .verifyFull].contains(mode) }

    func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch mode {
        case .verifyFull: configuration.certificateVerification = .fullVerification
        case .verifyCA: configuration.certificateVerification = .noHostnameVerification
        default: configuration.certificateVerification = .none
        }
        if let rootCertificate { configuration.trustRoots = .file(rootCertificate) }
        return try NIOSSLContext(configuration: configuration)
    }
}

/// One TLS client context per distinct upstream TLS setting, built when the gateway starts
/// (so an unreadable `sslrootcert` stops `serve` instead of failing every login).
final class UpstreamTLSContexts: Sendable {
    private let contexts: [UpstreamTLS: NIOSSLContext]

    init(policy: Policy) throws {
        var contexts: [UpstreamTLS: NIOSSLContext] = [:]
        for database in policy.databases {
            guard let url = try? ConnectionURL(parsing: database.url) else { continue }
            let tls = UpstreamTLS(url)
            guard tls.attempts, contexts[tls] == nil else { continue }
            if tls.mode == .verifyFull, url.host.isIPAddressLiteral {
                throw UpstreamError(
                    .configuration,
                    "database \(database.name): sslmode=verify-full checks the server's host name; the URL names the address \(url.host) (use a host name, or sslmode=verify-ca)"
                )
            }
            do {
                contexts[tls] = try tls.makeContext()
            } catch {
                throw UpstreamError(
                    .configuration,
                    "database \(database.name): cannot set up TLS to the server (sslrootcert \(tls.rootCertificate ?? "system roots")): \(error)"
                )
            }
        }
        self.contexts = contexts
    }

    func context(for tls: UpstreamTLS) -> NIOSSLContext? { contexts[tls] }
}

extension String {
    /// An IPv4 or IPv6 address rather than a host name.
    var isIPAddressLiteral: Bool {
        (try? SocketAddress(ipAddress: self, port: 0)) != nil
    }
}

/// Receives what the upstream server sends while a client session is attached.
package protocol UpstreamSink: AnyObject {
    /// Complete protocol messages, to forward as they are. `status` is the transaction status
    /// of the last ReadyForQuery among them, if any. `statementsEnded`: while
    /// ``UpstreamConnection/observesStatements`` is set (statement audit) and `bytes` hold
    /// messages that end a statement (``StatementTracker/endsStatement(_:)``), when the read that
    /// brought them was handled (``NIODeadline`` uptime nanoseconds); nil otherwise.
    func upstream(_ connection: UpstreamConnection, forward bytes: ByteBuffer, status: UInt8?, statementsEnded: UInt64?)
    func upstreamFlush(_ connection: UpstreamConnection)
    func upstreamClosed(_ connection: UpstreamConnection)
}

/// Why a server connection could not be had, kept or reset: a kind to decide on, the words to
/// show, and the SQLSTATE the server sent when it sent one.
package struct UpstreamError: Error, CustomStringConvertible, Sendable, Equatable {
    package enum Code: Sendable, Equatable {
        /// The policy's settings for the database cannot work (TLS, a verify-full URL naming an address).
        case configuration
        /// No connection to the server could be opened.
        case unreachable
        /// TLS to the server failed or the server refused it where the URL requires it.
        case tls
        /// The server did not answer within its time.
        case timeout
        /// The login as the role failed: refused by the server, a method the policy does not
        /// allow, or a SCRAM server signature that does not prove the server knows the credential.
        case loginRefused
        /// Every server connection the role may have is in use by other sessions.
        case busy
        /// The server broke the protocol (malformed or unexpected messages).
        case protocolViolation
        /// The connection closed, or is in no state to serve another session.
        case closed
    }

    package var code: Code
    package var description: String
    /// The SQLSTATE the server sent with its refusal, if it sent one.
    package var serverSQLState: String?

    package init(_ code: Code, _ description: String, serverSQLState: String? = nil) {
        self.code = code
        self.description = description
        self.serverSQLState = serverSQLState
    }

    /// What a client is told: `53300` when the role's connections are all in use, the server's own
    /// code for its refusals, `08006` (connection failure) otherwise.
    package var sqlState: String {
        code == .busy ? "53300" : serverSQLState ?? "08006"
    }
}

/// One server connection, logged in as a managed role. Lives on one event loop; every
/// method must be called there (it crosses threads only inside futures that complete on
/// that loop, hence `@unchecked Sendable`).
package final class UpstreamConnection: @unchecked Sendable {
    let key: UpstreamKey
    let channel: any Channel
    let createdAt: NIODeadline
    var idleSince: NIODeadline = .now()
    var parameterStatus: [(String, String)] = []
    var processID: Int32 = 0
    var secretKey: [UInt8] = []
    /// The transaction status of the last ReadyForQuery ('I' idle, 'T' in a transaction, 'E' failed).
    var status: UInt8 = UInt8(ascii: "I")
    /// What the client asked that the server has not finished (see ``RequestLedger``).
    package var ledger = RequestLedger()
    /// The server owes answers, or an extended-protocol batch is open: not to be reused, and a
    /// cancel request is worth forwarding.
    var busy: Bool { !ledger.idle }
    package weak var sink: (any UpstreamSink)?
    /// Report statement-ending messages to the sink (statement audit is on).
    var observesStatements = false
    /// The FATAL (or PANIC) error the server sent before it closed the connection, if any
    /// (`pg_terminate_backend`, an administrator's shutdown): already relayed to the client.
    var fatalError: ErrorFields?
    /// Owned by the channel's pipeline; gone once the channel is.
    fileprivate weak var handler: UpstreamHandler?

    init(key: UpstreamKey, channel: any Channel) {
        self.key = key
        self.channel = channel
        self.createdAt = .now()
    }

    var isOpen: Bool { channel.isActive }

    /// Sends bytes from the client as they are; the caller has told ``ledger`` what they hold.
    package func write(_ bytes: ByteBuffer) {
        unflushed = true
        channel.write(bytes, promise: nil)
    }

    /// Sends what ``write(_:)`` queued; nothing to do when it has been sent already (with
    /// statement audit a session flushes its statements before following them).
    package func flush() {
        guard unflushed else { return }
        unflushed = false
        channel.flush()
    }

    /// Whether ``write(_:)`` queued bytes since the last ``flush()``.
    private var unflushed = false

    /// What makes a used session like a new one for the next client.
    package static let resetQuery = "DISCARD ALL"

    /// Resets the session (`DISCARD ALL`) so it can serve another client; fails if the
    /// server does not answer with an idle ReadyForQuery.
    func reset() -> EventLoopFuture<Void> {
        guard let handler else {
            return channel.eventLoop.makeFailedFuture(UpstreamError(.closed, "connection closed"))
        }
        return handler.reset(channel: channel)
    }

    package func close() {
        sink = nil
        channel.close(promise: nil)
    }

    /// How long the server may take to accept the connection, or to answer a login or a
    /// `DISCARD ALL`, before the connection is given up (and its pool slot freed): a server,
    /// or a load balancer in front of it, that accepts the TCP connection and then never
    /// answers must not hold a slot for ever. The default of `server_connect_timeout`.
    static let answerTimeout: TimeAmount = .seconds(10)

    /// Opens a connection and logs in as `key.role` with its derived credential.
    static func connect(
        key: UpstreamKey, password: String, on eventLoop: any EventLoop, saltedPasswords: SaltedPasswordCache,
        tls: NIOSSLContext?, answerTimeout: TimeAmount = answerTimeout
    ) -> EventLoopFuture<UpstreamConnection> {
        let ready = eventLoop.makePromise(of: UpstreamConnection.self)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(answerTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = UpstreamConnection(key: key, channel: channel)
                    let handler = UpstreamHandler(
                        connection: connection, password: password, ready: ready, saltedPasswords: saltedPasswords,
                        tls: key.tls.attempts ? tls : nil, answerTimeout: answerTimeout)
                    connection.handler = handler
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        key.connect(with: bootstrap).whenFailure { error in
            ready.fail(
                UpstreamError(.unreachable, "cannot connect to \(key.host):\(key.port): \(error)"))
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
        /// `SSLRequest` sent; waiting for the server's `S` or `N`.
        case negotiatingTLS
        /// The login (see ``UpstreamLoginMachine``).
        case startingUp
        case ready
        /// DISCARD ALL sent; `discarded` once its CommandComplete arrived.
        case resetting(EventLoopPromise<Void>, discarded: Bool)
        case failed
    }

    let connection: UpstreamConnection
    let ready: EventLoopPromise<UpstreamConnection>
    let tls: NIOSSLContext?
    let answerTimeout: TimeAmount
    var state = State.startingUp
    var login: UpstreamLoginMachine
    var pending: ByteBuffer?
    /// Ends a login or reset the server does not answer in time.
    private var deadline: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(
        connection: UpstreamConnection, password: String, ready: EventLoopPromise<UpstreamConnection>,
        saltedPasswords: SaltedPasswordCache, tls: NIOSSLContext?, answerTimeout: TimeAmount
    ) {
        self.answerTimeout = answerTimeout
        self.connection = connection
        let key = connection.key
        self.login = UpstreamLoginMachine(
            settings: .init(role: key.role, database: key.database, allowed: key.auth, encrypted: false),
            password: password
        ) { salt, iterations in
            saltedPasswords.saltedPassword(password: password, salt: salt, iterations: iterations)
        }
        self.ready = ready
        self.tls = tls
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        self.context = nil
    }

    /// Gives the connection up unless the server is ready (ReadyForQuery) within `answerTimeout`.
    private func awaitAnswer(_ what: String, context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: answerTimeout) { [weak self] in
            guard let self, let context = self.context else { return }
            switch self.state {
            case .startingUp, .negotiatingTLS, .resetting:
                let milliseconds = self.answerTimeout.nanoseconds / 1_000_000
                let limit = milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
                self.fail(
                    context: context,
                    UpstreamError(.timeout, "the server did not \(what) within \(limit)"))
            case .ready, .failed:
                break
            }
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        awaitAnswer("complete the login", context: context)
        if tls != nil {
            state = .negotiatingTLS
            context.writeAndFlush(wrapOutboundOut(Frontend.sslRequest()), promise: nil)
        } else {
            sendStartup(context)
        }
    }

    /// The server answered `SSLRequest`: encrypt, go on in plain text, or give up.
    private func tlsAnswer(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        guard let answer = buffer.readInteger(as: UInt8.self) else { return }
        let key = connection.key
        guard buffer.readableBytes == 0 else {
            // Bytes after the answer were not protected by TLS (CVE-2021-23222).
            buffer.clear()
            return fail(
                context: context,
                UpstreamError(.tls, "the server sent unencrypted data after its TLS answer"))
        }
        switch answer {
        case UInt8(ascii: "S"):
            do {
                // SNI and the verify-full hostname check take a name, never an address literal.
                let handler = try NIOSSLClientHandler(
                    context: tls!, serverHostname: key.host.isIPAddressLiteral ? nil : key.host)
                try context.pipeline.syncOperations.addHandler(handler, position: .first)
            } catch {
                return fail(
                    context: context,
                    UpstreamError(.tls, "cannot start TLS to the server: \(error)"))
            }
            state = .startingUp
            login.encryptionEstablished()
            sendStartup(context)
        case UInt8(ascii: "N") where !key.tls.required:
            state = .startingUp
            sendStartup(context)
        case UInt8(ascii: "N"):
            fail(
                context: context,
                UpstreamError(
                    .tls,
                    "the server does not support TLS, but the database URL asks for sslmode=\(key.tls.mode.rawValue)"))
        default:
            fail(
                context: context,
                UpstreamError(.protocolViolation, "the server answered the TLS request with an unexpected byte"))
        }
    }

    private func sendStartup(_ context: ChannelHandlerContext) {
        let key = connection.key
        var parameters = [StartupParameter("user", key.role), StartupParameter("database", key.database)]
        parameters += key.parameters
        context.writeAndFlush(wrapOutboundOut(Frontend.startup(parameters: parameters)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = pending {
            // Released before the append (see ClientSessionHandler.channelRead): a shared
            // buffer would be copied whole on every read of a large message.
            pending = nil
            buffered.writeBuffer(&incoming)
            incoming = buffered
        }
        if case .ready = state, let sink = connection.sink {
            relay(&incoming, to: sink, context: context)
        } else if case .negotiatingTLS = state {
            tlsAnswer(&incoming, context: context)
        } else {
            handleControl(&incoming, context: context)
        }
        if incoming.readableBytes > 0 {
            // Keep only the incomplete tail, as its own view: the buffer it came from (much
            // of it already forwarded) must not be copied along when the next read appends.
            pending = incoming.slice()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .ready = state, let sink = connection.sink { sink.upstreamFlush(connection) }
    }

    /// What the server sends while a session relays (see ``ServerRelay``).
    private var relaying = ServerRelay()

    /// Forwards the server's bytes to `sink` as ``ServerRelay`` decides: complete messages in one
    /// slice, a large message as its bytes arrive, never a copy.
    private func relay(_ buffer: inout ByteBuffer, to sink: any UpstreamSink, context: ChannelHandlerContext) {
        let step: ServerRelay.Step
        do {
            step = try relaying.serverBytes(
                buffer, observing: connection.observesStatements, ledger: &connection.ledger)
        } catch {
            fail(context: context, UpstreamError(.protocolViolation, "the server sent a malformed message: \(error)"))
            return
        }
        if step.continued > 0 {
            sink.upstream(
                connection, forward: buffer.readSlice(length: step.continued)!, status: nil, statementsEnded: nil)
        }
        if step.complete > 0 {
            if let fatal = step.fatal { connection.fatalError = fatal }
            if let status = step.status { connection.status = status }
            // One clock reading per read: its messages arrived together.
            sink.upstream(
                connection, forward: buffer.readSlice(length: step.complete)!, status: step.status,
                statementsEnded: step.endsStatements ? NIODeadline.now().uptimeNanoseconds : nil)
        }
        if step.startedBytes > 0 {
            sink.upstream(
                connection, forward: buffer.readSlice(length: step.startedBytes)!, status: nil, statementsEnded: nil)
        }
    }

    private func handleControl(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        if relaying.insideMessage {
            // The session left in the middle of a large message: what follows cannot be framed.
            buffer.clear()
            return fail(context: context, UpstreamError(.closed, "the session ended inside a large message"))
        }
        while true {
            let message: WireMessage?
            do {
                message = try WireFraming.message(from: &buffer)
            } catch {
                fail(
                    context: context, UpstreamError(.protocolViolation, "the server sent a malformed message: \(error)")
                )
                return
            }
            guard let message else { return }
            switch state {
            case .startingUp: startup(message, context: context)
            case .negotiatingTLS: return
            case .resetting(let promise, let discarded):
                // Answers still owed to the previous client (it left mid-pipeline) come first:
                // the reset is done at the ReadyForQuery after DISCARD ALL's own CommandComplete.
                if message.type == UInt8(ascii: "C") {
                    var body = message.body
                    if body.readNullTerminatedString() == "DISCARD ALL" { state = .resetting(promise, discarded: true) }
                    continue
                }
                switch BackendStartupMessage(message) {
                case .readyForQuery where !discarded:
                    continue
                case .readyForQuery(let status):
                    connection.status = status
                    state = .ready
                    deadline?.cancel()
                    if status == UInt8(ascii: "I") {
                        connection.ledger = RequestLedger()
                        promise.succeed(())
                    } else {
                        promise.fail(UpstreamError(.closed, "the server is not idle after DISCARD ALL"))
                    }
                case .error(let fields):
                    state = .failed
                    promise.fail(UpstreamError(.closed, fields.message, serverSQLState: fields.code))
                default: break  // CommandComplete, ParameterStatus resets
                }
            case .ready:
                // Nobody attached (an idle pooled connection): only notices or a shutdown may come.
                if case .error = BackendStartupMessage(message) { context.close(promise: nil) }
            case .failed: return
            }
        }
    }

    /// A login message from the server, through the login machine.
    private func startup(_ message: WireMessage, context: ChannelHandlerContext) {
        switch login.received(BackendStartupMessage(message)) {
        case .wait:
            break
        case .send(let reply):
            write(reply, context)
        case .fail(let description, let sqlState):
            fail(context: context, UpstreamError(.loginRefused, description, serverSQLState: sqlState))
        case .ready:
            connection.parameterStatus = login.parameterStatus
            connection.processID = login.processID
            connection.secretKey = login.secretKey
            connection.status = login.transactionStatus
            state = .ready
            deadline?.cancel()
            ready.succeed(connection)
        }
    }

    func reset(channel: any Channel) -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        guard case .ready = state, channel.isActive else {
            promise.fail(UpstreamError(.closed, "connection not reusable"))
            return promise.futureResult
        }
        state = .resetting(promise, discarded: false)
        if let context { awaitAnswer("answer \(UpstreamConnection.resetQuery)", context: context) }
        channel.writeAndFlush(Frontend.query(UpstreamConnection.resetQuery).encoded(), promise: nil)
        return promise.futureResult
    }

    private func write(_ message: WireMessage, _ context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(message.encoded()), promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ error: UpstreamError) {
        switch state {
        case .startingUp, .negotiatingTLS: ready.fail(error)
        default: break
        }
        if case .resetting(let promise, _) = state { promise.fail(error) }
        state = .failed
        deadline?.cancel()
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .startingUp, .negotiatingTLS:
            ready.fail(UpstreamError(.closed, "the server closed the connection during login"))
        case .resetting(let promise, _): promise.fail(UpstreamError(.closed, "the server closed the connection"))
        default: break
        }
        state = .failed
        connection.sink?.upstreamClosed(connection)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, UpstreamError(.closed, "\(error)"))
    }
}
