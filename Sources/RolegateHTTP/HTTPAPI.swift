import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import Logging
import NIOConcurrencyHelpers
import NIOCore
public import NIOSSL
public import RolegateAudit
public import RolegateCore
public import RolegateGateway
import RolegateHTTPContract
public import RolegateIdentity
import RolegateProvision
public import RolegateStore
public import RolegateTokens
import ServiceLifecycle
import Synchronization

/// The HTTP API of `rolegate serve`: the data API (`/v1/query`, `/v1/batch`) with the same
/// tokens, roles and audit as the wire gateway; the admin API (`/admin/v1/…`) for admin
/// tokens; and `/healthz`, `/readyz`, `/metrics`, `/openapi.yaml`.
///
/// A class: every request's callbacks hold it, and a struct of this size was copied (a
/// dozen references retained) into each of them.
public final class HTTPAPI: Sendable {
    public struct Settings: Sendable {
        public var host = "127.0.0.1"
        public var port = 8080
        /// Request bodies larger than this are refused with 413 before being read whole.
        public var maxBodyBytes = 1 << 20
        /// Rows per statement before the result is cut (`"truncated": true`).
        public var maxRows = 10_000
        /// Result bytes per request before it is cut.
        public var maxResultBytes = 64 << 20
        /// `statement_timeout` when the role's policy sets none.
        public var defaultTimeout: Duration = .seconds(30)
        /// A request body must arrive whole within this long (slow bodies get 408).
        public var bodyTimeout: Duration = .seconds(30)
        /// A connection with nothing read or written for this long is closed.
        public var idleTimeout: Duration = .seconds(60)
        /// HTTPS with this context (`http_tls_cert`/`http_tls_key`); plain HTTP when nil.
        public var tls: NIOSSLContext?
        /// host:port where clients reach the wire gateway (told to `rolegate login`).
        public var wireAddress: String?

        public init() {}
    }

    let settings: Settings
    let gateway: GatewayServer
    let verifier: TokenVerifier
    let store: any Store
    let policy: Policy
    let masterKey: MasterKey
    /// Signs and checks the instances' calls to each other (derived from `masterKey`).
    let peerSigner: PeerRequestSignature
    let audit: AuditWriter?
    let logger: Logger
    /// Exchanges identity tokens for `POST /v1/auth/exchange` (nil: the policy trusts no issuer).
    let identity: IdentityExchange?
    /// Each service's `http` statement counters, looked up once.
    let statementCounters = StatementCounters()

    public init(
        settings: Settings, gateway: GatewayServer, verifier: TokenVerifier, store: any Store, policy: Policy,
        masterKey: MasterKey, audit: AuditWriter?, logger: Logger, identity: IdentityExchange? = nil
    ) {
        self.identity = identity
        self.settings = settings
        self.gateway = gateway
        self.verifier = verifier
        self.store = store
        self.policy = policy
        self.masterKey = masterKey
        self.peerSigner = PeerRequestSignature(masterKey: masterKey)
        self.audit = audit
        self.logger = logger
    }

    var metrics: Metrics { gateway.metrics }

    /// The `Server` header of every answer.
    static let serverName = "rolegate"

    /// Serves the API until ``HTTPServing/shutdown(grace:)``.
    public func serve(onRunning: @escaping @Sendable (Int) -> Void = { _ in }) -> HTTPServing {
        let (events, sink) = AsyncStream.makeStream(of: Result<Int, any Error>.self)
        let application = application { port in
            onRunning(port)
            sink.yield(.success(port))
        }
        return HTTPServing(application, logger: logger, events: events, sink: sink)
    }

