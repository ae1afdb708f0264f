import Foundation
import NIOCore
import PostgresWire
import RolegateCore
import RolegateGateway

/// Why an HTTP request's statements could not be run at all.
enum QueryRunError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No server connection (PostgreSQL down, login as the role failed).
    case upstreamUnavailable(String)
    /// Every server connection of the role is in use.
    case busy(String)
    /// The request ran past its deadline (the statement was cancelled upstream).
    case timeout

    var description: String {
        switch self {
        case .upstreamUnavailable(let message), .busy(let message): message
        case .timeout: "the request did not finish in time"
        }
    }
}

/// What an HTTP request's statements came to: PostgreSQL's results or refusal, or why they
/// could not be run at all.
typealias QueryOutcome = Result<Result<[StatementResult], QueryFailure>, QueryRunError>

/// Where a token's requests run on one database: the pooled server connections' key (role,
/// server, startup parameters), the role's credential and its cap. Derived from the token,
/// the database and the usual timeout alone, so an HTTP connection makes it once and reuses
/// it for its next requests with the same token (see ``matches(token:database:usualTimeout:)``).
struct QueryTarget: Sendable {
    let key: UpstreamKey
    let password: String
    let cap: Int
    let usualMilliseconds: Int64
    let tokenID: String
    let role: String
    let database: String

    /// Made for this token, role, database and usual timeout.
    func matches(token: TokenRecord, database: DatabaseSpec, usualTimeout: Duration) -> Bool {
        tokenID == token.id && role == token.role && self.database == database.name
            && usualMilliseconds == Self.milliseconds(usualTimeout)
    }

    static func milliseconds(_ duration: Duration) -> Int64 { Int64(duration.timeInterval * 1000) }
}

extension GatewayServer {
    /// Where `token`'s requests on `database` run when they ask no timeout of their own.
    ///
    /// `usualTimeout` is the statement timeout most requests of this role run with: the
    /// server connection starts with it, so only a request asking another one sends a
    /// `set_config` for it. (Not the request's own: that would make a connection per value.)
    func queryTarget(
        token: TokenRecord, database: DatabaseSpec, usualTimeout: Duration
    ) -> Result<QueryTarget, QueryRunError> {
        guard let url = shared.databaseURLs[database.name] ?? (try? ConnectionURL(parsing: database.url)) else {
            return .failure(.upstreamUnavailable("database \(database.name) has an invalid URL"))
        }
        let usualMilliseconds = QueryTarget.milliseconds(usualTimeout)
        let key = UpstreamKey(
            url: url, role: token.role, auth: database.upstreamAuth,
            parameters: [
                QueryExchange.timeoutParameter(milliseconds: usualMilliseconds),
                // Stable text forms for the JSON mapping: ISO dates in UTC, exact floats, UTF-8.
                StartupParameter("application_name", "rolegate-http [rolegate:\(token.id)]"),
                StartupParameter("client_encoding", "UTF8"), StartupParameter("DateStyle", "ISO, YMD"),
                StartupParameter("TimeZone", "UTC"), StartupParameter("extra_float_digits", "3"),
            ])
        return .success(
            QueryTarget(
                key: key, password: shared.rolePassword(token.role), cap: shared.serverConnectionCap(role: token.role),
                usualMilliseconds: usualMilliseconds, tokenID: token.id, role: token.role, database: database.name))
    }

