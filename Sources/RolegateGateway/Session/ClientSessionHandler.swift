import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PostgresWire
import RolegateAudit
import RolegateCore
import RolegateTokens

/// One client connection on the network: decodes what the client sends into packets,
/// feeds them to its ``ClientSessionMachine`` and performs the actions it returns (TLS,
/// token lookups, admission, the upstream login), then relays whole protocol messages
/// both ways.
final class ClientSessionHandler: ChannelInboundHandler, UpstreamSink {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let shared: GatewayShared
    var machine: ClientSessionMachine?
    var context: ChannelHandlerContext?
    var pending: ByteBuffer?
    /// True while an asynchronous step (store lookup, upstream login) runs: input waits.
    var paused = false
    var processing = false
    var counted = false
    var loginTimeout: Scheduled<Void>?
    var upstream: UpstreamConnection?
    var cancelKey: CancelKey?
    /// The ClientHello of a direct TLS connection, read before TLS was set up.
    var directTLSBytes: ByteBuffer?
    /// The session's audit trail (see ClientSessionHandler+Audit.swift).
    var audit = SessionAudit()
    /// The last statement event's detail, reused while statements repeat (see ClientSessionHandler+Audit.swift).
    var statementDetail = StatementDetail()
    /// Whether server answers were written to the client since ``upstreamFlush(_:)`` last flushed.
    private var answersUnflushed = false
    /// Shown by the admin API's session list.
    var sessionStatus: SessionStatus?

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
        let configuration = shared.configuration
        machine = ClientSessionMachine(
            settings: .init(
                policy: configuration.policy, tlsAvailable: configuration.tls != nil,
                requireTLS: configuration.requireTLS, passwordOverTLS: configuration.passwordOverTLS,
                passwordOnLoopback: configuration.allowCleartextOnLoopback,
                fromLoopback: context.channel.remoteAddress.map(Self.isLoopback) == true,
                databaseURLs: shared.databaseURLs, tagApplicationName: configuration.tagApplicationName))
        machine?.settings.identityPasswords = configuration.identityLogin != nil
        shared.metrics.increment("rolegate_connections_total")
        guard shared.registry.clientConnected() else {
            shared.metrics.increment("rolegate_connections_refused_total", ["reason": "too_many_clients"])
            perform(.refuse(ErrorFields.fatal("53300", "sorry, too many clients already")), context)
            return
        }
        counted = true
        let timeout = configuration.clientLoginTimeout
        loginTimeout = context.eventLoop.assumeIsolated().scheduleTask(
            in: TimeAmount(timeout)
        ) { [weak self] in
            guard let self, let context = self.context else { return }
            self.event(context) { $0.loginTimedOut(after: timeout) }
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
            if machine?.serverConnectionReusable == true {
                shared.pool(for: context.eventLoop).release(upstream)
            } else {
                upstream.close()
            }
        }
        _ = machine?.end("08006", "closed")
        auditSessionEnd()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = pending {
            // Released first, so the append grows a buffer nobody else holds (amortized, in
            // place) instead of copying the whole partial message on every read: quadratic
            // time for a large message.
            pending = nil
            buffered.writeBuffer(&incoming)
            pending = buffered
        } else {
            pending = incoming
        }
        process(context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if machine?.isRelaying == true { upstream?.flush() }
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Backpressure: a client that does not read its results stops us reading from the server.
        if let upstream {
            _ = upstream.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable)
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let alpn) = event as? TLSUserEvent {
            self.event(context) { $0.tlsEstablished(alpn: alpn) }
            return process(context)
        }
        guard let event = event as? SessionEvent else { return context.fireUserInboundEventTriggered(event) }
        switch event {
        case .cancel:
            if let upstream, upstream.busy { shared.cancelUpstream(upstream) }
        case .end(let end):
            // Registered sessions are ended whether they relay yet or still wait for their
            // server connection (a revocation or a kill must not slip in between).
            guard let machine, !machine.isClosed else { return }
            audit.endReason = end.cause.rawValue
            audit.endedBy = end.by
            if let upstream, upstream.busy { shared.cancelUpstream(upstream) }
            self.event(context) { $0.ended(end) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A client that resets its connection is ordinary; anything else (a TLS failure, a
        // pipeline error) is said, with the session, so it can be found again.
        if let io = error as? IOError, [ECONNRESET, EPIPE].contains(io.errnoCode) {
            audit.endReason = audit.endReason ?? "client connection reset"
        } else {
            audit.endReason = audit.endReason ?? "error: \(error)"
            var metadata: Logger.Metadata = ["session": "\(audit.id)", "client": "\(clientAddress(context) ?? "?")"]
            if let token = machine?.provenToken {
                metadata["service"] = "\(token.service)"
                metadata["token_id"] = "\(token.id)"
            }
            shared.configuration.logger.notice(
                "client connection closed after an error", error: error, metadata: metadata)
        }
        context.close(promise: nil)
    }

    // MARK: - Input

    /// Handles buffered input until it runs out or an asynchronous step pauses it. Not
    /// reentrant: a step that completes at once (a pooled connection) continues this loop.
    private func process(_ context: ChannelHandlerContext) {
        guard !processing else { return }
        processing = true
        defer { processing = false }
        while !paused, var buffer = pending, buffer.readableBytes > 0, let machine {
            pending = nil
            let before = buffer.readableBytes
            if machine.isRelaying {
                relay(&buffer, context)
            } else if machine.expectsStartupPacket {
                decodeStartup(&buffer, context)
            } else if machine.expectsPasswordMessage {
                decodePassword(&buffer, context)
            } else if machine.isClosed {
                buffer.clear()
            } else {
                // Waiting for TLS, the store or the server: keep the bytes for later.
                pending = buffer.slice()
                return
            }
            if buffer.readableBytes > 0 {
                // Only the unprocessed tail, as its own view (see UpstreamHandler.channelRead).
                var rest = buffer.slice()
                if var newer = pending { rest.writeBuffer(&newer) }
                pending = rest
            }
            if buffer.readableBytes == before { return }  // waiting for more bytes
        }
    }

    /// Carries on with buffered input outside a read (a timer, a finished lookup, a pooled
    /// connection that arrived later). No `channelReadComplete` follows to flush what the
    /// relay wrote to the server, so this flushes it: a statement held back while the audit
    /// queue was full would otherwise sit unsent, and its client wait forever.
    private func processOutsideRead(_ context: ChannelHandlerContext) {
        process(context)
        if machine?.isRelaying == true { upstream?.flush() }
    }

    private func decodeStartup(_ buffer: inout ByteBuffer, _ context: ChannelHandlerContext) {
        // A TLS handshake record instead of a length: direct TLS (sslnegotiation=direct).
        if buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == 0x16 {
            directTLSBytes = buffer.readSlice(length: buffer.readableBytes)
            return event(context) { $0.directTLS() }
        }
        do {
            guard let packet = try WireFraming.startupPacket(from: &buffer, limits: shared.limits) else { return }
            let bytesFollow = buffer.readableBytes > 0
            event(context) { $0.startupPacket(packet, bytesFollow: bytesFollow) }
        } catch {
            buffer.clear()
            event(context) { $0.malformedInput(error) }
        }
    }

    private func decodePassword(_ buffer: inout ByteBuffer, _ context: ChannelHandlerContext) {
        do {
            let limits = WireLimits(maxMessageLength: ClientSessionMachine.authMessageLimit)
            guard let message = try WireFraming.message(from: &buffer, limits: limits) else { return }
            event(context) { $0.passwordMessage(message) }
        } catch {
            buffer.clear()
            event(context) { $0.malformedInput(error) }
        }
    }

    // MARK: - Actions

    /// Feeds one event to the machine and performs the action it returns.
    private func event(
        _ context: ChannelHandlerContext, _ body: (inout ClientSessionMachine) -> ClientSessionMachine.Action
    ) {
        // Mutated in place: a copy and write-back of the machine (a few dozen references)
        // cost ~3% of the gateway's CPU per login. `body` must not touch `self.machine`.
        guard machine != nil else { return }
        let action = body(&machine!)
        perform(action, context)
    }

    private func perform(_ action: ClientSessionMachine.Action, _ context: ChannelHandlerContext) {
        switch action {
        case .wait:
            break
        case .send(let messages):
            for message in messages { write(message, context) }
            context.flush()
        case .startTLS:
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "S")), promise: nil)
            guard let tls = shared.configuration.tls else { return }
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
            } catch {
                context.close(promise: nil)
            }
        case .startDirectTLS:
            guard let tls = shared.configuration.tls, let hello = directTLSBytes else { return }
            directTLSBytes = nil
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
            } catch {
                return context.close(promise: nil)
            }
            // Replay the ClientHello from the head of the pipeline, through the TLS handler.
            context.pipeline.syncOperations.fireChannelRead(NIOAny(hello))
        case .declineEncryption:
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "N")), promise: nil)
        case .lookUpTokens(let service, let fresh):
            let decoySalt = shared.decoySalt(for: service)
            let verifier = shared.configuration.verifier
            // Usually in memory: answered here, without a task and a hop back to this loop.
            if !fresh, let known = verifier.scramCandidatesFromMemory(service: service) {
                return event(context) { $0.tokensLoaded(known, decoySalt: decoySalt, nonce: SCRAMNonce.make()) }
            }
            offLoop(context, { await verifier.scramCandidates(service: service, fresh: fresh) }) {
                $0.tokensLoaded($1, decoySalt: decoySalt, nonce: SCRAMNonce.make())
            }
        case .verifyPassword(let token):
            let verifier = shared.configuration.verifier
            // Usually answered from memory, here; the store only when memory cannot.
            if let known = verifier.verifyFromMemory(token) {
                return event(context) { $0.passwordVerified(known) }
            }
            offLoop(context, { await verifier.verify(token) }) { $0.passwordVerified($1) }
        case .exchangeIdentity(let jwt, let user):
            guard let exchange = shared.configuration.identityLogin else { return }
            offLoop(context, { await exchange(jwt, user) }) { $0.identityExchanged($1) }
        case .admit(let record):
            admit(record, context)
        case .connectUpstream(let request, let messages):
            for message in messages { write(message, context) }
            connectUpstream(request, context)
        case .startRelaying(let messages):
            loginTimeout?.cancel()
            guard auditSessionStart(context) else {
                return perform(
                    .refuse(
                        ErrorFields.fatal(
                            "53000",
                            "the audit log cannot be written right now, so no new sessions are accepted; try again later"
                        )),
                    context)
            }
            for message in messages { write(message, context) }
            context.flush()
            paused = false
            processOutsideRead(context)
        case .cancel(let key):
            shared.routeCancel(key, on: context.eventLoop)
            context.close(promise: nil)
        case .refuse(let fields):
            pending = nil
            // A wrong token (or unknown service) counts against the client's address;
            // past the limit, the answer waits (see LoginThrottle).
            if fields.code == "28P01", let address = context.channel.remoteAddress?.ipAddress {
                let outcome = shared.loginThrottle.failed(address: address)
                auditRefusal(fields, context, throttled: outcome)
                if case .delay(let amount) = outcome.verdict {
                    shared.metrics.increment("rolegate_auth_delayed_total", ["channel": "wire"])
                    paused = true
                    let throttle = shared.loginThrottle
                    context.eventLoop.assumeIsolated().scheduleTask(in: amount) { [weak self] in
                        // Given back even when the client left meanwhile (and this handler with it).
                        throttle.delayedAnswerSent(address: address)
                        guard let self, let context = self.context else { return }
                        self.sendRefusal(fields, context)
                    }
                    return
                }
            } else {
                auditRefusal(fields, context, throttled: nil)
            }
            sendRefusal(fields, context)
        }
    }

    private func sendRefusal(_ fields: ErrorFields, _ context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(Backend.error(fields).encoded()), promise: nil)
        context.close(promise: nil)
    }

    /// Runs `work` off the event loop (input waits), then feeds its result to the machine.
    private func offLoop<T: Sendable>(
        _ context: ChannelHandlerContext, _ work: @escaping @Sendable () async -> T,
        then: @escaping (inout ClientSessionMachine, T) -> ClientSessionMachine.Action
    ) {
        paused = true
        let promise = context.eventLoop.makePromise(of: T.self)
        promise.completeWithTask(work)
        promise.futureResult.assumeIsolated().whenSuccess { [self] result in
            guard let context = self.context else { return }
            self.paused = false
            self.event(context) { then(&$0, result) }
            self.processOutsideRead(context)
        }
    }

    /// Takes a session slot for a proven token, then checks the token as it is *now* (not as it
    /// was when its proof began) and feeds the verdict to the machine.
    ///
    /// Registered first, checked second: a revocation read from the change feed evicts the token
    /// from memory before it ends the registered sessions, so it is either seen by this check (the
    /// token is read again) or finds this session registered and ends it. Neither order lets a
    /// session start on a revoked token.
    private func admit(_ record: TokenRecord, _ context: ChannelHandlerContext) {
        if shared.configuration.policy.service(named: record.service)?.admin == true {
            return event(context) { $0.admission(.adminToken) }
        }
        // Checked before registering: the shutdown sets it before it looks for sessions to end.
        if shared.shuttingDown.load(ordering: .sequentiallyConsistent) {
            return event(context) { $0.admission(.shuttingDown) }
        }
        let status = SessionStatus(
            id: audit.id, client: clientAddress(context), database: machine?.login?.database.name ?? "")
        guard let key = shared.registry.register(channel: context.channel, record: record, status: status) else {
            return event(context) { $0.admission(.serviceFull) }
        }
        sessionStatus = status
        cancelKey = key
        let verifier = shared.configuration.verifier
        if let known = verifier.admitFromMemory(record) {
            return event(context) { $0.admission(Self.refusal(known)) }
        }
        offLoop(context, { await verifier.admitCurrent(record) }) { $0.admission(Self.refusal($1)) }
    }

    private static func refusal(
        _ result: Result<TokenVerifier.Verified, TokenVerifier.Failure>
    ) -> ClientSessionMachine.AdmissionRefusal? {
        switch result {
        case .success: nil
        case .failure(.revoked): .revoked
        case .failure(.expired): .expired
        case .failure(.unavailable): .unavailable
        case .failure: .denied
        }
    }

    private func connectUpstream(_ request: ClientSessionMachine.UpstreamRequest, _ context: ChannelHandlerContext) {
        paused = true
        let role = request.record.role
        let password = shared.rolePassword(role)
        // A role's CONNECTION LIMIT caps its server connections too: clients beyond it wait.
        let cap = shared.serverConnectionCap(role: role)
        shared.pool(for: context.eventLoop).acquire(key: request.key, password: password, cap: cap)
            .assumeIsolated().whenComplete { [self] result in
                guard let context = self.context, let key = self.cancelKey, self.machine?.isClosed == false else {
                    if case .success(let connection) = result {
                        self.shared.pool(for: connection.channel.eventLoop).release(connection)
                    }
                    return
                }
                switch result {
                case .failure(let error):
                    let upstreamError =
                        error as? UpstreamError ?? UpstreamError(.unreachable, "\(error)")
                    self.event(context) { $0.upstreamFailed(upstreamError) }
                case .success(let connection):
                    self.upstream = connection
                    connection.sink = self
                    // The client's key names the real server process (see CancelKey).
                    guard let key = self.shared.registry.adopt(key, serverProcessID: connection.processID) else {
                        return self.event(context) { $0.end("57P01", "terminating connection: the session was ended") }
                    }
                    self.cancelKey = key
                    self.event(context) {
                        $0.upstreamReady(
                            parameterStatus: connection.parameterStatus, transactionStatus: connection.status,
                            cancelKey: key)
                    }
                }
            }
    }

    // MARK: - Relaying

    /// Sends the client's bytes to the server as the session machine decides (see
    /// ``ClientRelay``): complete messages in one slice, a large message (a huge Bind parameter,
    /// CopyData, a long query) as its bytes arrive, so one message costs neither memory of its
    /// size nor a second copy of it. Statements go to the server first and to the audit's
    /// tracker after, off the client's wait.
    private func relay(_ buffer: inout ByteBuffer, _ context: ChannelHandlerContext) {
        guard let upstream, machine != nil else { return }
        let tracking = audit.tracker != nil
        let step = machine!.clientBytes(
            buffer, limits: shared.limits, auditing: tracking, auditAccepting: { self.auditAccepting },
            ledger: &upstream.ledger, now: .now())
        if step.continued > 0 {
            audit.bytesIn += step.continued
            upstream.write(buffer.readSlice(length: step.continued)!)
        }
        if step.complete > 0 {
            audit.bytesIn += step.complete
            let messages = buffer.readSlice(length: step.complete)!
            upstream.write(messages)
            if tracking {
                // The statements go to the server first: following them for the audit log is then
                // off the client's wait (their answers are read on this loop, after this returns).
                let now = NIODeadline.now().uptimeNanoseconds
                upstream.flush()
                followClientMessages(messages, now: now)
            }
        }
        if let head = step.started {
            // A large message's head (up to what the audit reads of it) to the tracker, then
            // everything of it here on to the server.
            audit.tracker?.client(type: head.type, body: head.prefix, now: NIODeadline.now().uptimeNanoseconds)
            audit.bytesIn += step.startedBytes
            upstream.write(buffer.readSlice(length: step.startedBytes)!)
        }
        if let tracker = audit.tracker, tracker.count != audit.statusCount, let status = sessionStatus {
            audit.statusCount = tracker.count
            status.sent(tracker.lastSQL, at: NIODeadline.now().uptimeNanoseconds)
        }
        switch step.next {
        case .readMore:
            break
        case .hold(let retry):
            // A full audit queue is usually a passing stall of the store: the statement's bytes
            // stay buffered and are looked at again shortly (the machine gives up after a while).
            upstream.flush()
            paused = true
            context.eventLoop.assumeIsolated().scheduleTask(in: retry) { [weak self] in
                guard let self, let context = self.context else { return }
                self.paused = false
                self.processOutsideRead(context)
            }
        case .terminate:
            buffer.clear()
            upstream.flush()
            audit.endReason = "client quit"
            context.close(promise: nil)
        case .end(let fields, let reason):
            buffer.clear()
            upstream.flush()
            audit.endReason = reason
            perform(.refuse(fields), context)
        }
    }

    func upstream(_ connection: UpstreamConnection, forward bytes: ByteBuffer, status: UInt8?, statementsEnded: UInt64?)
    {
        let forwarding = machine?.isRelaying == true ? context : nil
        if let context = forwarding {
            audit.bytesOut += bytes.readableBytes
            answersUnflushed = true
            context.write(wrapOutboundOut(bytes), promise: nil)
            if !context.channel.isWritable {
                _ = connection.channel.setOption(ChannelOptions.autoRead, value: false)
            }
        }
        guard let statementsEnded else { return }
        sessionStatus?.answered(at: statementsEnded)
        // The answer goes to the client first: following its statements for the audit log is
        // then off the client's wait. Held in `audit` meanwhile, so that a session ending inside
        // the flush (the client gone) records them before its end.
        audit.unfollowedAnswers = (bytes, statementsEnded)
        if let context = forwarding { upstreamFlush(context) }
        followAnswers()
    }

    func upstreamFlush(_ connection: UpstreamConnection) {
        if let context { upstreamFlush(context) }
    }

    /// Sends the server's answers forwarded since the last flush, if any.
    private func upstreamFlush(_ context: ChannelHandlerContext) {
        guard answersUnflushed else { return }
        answersUnflushed = false
        context.flush()
    }

    func upstreamClosed(_ connection: UpstreamConnection) {
        guard let context, upstream === connection else { return }
        upstream = nil
        guard machine?.isRelaying == true else { return }
        if let fatal = connection.fatalError {
            // The server ended the session itself (pg_terminate_backend, its shutdown) and said so
            // to the client already: close as PostgreSQL would, with nothing of ours added.
            audit.endReason = "server ended the session: \(fatal.code) \(fatal.message)"
            machine?.serverEnded()
            upstreamFlush(context)
            context.close(promise: nil)
            return
        }
        audit.endReason = "error: server connection lost"
        event(context) { $0.end("08006", "the server connection was lost") }
    }

    // MARK: - Output

    private func write(_ message: WireMessage, _ context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(message.encoded(allocator: context.channel.allocator)), promise: nil)
    }

    private static func isLoopback(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4: return address.ipAddress?.hasPrefix("127.") == true
        case .v6: return address.ipAddress == "::1"
        case .unixDomainSocket: return true
        }
    }
}