    /// The Hummingbird application (a `Service`): ``serve(onRunning:)`` runs it with a graceful shutdown.
    func application(onRunning: @escaping @Sendable (Int) -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router(context: APIContext.self)
        router.add(middleware: RequestMiddleware(metrics: metrics, logger: logger))
        addRoutes(to: router)
        let idle = TimeAmount(settings.idleTimeout)
        let api = self
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                APIServerChannel(responder: responder, idleTimeout: idle, api: api)
            },
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: Self.serverName),
            onServerRunning: { channel in onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    func addRoutes(to router: Router<APIContext>) {
        router.add(middleware: BodyMiddleware(api: self))
        // POST /v1/query and /v1/batch never reach the router: see DataRequestHandler. Every
        // other route is generated from the contract (AdminAPI.swift).
        addMCPRoutes(to: router)
        addConsoleRoutes(to: router)
        do {
            try addContractRoutes(to: router)
        } catch {
            preconditionFailure("the contract's routes could not be registered: \(error)")
        }
    }

    // MARK: - Operations

    func readiness() async -> Components.Schemas.Readiness {
        var checks: [Components.Schemas.ReadinessCheck] = []
        do {
            _ = try await store.latestChange()
            checks.append(.init(name: "store", ok: true))
        } catch {
            checks.append(.init(name: "store", ok: false, detail: "\(error)"))
        }
        // Logins are accepted only while the token change feed is current (read within its staleness bound).
        checks.append(
            verifier.isCurrent
                ? .init(name: "token_feed", ok: true)
                : .init(
                    name: "token_feed", ok: false,
                    detail: "the token change feed is not current: new logins are refused until the store is back"))
        if let audit {
            // Failing audit writes make the instance unready under `on_failure: block` (it is
            // about to refuse statements); under `continue` it serves on, and says so.
            checks.append(
                .init(
                    name: "audit", ok: audit.failure == nil || audit.failurePolicy == .continue,
                    detail: audit.failure.map { "audit writes are failing: \($0)" }, queued: audit.queuedCount,
                    dropped: audit.droppedCount))
        }
        for database in policy.databases {
            let problem = await gateway.probe(database)
            checks.append(.init(name: "database:\(database.name)", ok: problem == nil, detail: problem))
        }
        let ready = checks.allSatisfy(\.ok)
        return .init(status: ready ? .ready : .notReady, checks: checks)
    }

    func renderMetrics() -> String {
        var gauges = gateway.gauges
        if let audit {
            gauges.append(("rolegate_audit_queue_depth", [:], Double(audit.queuedCount)))
            gauges.append(("rolegate_audit_events_dropped_total", [:], Double(audit.droppedCount)))
            gauges.append(("rolegate_audit_events_written_total", [:], Double(audit.writtenCount)))
        }
        return metrics.render(gauges: gauges)
    }

    // MARK: - Authentication

    /// The bearer token's record, or the 401/403/503 problem (a wrong token's answer waits
    /// out the failed-login throttle).
    func authenticate(
        authorization: String?, admin: Bool, anyKind: Bool = false, requestID: String, clientAddress: String?
    ) async -> Result<TokenRecord, Problem> {
        guard let token = Self.bearerToken(authorization) else { return .failure(Self.missingToken) }
        let result: Verification
        if let known = verifier.verifyFromMemory(token) {
            result = known
        } else {
            result = await verifier.verify(token)
        }
        let outcome = checked(result, admin: admin, anyKind: anyKind)
        guard case .failure(let problem) = outcome else { return outcome }
        recordRefusal(problem, requestID: requestID, clientAddress: clientAddress)
        // A wrong token counts against the client's address; past the limit, the answer waits.
        if problem.code == "token_invalid", let address = clientAddress {
            let throttle = gateway.loginThrottle
            if let failures = await throttle.failedAndWait(address: address) {
                audit?.record(throttle.crossedLimitEvent(address: address, failures: failures, channel: "http"))
            }
        }
        return outcome
    }

    /// What the verifier answered for a token.
    typealias Verification = Result<TokenVerifier.Verified, TokenVerifier.Failure>

    static let missingToken = Problem(
        status: .unauthorized, code: "token_invalid", message: "missing 'Authorization: Bearer <token>'")

    /// The token of an `Authorization: Bearer <token>` value; nil when the header is missing
    /// or names another scheme. Spaces and tabs around the token are not part of it (trimmed
    /// without Foundation's character sets: this runs on every request).
    static func bearerToken(_ header: String?) -> String? {
        guard let header else { return nil }
        let bytes = Array(header.utf8)
        let scheme = "bearer ".utf8
        guard bytes.count >= scheme.count,
            zip(bytes, scheme).allSatisfy({ (0x41...0x5A).contains($0) ? $0 | 0x20 == $1 : $0 == $1 })
        else { return nil }
        var start = scheme.count
        var end = bytes.count
        while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    /// A verification's answer as the API gives it: the record, or the 401/403/503 problem.
    /// Data and admin tokens stay apart (`admin`: the route needs an admin token), unless
    /// `anyKind` (access requests: people, services and admins standing for people alike).
    func checked(_ result: Verification, admin: Bool, anyKind: Bool = false) -> Result<TokenRecord, Problem> {
        switch result {
        case .success(let verified):
            let isAdmin = policy.service(named: verified.service)?.admin == true
            if anyKind { return .success(verified.record) }
            if admin, !isAdmin {
                return .failure(
                    Problem(
                        status: .forbidden, code: "not_admin",
                        message: "this is a data token; the admin API needs a token of an admin service"))
            } else if !admin, isAdmin {
                return .failure(
                    Problem(
                        status: .forbidden, code: "admin_token",
                        message: "this is an admin token: it never reaches a database; use a data service's token"))
            }
            return .success(verified.record)
        case .failure(.expired):
            return .failure(Problem(status: .unauthorized, code: "token_expired", message: "token expired"))
        case .failure(.revoked):
            return .failure(Problem(status: .unauthorized, code: "token_revoked", message: "token revoked"))
        case .failure(.unavailable):
            return .failure(
                Problem(
                    status: .serviceUnavailable, code: "store_unavailable",
                    message: "the token store is unavailable; try again"))
        case .failure:
            // Unknown, wrong, malformed: one answer for all.
            return .failure(Problem(status: .unauthorized, code: "token_invalid", message: "invalid token"))
        }
    }

    /// Counts and audits a refused token. (The throttle is the caller's: a task waits out its
    /// delay, an event loop schedules the answer.)
    func recordRefusal(_ problem: Problem, requestID: String, clientAddress: String?) {
        metrics.increment("rolegate_auth_failures_total", ["channel": "http", "code": problem.code])
        audit?.record(
            AuditEvent(
                kind: .auth, action: "refused", sessionID: requestID, client: clientAddress, sqlState: nil,
                detail: ["channel": "http", "reason": problem.message, "code": problem.code]))
    }

    /// The body, refused with 413 past the limit without reading it whole, and with 408
    /// when it does not arrive within ``Settings/bodyTimeout`` (a slow or stalled sender).
    func body(_ request: Request, _ context: APIContext, limit: Int) async -> Result<Data, Problem> {
        let timeout = settings.bodyTimeout
        let tooLarge = Problem(
            status: .contentTooLarge, code: "body_too_large", message: "the request body is larger than \(limit) bytes")
        // A declared length past the limit is refused before any of it is read.
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            return .failure(tooLarge)
        }
        // The timeout cancels the reading task from a timer on the connection's loop (a
        // sleeping task beside it cost a timer thread's wake-up per request).
        let reading = Task { () -> Result<Data, Problem>? in
            var request = request
            do {
                let buffer = try await request.collectBody(upTo: limit)
                return .success(Data(buffer.readableBytesView))
            } catch is CancellationError {
                return nil
            } catch is NIOTooManyBytesError {
                return .failure(tooLarge)
            } catch {
                if Task.isCancelled { return nil }
                return .failure(
                    Problem.badRequest("the request body could not be read: it ended early or was malformed"))
            }
        }
        let timer = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            reading.cancel()
        }
        let result = await withTaskCancellationHandler {
            await reading.value
        } onCancel: {
            reading.cancel()
        }
        timer.cancel()
        return result
            ?? .failure(
                Problem(
                    status: .requestTimeout, code: "body_timeout",
                    message: "the request body did not arrive within \(DurationText.format(timeout))"))
    }
}