    /// Runs `statements` in one transaction on `target` (as its token's role), over a pooled
    /// server connection (the same pools, caps and reset as wire sessions), and calls
    /// `completion` once with the outcome.
    ///
    /// Called on one of the gateway's event loops (the HTTP API's connections share them, see
    /// GatewayConfiguration.eventLoopGroup), the request never changes threads: `completion`
    /// runs on the calling loop, often before this returns. Called elsewhere, it runs on a
    /// loop of the gateway's.
    func run(
        _ statements: [QueryStatement], target: QueryTarget, statementTimeout: Duration, maxRows: Int, maxBytes: Int,
        completion: @escaping (QueryOutcome) -> Void
    ) {
        let shared = self.shared
        let loop = group.any()
        let milliseconds = QueryTarget.milliseconds(statementTimeout)
        let exchange = QueryExchange(
            statements: statements, maxRows: maxRows, maxBytes: maxBytes, timeoutMilliseconds: milliseconds,
            usualTimeoutMilliseconds: target.usualMilliseconds)
        if let refusal = exchange.refusal { return completion(.success(.failure(refusal))) }
        // The completion is the caller's: it stays on `loop`, which runs everything below.
        nonisolated(unsafe) let completion = completion
        let start: @Sendable () -> Void = {
            let pool = shared.pool(for: loop)
            let send = { (connection: UpstreamConnection) in
                let sink = QuerySink(exchange: exchange, connection: connection, pool: pool, completion: completion)
                connection.sink = sink
                sink.retain = sink
                // Past the statement timeout (plus a margin) the server is told to cancel.
                sink.deadline = loop.assumeIsolated().scheduleTask(in: .milliseconds(milliseconds + 2000)) {
                    [weak sink] in sink?.timedOut(shared: shared)
                }
                connection.ledger.sentRequests(exchange.answersOwed)
                connection.write(exchange.pipeline())
                connection.flush()
            }
            // Usually an idle connection is at hand; else one is opened or waited for.
            if let idle = pool.takeIdle(key: target.key) { return send(idle) }
            pool.acquireNew(key: target.key, password: target.password, cap: target.cap, waitLimit: .seconds(10))
                .assumeIsolated().whenComplete { result in
                    switch result {
                    case .failure(let error): completion(.failure(QueryRunError(error)))
                    case .success(let connection): send(connection)
                    }
                }
        }
        if loop.inEventLoop { start() } else { loop.execute(start) }
    }
}

extension QueryRunError {
    /// Why a server connection could not be had or kept, as the HTTP API reports it.
    init(_ error: any Error) {
        switch error {
        case let error as QueryRunError: self = error
        case let error as UpstreamError where error.sqlState == "53300": self = .busy(error.description)
        case let error as UpstreamError: self = .upstreamUnavailable(error.description)
        default: self = .upstreamUnavailable("\(error)")
        }
    }
}

/// Reads the server's answers for one HTTP request, then gives the connection back.
private final class QuerySink: UpstreamSink {
    var exchange: QueryExchange
    let connection: UpstreamConnection
    let pool: UpstreamPool
    let completion: (QueryOutcome) -> Void
    var deadline: Scheduled<Void>?
    /// Keeps itself alive while attached (the connection holds its sink weakly).
    var retain: QuerySink?
    var finished = false

    init(
        exchange: QueryExchange, connection: UpstreamConnection, pool: UpstreamPool,
        completion: @escaping (QueryOutcome) -> Void
    ) {
        self.exchange = exchange
        self.connection = connection
        self.pool = pool
        self.completion = completion
    }

    func upstream(_ connection: UpstreamConnection, forward bytes: ByteBuffer, status: UInt8?, statementsEnded: UInt64?)
    {
        do {
            _ = try WireFraming.scanMessages(bytes) { type, body, length in
                exchange.receive(type: type, body: bytes.getSlice(at: body, length: length)!)
                return true
            }
        } catch {
            return finish(
                .failure(.upstreamUnavailable("the server sent a malformed message")), reuse: false)
        }
        if exchange.isDone {
            finish(.success(exchange.failure.map { .failure($0) } ?? .success(exchange.results)), reuse: true)
        }
    }

    func upstreamFlush(_ connection: UpstreamConnection) {}

    func upstreamClosed(_ connection: UpstreamConnection) {
        finish(.failure(QueryRunError.upstreamUnavailable("the server connection was lost")), reuse: false)
    }

    func timedOut(shared: GatewayShared) {
        guard !finished else { return }
        shared.cancelUpstream(connection)
        finish(.failure(QueryRunError.timeout), reuse: false)
    }

    private func finish(_ result: QueryOutcome, reuse: Bool) {
        guard !finished else { return }
        finished = true
        deadline?.cancel()
        retain = nil
        if reuse {
            pool.release(connection, alreadyReset: exchange.resetDone)
        } else {
            connection.close()
        }
        completion(result)
    }
}
