import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import RolegateCore
import RolegateGateway
import RolegateTokens

/// Serves the data API (`/v1/query`, `/v1/batch`) on the connection's event loop, ahead of
/// the router: the token is checked from memory, the body collected, the statements run over
/// a pooled server connection on the same loop, and the answer written, without a Swift task,
/// an async sequence or a conversion to HTTP types in between (see bench/RESULTS.md for what
/// they cost per request). Every other request passes on to Hummingbird's router unchanged.
///
/// Answers as the router's routes do: the request id, access log line and metrics of
/// ``RequestMiddleware``, JSON problems with stable codes, the failed-login throttle.
final class DataRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// The data request being answered.
    private struct Current {
        /// Tells a late answer (a token looked up in the store) from one for a later request.
        let number: Int
        let requestID: String
        let started: ContinuousClock.Instant
        let method: String
        let version: HTTPVersion
        let path: String
        /// The route, as the metrics label it.
        let route: String
        let authorization: String?
        /// The connection closes after this request (`Connection: close`, or HTTP/1.0 without keep-alive).
        let closeAfter: Bool
        var record: TokenRecord?
        var answered = false
    }

    let api: HTTPAPI
    private var machine: DataRequestMachine
    private var current: Current?
    private var requests = 0
    private var bodyTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var clientAddress: String?
    /// Parts went on to the router since the last end of a read.
    private var forwarded = false
    /// What follows the running request could not be parsed: close after its answer.
    private var closeAfterAnswer = false

    init(api: HTTPAPI) {
        self.api = api
        self.machine = DataRequestMachine(limit: api.settings.maxBodyBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopBodyTimer()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopBodyTimer()
        self.context = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let action: DataRequestMachine.Action
        switch unwrapInboundIn(data) {
        case .head(let head):
            action = machine.head(
                isPost: head.method == .POST, path: head.uri,
                declaredLength: head.headers.first(name: "content-length").flatMap { Int($0) })
            if let endpoint = machine.endpoint { begin(head, endpoint: endpoint) }
        case .body(let part):
            action = machine.body(part)
        case .end:
            action = machine.end()
        }
        perform(action, data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // The body timer starts only when a read ends with the body still incomplete: most
        // requests arrive whole in one read and never need one.
        if machine.awaitsBody, bodyTimer == nil { startBodyTimer() }
        // The router's side hears of the end of a read only when it was given something.
        if forwarded {
            forwarded = false
            context.fireChannelReadComplete()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A malformed request in the middle of a data request is answered here; otherwise
        // the router's connection loop answers it.
        switch machine.state {
        case .idle, .forwarding:
            context.fireErrorCaught(error)
        case .running:
            // Bytes after a whole request (pipelined) do not parse: that request's answer
            // still goes out, then the connection closes.
            closeAfterAnswer = true
        case .receiving, .discarding:
            stopBodyTimer()
            respond(Problem.badRequest("the request could not be parsed: \(error)"), close: true)
        }
    }

    // MARK: - Steps

    private func begin(_ head: HTTPRequestHead, endpoint: DataRequestMachine.Endpoint) {
        requests += 1
        let uri = head.uri
        current = Current(
            number: requests, requestID: RequestID.accepting(head.headers.first(name: "x-request-id")),
            started: .now, method: head.method.rawValue, version: head.version,
            path: uri.utf8.contains(UInt8(ascii: "?")) ? String(uri.prefix { $0 != "?" }) : uri,
            route: endpoint == .batch ? "/v1/batch" : "/v1/query",
            authorization: head.headers.first(name: "authorization"), closeAfter: !head.isKeepAlive)
    }

    private func perform(_ action: DataRequestMachine.Action, _ data: NIOAny? = nil) {
        switch action {
        case .none:
            break
        case .forward:
            if let data {
                forwarded = true
                context?.fireChannelRead(data)
            }
        case .authenticate:
            authenticate()
        case .refuse(let refusal):
            stopBodyTimer()
            refuse(refusal)
        case .run(let endpoint, let body):
            stopBodyTimer()
            run(endpoint, body)
        }
    }

    private func stopBodyTimer() {
        bodyTimer?.cancel()
        bodyTimer = nil
    }

    private func startBodyTimer() {
        guard let context else { return }
        let number = requests
        bodyTimer = context.eventLoop.assumeIsolated().scheduleTask(
            in: TimeAmount(api.settings.bodyTimeout)
        ) { [weak self] in
            guard let self, self.current?.number == number else { return }
            self.bodyTimer = nil
            self.perform(self.machine.bodyTimedOut())
        }
    }

    private func authenticate() {
        guard let context, let current else { return }
        guard let token = HTTPAPI.bearerToken(current.authorization) else {
            machine.refused()
            stopBodyTimer()
            return respond(HTTPAPI.missingToken)
        }
        // Usually answered from memory; a token the cache does not know is read from the store.
        if let known = api.verifier.verifyFromMemory(token) { return tokenChecked(known) }
        let verifier = api.verifier
        let number = current.number
        context.eventLoop.makeFutureWithTask { await verifier.verify(token) }
            .assumeIsolated().whenSuccess { [weak self] result in
                guard let self, self.current?.number == number else { return }
                self.tokenChecked(result)
            }
    }

    private func tokenChecked(_ result: HTTPAPI.Verification) {
        switch api.checked(result, admin: false) {
        case .success(let record):
            current?.record = record
            perform(machine.authenticated())
        case .failure(let problem):
            machine.refused()
            stopBodyTimer()
            refuseToken(problem)
        }
    }

    /// Counts and audits a refused token; a wrong one counts against the client's address,
    /// and past the throttle's limit its answer waits (the rest of the request is dropped
    /// meanwhile, and the next one waits behind the answer).
    private func refuseToken(_ problem: Problem) {
        guard let context, let current else { return }
        api.recordRefusal(problem, requestID: current.requestID, clientAddress: clientAddress)
        guard problem.code == "token_invalid", let address = clientAddress else { return respond(problem) }
        let throttle = api.gateway.loginThrottle
        let (delay, crossedAt) = throttle.recordFailure(address: address)
        if let crossedAt {
            api.audit?.record(throttle.crossedLimitEvent(address: address, failures: crossedAt, channel: "http"))
        }
        guard let delay else { return respond(problem) }
        api.metrics.increment("rolegate_auth_delayed_total", ["channel": "http"])
        let number = current.number
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [weak self] in
            // Given back even when the client left meanwhile (and this handler with it).
            throttle.delayedAnswerSent(address: address)
            guard let self, self.current?.number == number else { return }
            self.respond(problem)
        }
    }

    private func refuse(_ refusal: DataRequestMachine.Refusal) {
        guard let current else { return }
        switch refusal {
        case .methodNotAllowed:
            let problem = Problem(
                status: .methodNotAllowed, code: "method_not_allowed", message: "\(current.path) takes POST")
            respond(problem, extraHeaders: [("Allow", "POST")])
        case .tooLarge:
            // The rest of a body refused unread must not be taken for the next request.
            respond(
                Problem(
                    status: .contentTooLarge, code: "body_too_large",
                    message: "the request body is larger than \(machine.limit) bytes"), close: true)
        case .bodyTimedOut:
            respond(
                Problem(
                    status: .requestTimeout, code: "body_timeout",
                    message:
                        "the request body did not arrive within \(DurationText.format(api.settings.bodyTimeout))"),
                close: true)
        }
    }

    private func run(_ endpoint: DataRequestMachine.Endpoint, _ body: ByteBuffer) {
        guard let context, let current, let record = current.record else { return }
        switch api.dataCall(body, record: record, batch: endpoint == .batch) {
        case .failure(let problem):
            machine.answered()
            respond(problem)
        case .success(let call):
            let number = current.number
            let loop = context.eventLoop
            let handler = NIOLoopBound(self, eventLoop: loop)
            api.run(call, requestID: current.requestID, started: current.started, targets: targets) {
                status, body in
                // On this connection's loop unless the gateway serves on loops of its own.
                if loop.inEventLoop {
                    handler.value.answer(number, status: status, body: body)
                } else {
                    loop.execute { handler.value.answer(number, status: status, body: body) }
                }
            }
        }
    }

    // MARK: - Answers

    /// The statements' answer, unless request `number` was answered otherwise meanwhile.
    private func answer(_ number: Int, status: HTTPResponse.Status, body: ByteBuffer) {
        guard current?.number == number else { return }
        // First: writing the answer's end lets the next pipelined request in, at once.
        machine.answered()
        respond(status: status, body: body)
    }

    private func respond(_ problem: Problem, extraHeaders: [(String, String)] = [], close: Bool = false) {
        guard let current else { return }
        respond(
            status: problem.status, body: problem.body(requestID: current.requestID), extraHeaders: extraHeaders,
            close: close, contentType: Problem.contentType)
    }

    /// Writes the one answer to the current request (JSON), logs it, and closes the
    /// connection after it when asked to.
    private func respond(
        status: HTTPResponse.Status, body: ByteBuffer, extraHeaders: [(String, String)] = [], close: Bool = false,
        contentType: String? = nil
    ) {
        guard let context, var current, !current.answered else { return }
        current.answered = true
        self.current = current
        var headers = HTTPHeaders([
            (
                "Content-Type",
                contentType ?? (status.code >= 400 ? Problem.contentType : "application/json; charset=utf-8")
            ), ("Content-Length", String(body.readableBytes)),
            ("X-Request-Id", current.requestID), ("Date", HTTPDate.now()), ("Server", HTTPAPI.serverName),
        ])
        headers.add(contentsOf: extraHeaders)
        let closing = close || current.closeAfter || closeAfterAnswer
        // (An HTTP/1.0 answer's `Connection: keep-alive` is the sequencer's, as for every route.)
        if closing { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(
            version: current.version,
            status: HTTPResponseStatus(statusCode: Int(status.code), reasonPhrase: status.reasonPhrase),
            headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        // An answer to HEAD has the length of its body but not the body (RFC 9110, 9.3.2).
        if current.method != "HEAD" { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        if closing {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        let elapsed = ContinuousClock.now - current.started
        requestMetrics(route: current.route, status: status).observe(elapsed: elapsed)
        RequestMiddleware.accessLog(
            requestID: current.requestID, method: current.method, path: current.path, status: status,
            elapsed: elapsed, logger: api.logger)
    }

    /// This connection's request counter and latency histogram for a route and status, made
    /// once (a labelled lookup per request cost more than the rest of the bookkeeping).
    private func requestMetrics(route: String, status: HTTPResponse.Status) -> RequestMetrics {
        let key = "\(route) \(status.code)"
        if let known = metricsCache[key] { return known }
        let made = RequestMetrics(api.metrics, route: route, status: status)
        metricsCache[key] = made
        return made
    }

    private var metricsCache: [String: RequestMetrics] = [:]
    /// Where this connection's data requests ran last (made again when the token changes).
    private let targets = QueryTargetCache()
}