/// `rolegate_statements_total` and `rolegate_statement_errors_total` of the data API, per
/// service: a labelled lookup per statement cost more than the counting.
final class StatementCounters: Sendable {
    private let counters = NIOLockedValueBox([String: (statements: Counter, errors: Counter)]())

    func of(_ service: String, in metrics: Metrics) -> (statements: Counter, errors: Counter) {
        if let known = counters.withLockedValue({ $0[service] }) { return known }
        let labels = ["service": service, "channel": "http"]
        let made = (
            metrics.counter("rolegate_statements_total", labels),
            metrics.counter("rolegate_statement_errors_total", labels)
        )
        counters.withLockedValue { $0[service] = made }
        return made
    }
}

/// Request ids, access logs and request metrics for every route.
struct RequestMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let metrics: Metrics
    let logger: Logger

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        let started = ContinuousClock.now
        let requestID = RequestID.accepting(request.headers[RequestID.header])
        var context = context
        context.requestID = requestID
        var response: Response
        do {
            let scope = RequestScope(requestID: requestID, clientAddress: context.clientAddress)
            response = try await RequestScope.$current.withValue(scope) { try await next(request, context) }
        } catch let error as HTTPError where error.status == .notFound {
            // A path the contract lists, asked with a method it does not list: 405, and what it takes.
            if let allowed = ContractPaths.methods(of: request.uri.path), !allowed.contains(request.method.rawValue) {
                let allow = allowed.sorted().joined(separator: ", ")
                response = Problem(
                    status: .methodNotAllowed, code: "method_not_allowed",
                    message: "\(request.uri.path) takes \(allow)"
                ).response(requestID: requestID, headers: [.allow: allow])
            } else {
                response = Problem(status: .notFound, code: "not_found", message: "Not Found")
                    .response(requestID: requestID)
            }
        } catch let error as HTTPError {
            response = Problem(
                status: error.status, code: "http_error", message: error.body ?? error.status.reasonPhrase
            )
            .response(requestID: requestID)
        } catch {
            response = Problem(status: .internalServerError, code: "internal", message: "internal error")
                .response(requestID: requestID)
        }
        response.headers[RequestID.header] = requestID
        // The rest of a body refused unread (too large, too slow) must not be taken for the next request.
        if response.status == .contentTooLarge || response.status == .requestTimeout {
            response.headers[.connection] = "close"
        }
        Self.log(
            requestID: requestID, method: request.method, path: request.uri.path,
            route: context.endpointPath ?? "unmatched", status: response.status, started: started, metrics: metrics,
            logger: logger)
        return response
    }

    /// The access log line and the request metrics of one answered request.
    static func log(
        requestID: String, method: HTTPRequest.Method, path: String, route: String, status: HTTPResponse.Status,
        started: ContinuousClock.Instant, metrics: Metrics, logger: Logger
    ) {
        let elapsed = ContinuousClock.now - started
        RequestMetrics(metrics, route: route, status: status).observe(elapsed: elapsed)
        accessLog(
            requestID: requestID, method: method.rawValue, path: path, status: status, elapsed: elapsed, logger: logger)
    }

    /// The access log line of one answered request.
    static func accessLog(
        requestID: String, method: String, path: String, status: HTTPResponse.Status, elapsed: Duration,
        logger: Logger
    ) {
        logger.info(
            "http request",
            metadata: [
                "request_id": .string(requestID), "method": .string(method), "path": .string(path),
                "status": .stringConvertible(status.code),
                "duration_ms": .string(millisecondsText(elapsed)),
            ])
    }
}

