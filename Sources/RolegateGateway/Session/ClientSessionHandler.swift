import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import PostgresWire
import RolegateCore
import RolegateTokens

/// One client connection: startup, token authentication (SCRAM-SHA-256 against the
/// token's stored verifier; the token never crosses the wire), an upstream connection
/// as the token's role, then relaying whole protocol messages both ways.
///
/// Nothing upstream is touched before the token is verified. Every refusal is an
/// `ErrorResponse` with a real SQLSTATE, then the connection closes.
final class ClientSessionHandler: ChannelInboundHandler, UpstreamSink {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Login {
        var service: String
        var database: DatabaseSpec
        var url: ConnectionURL
        var parameters: [StartupParameter]
        var scram: SCRAMServer?
        var candidates: [TokenRecord] = []
        var cleartext: Bool
    }

    enum State {
        case startup
        case authenticating(Login)
        case connecting
        case relaying
        case closed
    }

    let shared: GatewayShared
    var state = State.startup
    var context: ChannelHandlerContext?
    var pending: ByteBuffer?
    /// True while an asynchronous step (store lookup, upstream login) runs: input waits.
    var paused = false
    var processing = false
    /// The session runs over TLS.
    var encrypted = false
    var counted = false
    var loginTimeout: Scheduled<Void>?
    var upstream: UpstreamConnection?
    var cancelKey: CancelKey?
    var record: TokenRecord?
    /// Set when the session was ended from outside (revocation): its server connection is not reused.
    var poisoned = false

    static let authMessageLimit = 16 * 1024

