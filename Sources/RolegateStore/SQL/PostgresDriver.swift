import Foundation
import Logging
import PostgresNIO
import RolegateCore
import RolegatePostgres
import Synchronization

/// The PostgreSQL store's connections: one *lane* per kind of work, each a connection of its
/// own that reconnects after a failure, so that no kind waits behind another — token reads and
/// the change feed (`read`) never queue behind a write transaction or an audit append, and a
/// burst of audit appends never holds up a revocation. (A shared pool of N connections would
/// let N slow audit appends hold every connection; lanes keep the guarantee under any load.)
///
/// Write transactions take a transaction-scoped advisory lock, so writers on every host are
/// serialised: the "one live token per service" check cannot race, and change feed numbers are
/// committed in order (a poller never skips one). Audit appends lock their own chain's row.
final class PostgresDriver: SQLDriver {
    let dialect = SQLDialect.postgres
    let url: ConnectionURL
    let logger: Logger
    /// Token writes, revocations and everything else that is not a read or an audit append.
    private let writes: Lane
    /// Audit appends (write transactions that lock their own chain, not the store).
    private let audit: Lane
    /// Reads: tokens, the change feed, audit queries.
    private let reads: Lane

    /// The advisory lock key of store writers ("rolegate" in ASCII).
    static let writerLock: Int64 = 0x726F_6C65_6761_7465

    private init(url: ConnectionURL, logger: Logger) {
        self.url = url
        self.logger = logger
        writes = Lane(id: 1, name: "rolegate-store")
        audit = Lane(id: 3, name: "rolegate-store-audit")
        reads = Lane(id: 4, name: "rolegate-store-read")
    }

    static func open(url text: String) async throws -> PostgresDriver {
        let url = try ConnectionURL(parsing: text)
        var logger = Logger(label: "rolegate.store.postgres")
        logger.logLevel = .critical
        let driver = PostgresDriver(url: url, logger: logger)
        _ = try await driver.writes.connection(url: url, logger: logger)
        return driver
    }

    func run<T: Sendable>(
        transaction: Bool, serialized: Bool, _ body: @Sendable (any SQLExecutor) async throws -> T
    ) async throws -> T {
        let lane = transaction && !serialized ? audit : writes
        return try await lane.gate.withGate {
            let executor = try await lane.executor(url: url, logger: logger)
            guard transaction else { return try await body(executor) }
            try await executor.execute("BEGIN")
            do {
                if serialized {
                    try await executor.execute("SELECT pg_advisory_xact_lock($1)", [.int(Self.writerLock)])
                }
                let result = try await body(executor)
                try await executor.execute("COMMIT")
                return result
            } catch {
                await lane.rollBack(executor)
                throw error
            }
        }
    }