/// A duration in milliseconds to the microsecond, as the shortest decimal that reads back
/// the same (`1.5`, `0.042`, `12.0`): what `Double.description` writes for it, without
/// formatting a floating-point number on every request.
func millisecondsText(_ elapsed: Duration) -> String {
    let (seconds, attoseconds) = elapsed.components
    let micros = max(0, seconds * 1_000_000 + (attoseconds + 500_000_000_000) / 1_000_000_000_000)
    var fraction = Int(micros % 1000)
    var text = String(micros / 1000) + "."
    guard fraction > 0 else { return text + "0" }
    var width = 3
    while fraction % 10 == 0 {
        fraction /= 10
        width -= 1
    }
    let digits = String(fraction)
    text += String(repeating: "0", count: width - digits.count) + digits
    return text
}

/// The HTTP API while it serves.
public final class HTTPServing: Sendable {
    private let group: ServiceGroup
    private let task: Task<Void, any Error>
    /// The server's port once it listens, or why it stopped before.
    private let events: AsyncStream<Result<Int, any Error>>

    init(
        _ application: some ApplicationProtocol, logger: Logger, events: AsyncStream<Result<Int, any Error>>,
        sink: AsyncStream<Result<Int, any Error>>.Continuation
    ) {
        let group = ServiceGroup(configuration: .init(services: [application], logger: logger))
        self.group = group
        self.events = events
        task = Task {
            do {
                try await group.run()
                sink.yield(.failure(NotServing(description: "the server stopped")))
            } catch {
                sink.yield(.failure(error))
            }
        }
    }

