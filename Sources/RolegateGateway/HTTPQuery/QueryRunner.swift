import Foundation
public import NIOCore
import PostgresWire
public import RolegateCore

/// Why an HTTP request's statements could not be run at all.
public enum QueryRunError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No server connection (PostgreSQL down, login as the role failed).
    case upstreamUnavailable(String)
    /// Every server connection of the role is in use.
    case busy(String)
    /// The request ran past its deadline (the statement was cancelled upstream).
    case timeout

    public var description: String {
        switch self {
        case .upstreamUnavailable(let message), .busy(let message): message
        case .timeout: "the request did not finish in time"
        }
    }
}

extension GatewayServer {
    /// Runs `statements` in one transaction as `token`'s role on `database`, over a pooled
    /// server connection (the same pools, caps and reset as wire sessions). The future fails
    /// with a ``QueryRunError`` when the statements could not be run at all.
    ///
    /// `usualTimeout` is the statement timeout most requests of this role run with: the
    /// server connection starts with it, so only a request asking another one (`statementTimeout`)
    /// sends a `set_config` for it. (Not the request's own: that would make a connection per value.)
    ///
    /// Called on one of the gateway's event loops (the HTTP API's connections share them, see
    /// GatewayConfiguration.eventLoopGroup), the request never changes threads and the
    /// future completes on that loop.
    public func run(
        _ statements: [QueryStatement], token: TokenRecord, database: DatabaseSpec, statementTimeout: Duration,
        usualTimeout: Duration? = nil, maxRows: Int, maxBytes: Int
    ) -> EventLoopFuture<Result<[StatementResult], QueryFailure>> {
        let shared = self.shared
        let loop = group.any()
        guard let url = shared.databaseURLs[database.name] ?? (try? ConnectionURL(parsing: database.url)) else {
            return loop.makeFailedFuture(
                QueryRunError.upstreamUnavailable("database \(database.name) has an invalid URL"))
        }
        let milliseconds = Int64(statementTimeout.timeInterval * 1000)
        let usualMilliseconds = usualTimeout.map { Int64($0.timeInterval * 1000) } ?? milliseconds
        let key = UpstreamKey(
            url: url, role: token.role,
            parameters: [
                QueryExchange.timeoutParameter(milliseconds: usualMilliseconds),
                // Stable text forms for the JSON mapping: ISO dates in UTC, exact floats, UTF-8.
                StartupParameter("application_name", "rolegate-http [rolegate:\(token.id)]"),
                StartupParameter("client_encoding", "UTF8"), StartupParameter("DateStyle", "ISO, YMD"),
                StartupParameter("TimeZone", "UTC"), StartupParameter("extra_float_digits", "3"),
            ])
        let password = shared.rolePassword(token.role)
        let cap = shared.serverConnectionCap(role: token.role)
        let exchange = QueryExchange(
            statements: statements, maxRows: maxRows, maxBytes: maxBytes, timeoutMilliseconds: milliseconds,
            usualTimeoutMilliseconds: usualMilliseconds)
        if let refusal = exchange.refusal { return loop.makeSucceededFuture(.failure(refusal)) }
        let promise = loop.makePromise(of: Result<[StatementResult], QueryFailure>.self)
        let start: @Sendable () -> Void = {
            let pool = shared.pool(for: loop)
            pool.acquire(
                key: key, password: password, cap: cap, waitLimit: .seconds(10)
            )
            .assumeIsolated().whenComplete { result in
                switch result {
                case .failure(let error):
                    promise.fail(QueryRunError(error))
                case .success(let connection):
                    let sink = QuerySink(exchange: exchange, connection: connection, pool: pool, promise: promise)
                    connection.sink = sink
                    sink.retain = sink
                    // Past the statement timeout (plus a margin) the server is told to cancel.
                    sink.deadline = loop.assumeIsolated().scheduleTask(
                        in: .milliseconds(milliseconds + 2000)
                    ) { [weak sink] in sink?.timedOut(shared: shared) }
                    connection.write(exchange.pipeline())
                    connection.flush()
                }
            }
        }
        if loop.inEventLoop { start() } else { loop.execute(start) }
        return promise.futureResult
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
    let promise: EventLoopPromise<Result<[StatementResult], QueryFailure>>
    var deadline: Scheduled<Void>?
    /// Keeps itself alive while attached (the connection holds its sink weakly).
    var retain: QuerySink?
    var finished = false

    init(
        exchange: QueryExchange, connection: UpstreamConnection, pool: UpstreamPool,
        promise: EventLoopPromise<Result<[StatementResult], QueryFailure>>
    ) {
        self.exchange = exchange
        self.connection = connection
        self.pool = pool
        self.promise = promise
    }

    func upstream(_ connection: UpstreamConnection, forward bytes: ByteBuffer, status: UInt8?) {
        do {
            _ = try WireFraming.scanMessages(bytes) { type, body, length in
                exchange.receive(type: type, body: bytes.getSlice(at: body, length: length)!)
                return true
            }
        } catch {
            return finish(
                .failure(QueryRunError.upstreamUnavailable("the server sent a malformed message")), reuse: false)
        }
        if exchange.isDone {
            finish(.success(exchange.failure.map { .failure($0) } ?? .success(exchange.results)), reuse: true)
        }
    }

    func upstreamFlush(_ connection: UpstreamConnection) {}
    func upstreamStatementMessage(type: UInt8, body: ByteBuffer, now: UInt64) {}

    func upstreamClosed(_ connection: UpstreamConnection) {
        finish(.failure(QueryRunError.upstreamUnavailable("the server connection was lost")), reuse: false)
    }

    func timedOut(shared: GatewayShared) {
        guard !finished else { return }
        shared.cancelUpstream(connection)
        finish(.failure(QueryRunError.timeout), reuse: false)
    }

    private func finish(_ result: Result<Result<[StatementResult], QueryFailure>, QueryRunError>, reuse: Bool) {
        guard !finished else { return }
        finished = true
        deadline?.cancel()
        retain = nil
        if reuse {
            pool.release(connection, alreadyReset: exchange.resetDone)
        } else {
            connection.close()
        }
        switch result {
        case .success(let outcome): promise.succeed(outcome)
        case .failure(let error): promise.fail(error)
        }
    }
}