    func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        try await reads.gate.withGate {
            try await body(try await reads.executor(url: url, logger: logger))
        }
    }

    /// One connection and the gate that gives it to one operation at a time.
    private final class Lane: Sendable {
        let id: Int
        let name: String
        let gate = AsyncGate()
        let box = ConnectionBox()

        init(id: Int, name: String) {
            self.id = id
            self.name = name
        }

        /// Ends a failed transaction. A connection the server ended (a FATAL error such as
        /// `pg_terminate_backend`'s, a failover) takes no more queries, and postgres-nio may never
        /// answer one sent to it: so the ROLLBACK gets a few seconds, and a connection that is
        /// closed or does not answer in time is dropped (the next operation reconnects) instead of
        /// holding this lane, and every operation queued behind it, for ever.
        func rollBack(_ executor: Executor) async {
            let connection = executor.connection
            guard !connection.isClosed else { return await box.drop(connection) }
            let rolledBack =
                (try? await withCheckedThrowingContinuation {
                    (continuation: CheckedContinuation<Bool, any Error>) in
                    let answer = FirstAnswer(continuation)
                    Task { answer.give(.success((try? await executor.execute("ROLLBACK")) != nil)) }
                    Task {
                        try? await Task.sleep(for: Self.rollbackLimit)
                        answer.give(.success(false))
                    }
                }) ?? false
            if !rolledBack || connection.isClosed {
                await box.drop(connection)
                Task { try? await connection.close() }
            }
        }

        static let rollbackLimit: Duration = .seconds(5)

        /// An executor on the lane's connection (see ``connection(url:logger:)``), with its watch.
        func executor(url: ConnectionURL, logger: Logger) async throws -> Executor {
            let connection = try await connection(url: url, logger: logger)
            return Executor(connection: connection, watch: await box.watch(of: connection), logger: logger)
        }

        /// The open connection, reconnecting after a failure; never once the driver was closed
        /// (a task still running at shutdown, such as the token verifier's last write of uses,
        /// gets an error instead of a connection nobody closes).
        func connection(url: ConnectionURL, logger: Logger) async throws -> PostgresConnection {
            if let existing = try await box.open(), !existing.isClosed { return existing }
            let configuration = try PostgresConnect.configuration(for: url, applicationName: name)
            let connection = try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
            guard await box.set(connection) else {
                try? await connection.close()
                throw ConnectionBox.Closed()
            }
            return connection
        }
    }

    struct Executor: SQLExecutor {
        let connection: PostgresConnection
        let watch: ConnectionWatch
        let logger: Logger

        func query(_ sql: String, _ binds: [SQLValue]) async throws -> [[SQLValue]] {
            var bindings = PostgresBindings()
            for value in binds {
                switch value {
                case .text(let s): bindings.append(s)
                case .int(let i): bindings.append(i)
                case .bytes(let b): bindings.append(ByteBuffer(bytes: b))
                case .null: bindings.appendNull()
                }
            }
            var rows: [[SQLValue]] = []
            let sequence = try await PostgresDriver.answer(
                to: PostgresQuery(unsafeSQL: sql, binds: bindings), on: connection, watch: watch, logger)
            for try await row in sequence {
                var values: [SQLValue] = []
                for cell in row {
                    guard cell.bytes != nil else {
                        values.append(.null)
                        continue
                    }
                    switch cell.dataType {
                    case .int2, .int4, .int8: values.append(.int(try cell.decode(Int64.self)))
                    case .bytea: values.append(.bytes(Array(try cell.decode(ByteBuffer.self).readableBytesView)))
                    default: values.append(.text(try cell.decode(String.self)))
                    }
                }
                rows.append(values)
            }
            return rows
        }
    }

    /// Sends `query`, and fails as soon as the connection is closed. postgres-nio 1.33 writes a
    /// query to its channel without a promise, so a query sent on a connection the server has
    /// just ended (a DBA's `pg_terminate_backend`, a failover) is never answered, and the lane
    /// would wait for ever, holding every operation queued behind it. The connection's
    /// ``ConnectionWatch`` ends that wait when it closes; the lane then reconnects.
    static func answer(
        to query: PostgresQuery, on connection: PostgresConnection, watch: ConnectionWatch, _ logger: Logger
    ) async throws -> PostgresRowSequence {
        try await withCheckedThrowingContinuation { continuation in
            let answer = FirstAnswer<PostgresRowSequence>(continuation)
            guard let ticket = watch.enter({ answer.give(.failure($0)) }) else {
                return answer.give(.failure(ConnectionBox.Closed(lost: true)))
            }
            Task {
                do {
                    answer.give(.success(try await connection.query(query, logger: logger)))
                } catch {
                    answer.give(.failure(error))
                }
                watch.leave(ticket)
            }
        }
    }

    func close() async {
        for lane in [writes, audit, reads] {
            try? await lane.box.close()?.close()
        }
    }

    /// A signal each time a change is committed (`NOTIFY rolegate_changes`), on a connection
    /// of its own that reconnects after a failure. Notifications only speed things up: the
    /// change feed is also polled, so one lost while reconnecting is found by the next poll.
    func changeSignals() -> AsyncStream<Void>? {
        let url = self.url
        let logger = self.logger
        return AsyncStream { continuation in
            let task = Task {
                while !Task.isCancelled {
                    do {
                        let configuration = try PostgresConnect.configuration(
                            for: url, applicationName: "rolegate-store-listen")
                        let connection = try await PostgresConnection.connect(
                            configuration: configuration, id: 2, logger: logger)
                        defer { Task { try? await connection.close() } }
                        // Whatever was committed while not listening is caught up by this signal.
                        continuation.yield()
                        try await connection.listen(on: "rolegate_changes") { notifications in
                            for try await _ in notifications { continuation.yield() }
                        }
                    } catch {
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

private actor ConnectionBox {
    private var connection: PostgresConnection?
    private var watching: (connection: PostgresConnection, watch: ConnectionWatch)?
    private var closed = false

    struct Closed: Error, CustomStringConvertible {
        /// The server ended the connection (rather than the driver being closed).
        var lost = false
        var description: String {
            lost
                ? "the store's connection was ended by the server; the next operation reconnects"
                : "the store connection was closed"
        }
    }

    /// The connection, if any; throws once the driver was closed.
    func open() throws(Closed) -> PostgresConnection? {
        guard !closed else { throw Closed() }
        return connection
    }

    /// Keeps a new connection; false when the driver was closed while it connected.
    func set(_ connection: PostgresConnection) -> Bool {
        guard !closed else { return false }
        self.connection = connection
        return true
    }

    /// The watch of the lane's connection, made once per connection.
    func watch(of connection: PostgresConnection) -> ConnectionWatch {
        if let watching, watching.connection === connection { return watching.watch }
        let watch = ConnectionWatch(connection)
        watching = (connection, watch)
        return watch
    }

    /// Forgets `dropped` if it is the lane's connection: the next operation opens a new one.
    func drop(_ dropped: PostgresConnection) {
        if connection === dropped { connection = nil }
    }

    /// Marks the driver closed; returns the connection to close.
    func close() -> PostgresConnection? {
        closed = true
        defer { connection = nil }
        return connection
    }
}

/// Resumes a continuation with the first of several answers; later ones are ignored.
private final class FirstAnswer<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Value, any Error>?>

    init(_ continuation: CheckedContinuation<Value, any Error>) {
        self.continuation = Mutex(continuation)
    }

    func give(_ result: Result<Value, any Error>) {
        continuation.withLock { pending in
            pending?.resume(with: result)
            pending = nil
        }
    }
}

/// The queries waiting for answers on one connection, failed together when it closes (one
/// callback on the connection's close, not one per query: a connection lives for days).
final class ConnectionWatch: Sendable {
    private struct State {
        var closed = false
        var next: UInt64 = 0
        var waiting: [UInt64: @Sendable (any Error) -> Void] = [:]
    }

    private let state = Mutex(State())

    init(_ connection: PostgresConnection) {
        connection.closeFuture.whenComplete { [self] _ in closed() }
    }

    private func closed() {
        let waiting = state.withLock { state in
            state.closed = true
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for fail in waiting { fail(ConnectionBox.Closed(lost: true)) }
    }

    /// Registers a waiting query; nil when the connection has closed already.
    func enter(_ fail: @escaping @Sendable (any Error) -> Void) -> UInt64? {
        state.withLock { state in
            guard !state.closed else { return nil }
            state.next += 1
            state.waiting[state.next] = fail
            return state.next
        }
    }

    func leave(_ ticket: UInt64) {
        _ = state.withLock { $0.waiting.removeValue(forKey: ticket) }
    }
}