    struct NotServing: Error, CustomStringConvertible {
        var description: String
    }

    /// The port it listens on, once it does; throws why it could not (the address is in use,
    /// say). Called once, at start.
    public func started() async throws -> Int {
        for await event in events { return try event.get() }
        throw NotServing(description: "the server stopped")
    }

    /// Stops accepting connections. A connection between requests closes at once; a request
    /// in progress gets its answer (saying `Connection: close`) within `grace`, after which
    /// what is left is cut. (Cancelling the server instead cut every request at once.)
    public func shutdown(grace: Duration) async {
        await group.triggerGracefulShutdown()
        let task = self.task
        let cut = Task {
            try await Task.sleep(for: grace)
            task.cancel()
        }
        _ = await task.result
        cut.cancel()
    }
}

/// The request counter and latency histogram of one route and status (kept per connection
/// by the data API, looked up per request by the router's middleware).
struct RequestMetrics {
    let requests: Counter
    let duration: Histogram

    init(_ metrics: Metrics, route: String, status: HTTPResponse.Status) {
        requests = metrics.counter("rolegate_http_requests_total", ["route": route, "status": String(status.code)])
        duration = metrics.histogram("rolegate_http_request_duration_seconds", ["route": route])
    }

    func observe(elapsed: Duration) {
        requests.add()
        duration.observe(seconds: elapsed.timeInterval)
    }
}

/// Request ids: 16 characters, unique within the process and unlike other processes', but
/// not secret, so made without a system call (the system random source cost two per
/// request): 3 characters of a random prefix drawn once, then a counter from a random
/// start through SplitMix64's finaliser (a bijection, so no two requests share an id) in 13.
enum RequestID {
    private static let prefix = RandomID.make(length: 3)
    private static let counter = Atomic<UInt64>(UInt64.random(in: .min ... .max))
    static let header = HTTPField.Name("X-Request-Id")!

    /// The client's `X-Request-Id` when it is a plain token (letters, digits, `-`; at most
    /// 64), so it can go into logs as it is; a new id otherwise.
    static func accepting(_ incoming: String?) -> String {
        incoming.flatMap { $0.count <= 64 && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" } ? $0 : nil }
            ?? make()
    }

    static func make() -> String {
        var z = SplitMix64.mix(counter.add(1, ordering: .relaxed).newValue)
        return String(unsafeUninitializedCapacity: 16) { bytes in
            var at = 0
            for byte in prefix.utf8 {
                bytes[at] = byte
                at += 1
            }
            for _ in 0..<13 {
                bytes[at] = RandomID.alphabet[Int(z & 31)]
                z >>= 5
                at += 1
            }
            return at
        }
    }
}

/// Each request's context: Hummingbird's, plus the request id every response and log line carries.
public struct APIContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var requestID = ""
    /// The client's IP address (for the failed-login throttle and the audit log).
    public var clientAddress: String?
    /// The connection's event loop (timers run there).
    public var eventLoop: any EventLoop

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        clientAddress = source.channel.remoteAddress?.ipAddress
        eventLoop = source.channel.eventLoop
    }
}