    init(shared: GatewayShared) {
        self.shared = shared
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        guard shared.registry.clientConnected() else {
            refuse(context, ErrorFields.fatal("53300", "sorry, too many clients already"))
            return
        }
        counted = true
        let timeout = shared.configuration.clientLoginTimeout
        loginTimeout = context.eventLoop.assumeIsolated().scheduleTask(
            in: .nanoseconds(Int64(timeout.timeInterval * 1e9))
        ) {
            [weak self] in
            guard let self, let context = self.context else { return }
            switch self.state {
            case .relaying, .closed: return
            case .connecting:
                self.refuse(
                    context,
                    ErrorFields.fatal(
                        "53300",
                        "no server connection for role \"\(self.record?.role ?? "")\" became free within \(DurationText.format(timeout)) (all are in use by other sessions)"
                    ))
            default:
                self.refuse(
                    context,
                    ErrorFields.fatal("08P01", "the startup did not complete within \(DurationText.format(timeout))"))
            }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        loginTimeout?.cancel()
        if counted {
            shared.registry.clientDisconnected()
            counted = false
        }
        if let key = cancelKey {
            shared.registry.unregister(key)
            cancelKey = nil
        }
        if let upstream {
            self.upstream = nil
            if poisoned {
                upstream.close()
            } else {
                shared.pool(for: context.eventLoop).release(upstream)
            }
        }
        state = .closed
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = pending {
            buffered.writeBuffer(&incoming)
            pending = buffered
        } else {
            pending = incoming
        }
        process(context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .relaying = state { upstream?.flush() }
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Backpressure: a client that does not read its results stops us reading from the server.
        if let upstream {
            _ = upstream.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: - Input

    /// Handles buffered input until it runs out or an asynchronous step pauses it. Not
    /// reentrant: a step that completes at once (a pooled connection) continues this loop.
    private func process(_ context: ChannelHandlerContext) {
        guard !processing else { return }
        processing = true
        defer { processing = false }
        while !paused, var buffer = pending, buffer.readableBytes > 0 {
            pending = nil
            let before = buffer.readableBytes
            switch state {
            case .startup:
                handleStartup(&buffer, context)
            case .authenticating(let login):
                handleAuthentication(&buffer, login, context)
            case .relaying:
                relay(&buffer, context)
            case .connecting, .closed:
                return
            }
            if buffer.readableBytes > 0, case .closed = state {
                buffer.clear()
            }
            if buffer.readableBytes > 0 {
                if var newer = pending { buffer.writeBuffer(&newer) }
                pending = buffer
            }
            if buffer.readableBytes == before { return }  // waiting for more bytes
        }
    }

    private func handleStartup(_ buffer: inout ByteBuffer, _ context: ChannelHandlerContext) {
        let packet: StartupPacket?
        do {
            packet = try WireFraming.startupPacket(from: &buffer, limits: shared.limits)
        } catch {
            buffer.clear()
            return refuse(context, ErrorFields.fatal("08P01", error.description))
        }
        guard let packet else { return }
        switch packet {
        case .sslRequest, .gssEncRequest:
            // Bytes sent before our answer would bypass TLS (CVE-2021-23214): refuse them.
            if buffer.readableBytes > 0 {
                buffer.clear()
                return refuse(
                    context, ErrorFields.fatal("08P01", "received unencrypted data after an encryption request"))
            }
            if packet == .sslRequest, let tls = shared.configuration.tls, !encrypted {
                encrypted = true
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "S")), promise: nil)
                do {
                    try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
                } catch {
                    refuse(context, ErrorFields.fatal("08P01", "TLS setup failed"))
                }
            } else {
                // No TLS here (or already encrypted), and never GSS: the client may go on in plain text.
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "N")), promise: nil)
            }
        case .cancel(let processID, let secret):
            buffer.clear()
            shared.registry.cancel(CancelKey(processID: processID, secret: secret))
            state = .closed
            context.close(promise: nil)
        case .startup(let major, let minor, let parameters):
            startup(major: major, minor: minor, parameters: parameters, context)
        }
    }

    private func startup(major: Int, minor: Int, parameters: [StartupParameter], _ context: ChannelHandlerContext) {
        if shared.configuration.requireTLS, !encrypted {
            return refuse(
                context, ErrorFields.fatal("28000", "this gateway accepts TLS connections only (use sslmode=require)"))
        }
        guard major == 3 else {
            return refuse(
                context,
                ErrorFields.fatal(
                    "0A000", "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.0"))
        }
        let protocolOptions = parameters.filter { $0.name.hasPrefix("_pq_.") }.map(\.name)
        if minor > 0 || !protocolOptions.isEmpty {
            write(Backend.negotiateProtocolVersion(minor: 0, unrecognized: protocolOptions), context)
        }
        func value(_ name: String) -> String? { parameters.last { $0.name == name }?.value }
        guard let service = value("user"), !service.isEmpty else {
            return refuse(context, ErrorFields.fatal("28000", "no user name specified in the startup packet"))
        }
        if let replication = value("replication"), !["false", "off", "no", "0"].contains(replication.lowercased()) {
            return refuse(
                context, ErrorFields.fatal("0A000", "replication connections are not supported by the gateway"))
        }
        let databaseName = value("database").flatMap { $0.isEmpty ? nil : $0 } ?? service
        guard let database = shared.configuration.policy.database(named: databaseName),
            let url = try? ConnectionURL(parsing: database.url)
        else {
            return refuse(context, ErrorFields.fatal("3D000", "database \"\(databaseName)\" does not exist"))
        }
        let passed = parameters.filter {
            !["user", "database", "replication"].contains($0.name) && !$0.name.hasPrefix("_pq_.")
        }
        let cleartext =
            shared.configuration.allowCleartextOnLoopback && context.channel.remoteAddress.map(isLoopback) == true
        let login = Login(
            service: service, database: database, url: url, parameters: passed, scram: nil, cleartext: cleartext)
        state = .authenticating(login)
        write(
            cleartext
                ? Backend.authenticationCleartextPassword() : Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"]),
            context)
        context.flush()
    }

    private func handleAuthentication(_ buffer: inout ByteBuffer, _ login: Login, _ context: ChannelHandlerContext) {
        let message: WireMessage?
        do {
            message = try WireFraming.message(
                from: &buffer, limits: WireLimits(maxMessageLength: Self.authMessageLimit))
        } catch {
            buffer.clear()
            return refuse(context, ErrorFields.fatal("08P01", error.description))
        }
        guard let message else { return }
        guard message.type == UInt8(ascii: "p") else {
            buffer.clear()
            return refuse(
                context,
                ErrorFields.fatal(
                    "08P01",
                    "expected a password response, got message type '\(Character(Unicode.Scalar(message.type)))'"))
        }
        if login.cleartext {
            guard let token = try? PasswordMessageBody.password(message.body) else {
                return refuse(context, ErrorFields.fatal("08P01", "malformed password message"))
            }
            return checkCleartext(token, login, context)
        }
        if let server = login.scram {
            let data = PasswordMessageBody.saslResponse(message.body)
            var attempt = server
            do {
                let (index, final) = try attempt.receiveClientFinal(
                    data, candidates: login.candidates.map(\.secret.scram))
                admit(login.candidates[index], login: login, serverFinal: final, context)
            } catch SCRAMError.proofRejected {
                // The candidates may predate a token issued a moment ago: ask the store once more.
                retryProof(data, server: server, login: login, context)
            } catch {
                refuseAuthentication(login, context)
            }
            return
        }
        guard let (mechanism, data) = try? PasswordMessageBody.saslInitialResponse(message.body) else {
            return refuse(context, ErrorFields.fatal("08P01", "malformed SASLInitialResponse"))
        }
        guard mechanism == "SCRAM-SHA-256" else {
            return refuse(
                context, ErrorFields.fatal("28000", "SASL mechanism \(mechanism) is not supported (use SCRAM-SHA-256)"))
        }
        // Look up the service's tokens off the event loop, then answer the challenge.
        paused = true
        let verifier = shared.configuration.verifier
        let service = login.service
        let promise = context.eventLoop.makePromise(of: Result<[TokenRecord]?, TokenVerifier.Failure>.self)
        promise.completeWithTask { await verifier.scramCandidates(service: service) }
        promise.futureResult.assumeIsolated().whenSuccess { [self] result in
            guard let context = self.context else { return }
            self.paused = false
            var login = login
            switch result {
            case .failure:
                return self.refuse(context, ErrorFields.fatal("08006", "the token store is unavailable; try again"))
            case .success(let records):
                login.candidates = records ?? []
            }
            // Every token of a service shares its salt; a service without tokens gets a
            // stable made-up salt, so its answer looks like any other.
            let scram = login.candidates.first?.secret.scram
            var server = SCRAMServer(
                salt: scram?.salt ?? self.shared.decoySalt(for: service),
                iterations: scram?.iterations ?? SCRAMSHA256.defaultIterations)
            do {
                let first = try server.receiveClientFirst(data)
                login.scram = server
                self.state = .authenticating(login)
                self.write(Backend.authenticationSASLContinue(first), context)
                context.flush()
                self.process(context)
            } catch SCRAMError.channelBindingUnsupported {
                self.refuse(
                    context, ErrorFields.fatal("28000", "SCRAM channel binding is not supported by this server"))
            } catch {
                self.refuse(context, ErrorFields.fatal("08P01", "malformed SCRAM message"))
            }
        }
    }

    private func retryProof(_ data: [UInt8], server: SCRAMServer, login: Login, _ context: ChannelHandlerContext) {
        paused = true
        let verifier = shared.configuration.verifier
        let service = login.service
        let promise = context.eventLoop.makePromise(of: Result<[TokenRecord]?, TokenVerifier.Failure>.self)
        promise.completeWithTask { await verifier.scramCandidates(service: service, fresh: true) }
        promise.futureResult.assumeIsolated().whenSuccess { [self] result in
            guard let context = self.context else { return }
            self.paused = false
            guard case .success(let records?) = result,
                records.map(\.id) != login.candidates.map(\.id),
                records.first?.secret.scram.salt == login.candidates.first?.secret.scram.salt
                    || login.candidates.isEmpty
            else { return self.refuseAuthentication(login, context) }
            var attempt = server
            var login = login
            login.candidates = records
            do {
                let (index, final) = try attempt.receiveClientFinal(data, candidates: records.map(\.secret.scram))
                self.admit(records[index], login: login, serverFinal: final, context)
                self.process(context)
            } catch {
                self.refuseAuthentication(login, context)
            }
        }
    }

    private func checkCleartext(_ token: String, _ login: Login, _ context: ChannelHandlerContext) {
        paused = true
        let verifier = shared.configuration.verifier
        let promise = context.eventLoop.makePromise(of: Result<TokenVerifier.Verified, TokenVerifier.Failure>.self)
        promise.completeWithTask { await verifier.verify(token) }
        promise.futureResult.assumeIsolated().whenSuccess { [self] result in
            guard let context = self.context else { return }
            self.paused = false
            switch result {
            case .success(let verified) where verified.service == login.service:
                self.admit(verified.record, login: login, serverFinal: nil, context)
            case .failure(.revoked): self.refuse(context, ErrorFields.fatal("28000", "token revoked"))
            case .failure(.expired): self.refuse(context, ErrorFields.fatal("28000", "token expired"))
            case .failure(.unavailable):
                self.refuse(context, ErrorFields.fatal("08006", "the token store is unavailable; try again"))
            default: self.refuseAuthentication(login, context)
            }
        }
    }

    private func refuseAuthentication(_ login: Login, _ context: ChannelHandlerContext) {
        refuse(context, ErrorFields.fatal("28P01", "password authentication failed for user \"\(login.service)\""))
    }

    /// The proof matched `candidate`: check it is still allowed, then log in upstream.
    private func admit(_ candidate: TokenRecord, login: Login, serverFinal: [UInt8]?, _ context: ChannelHandlerContext)
    {
        guard candidate.service == login.service else { return refuseAuthentication(login, context) }
        switch shared.configuration.verifier.admit(candidate) {
        case .failure(.revoked): return refuse(context, ErrorFields.fatal("28000", "token revoked"))
        case .failure(.expired): return refuse(context, ErrorFields.fatal("28000", "token expired"))
        case .failure: return refuseAuthentication(login, context)
        case .success: break
        }
        if let serverFinal { write(Backend.authenticationSASLFinal(serverFinal), context) }
        guard let key = shared.registry.register(channel: context.channel, record: candidate) else {
            return refuse(context, ErrorFields.fatal("53300", "too many connections for service \"\(login.service)\""))
        }
        cancelKey = key
        record = candidate
        state = .connecting
        paused = true

        // Upstream as the token's role; application_name carries the token id so
        // pg_stat_activity attributes every backend.
        var parameters = login.parameters.filter { $0.name != "application_name" }
        let application = login.parameters.last { $0.name == "application_name" }?.value ?? ""
        let tag = "rolegate:\(candidate.id)"
        parameters.append(
            StartupParameter("application_name", application.isEmpty ? tag : "\(application.prefix(40)) [\(tag)]"))
        let upstreamKey = UpstreamKey(
            host: login.url.host, port: login.url.port,
            socketPath: login.url.unixSocketDirectory.map { "\($0)/.s.PGSQL.\(login.url.port)" },
            database: login.url.database, role: candidate.role, parameters: parameters.sorted { $0.name < $1.name })
        let password = shared.configuration.masterKey.rolePassword(role: candidate.role)
        // A role's CONNECTION LIMIT caps its server connections too: clients beyond it wait.
        let roleLimit = shared.configuration.policy.role(named: candidate.role)?.connectionLimit ?? -1
        let cap = roleLimit > 0 ? roleLimit : Int.max
        shared.pool(for: context.eventLoop).acquire(key: upstreamKey, password: password, cap: cap).assumeIsolated()
            .whenComplete {
                [self] result in
                guard let context = self.context, case .connecting = self.state else {
                    if case .success(let connection) = result {
                        self.shared.pool(for: connection.channel.eventLoop).release(connection)
                    }
                    return
                }
                switch result {
                case .failure(let error):
                    let upstreamError = error as? UpstreamError
                    let code = upstreamError?.sqlState == "53300" ? "53300" : "08006"
                    self.refuse(
                        context,
                        ErrorFields.fatal(
                            code,
                            "could not open a server connection for database \"\(login.database.name)\": \(upstreamError?.description ?? "\(error)")"
                        ))
                case .success(let connection):
                    self.attach(connection, key: key, context)
                }
            }
    }

    private func attach(_ connection: UpstreamConnection, key: CancelKey, _ context: ChannelHandlerContext) {
        upstream = connection
        connection.sink = self
        loginTimeout?.cancel()
        write(Backend.authenticationOk(), context)
        for (name, value) in connection.parameterStatus { write(Backend.parameterStatus(name, value), context) }
        write(Backend.backendKeyData(processID: key.processID, secretKey: key.secret), context)
        write(Backend.readyForQuery(connection.status), context)
        context.flush()
        state = .relaying
        paused = false
        process(context)
    }

    // MARK: - Relaying

    /// Forwards every complete client message to the server in one slice. A Terminate
    /// ends the session here (the server connection goes back to the pool).
    private func relay(_ buffer: inout ByteBuffer, _ context: ChannelHandlerContext) {
        guard let upstream else { return }
        var terminate = false
        let complete: Int
        do {
            complete = try WireFraming.scanMessages(buffer, limits: shared.limits) { type, _, _ in
                terminate = type == UInt8(ascii: "X")
                return !terminate
            }
        } catch {
            buffer.clear()
            return refuse(context, ErrorFields.fatal("08P01", error.description))
        }
        if complete > 0 { upstream.write(buffer.readSlice(length: complete)!) }
        if terminate {
            buffer.clear()
            upstream.flush()
            state = .closed
            context.close(promise: nil)
        }
    }

    func upstream(_ connection: UpstreamConnection, forward bytes: ByteBuffer, status: UInt8?) {
        guard let context, case .relaying = state else { return }
        context.write(wrapOutboundOut(bytes), promise: nil)
        if !context.channel.isWritable {
            _ = connection.channel.setOption(ChannelOptions.autoRead, value: false)
        }
    }

    func upstreamFlush(_ connection: UpstreamConnection) {
        context?.flush()
    }

    func upstreamClosed(_ connection: UpstreamConnection) {
        guard let context, upstream === connection else { return }
        upstream = nil
        if case .relaying = state {
            refuse(context, ErrorFields.fatal("08006", "the server connection was lost"))
        }
    }

    // MARK: - Events from outside

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? SessionEvent else { return context.fireUserInboundEventTriggered(event) }
        switch event {
        case .cancel:
            if let upstream, upstream.busy { shared.cancelUpstream(upstream) }
        case .end(let code, let message):
            guard case .relaying = state else { return }
            poisoned = true
            if let upstream, upstream.busy { shared.cancelUpstream(upstream) }
            refuse(context, ErrorFields.fatal(code, message))
        }
    }

    // MARK: - Output

    private func write(_ message: WireMessage, _ context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(message.encoded(allocator: context.channel.allocator)), promise: nil)
    }

    /// Sends a FATAL error and closes.
    private func refuse(_ context: ChannelHandlerContext, _ fields: ErrorFields) {
        if case .closed = state { return }
        state = .closed
        pending = nil
        context.writeAndFlush(wrapOutboundOut(Backend.error(fields).encoded()), promise: nil)
        context.close(promise: nil)
    }

    private func isLoopback(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4: return address.ipAddress?.hasPrefix("127.") == true
        case .v6: return address.ipAddress == "::1"
        case .unixDomainSocket: return true
        }
    }
}
