import Foundation
import RolegateCore

/// A value bound to or read from a store query. The stores keep text and 64-bit integers
/// (times as milliseconds since 1970), and bytes only for audit blocks, so both backends read
/// and write the same values.
enum SQLValue: Sendable, Equatable {
    case text(String)
    case int(Int64)
    /// `BLOB` in SQLite, `bytea` in PostgreSQL.
    case bytes([UInt8])
    case null

    init(_ value: String?) { self = value.map { .text($0) } ?? .null }
    init(_ value: Int64?) { self = value.map { .int($0) } ?? .null }
    init(_ value: Date?) { self = value.map { .int($0.millisecondsSince1970) } ?? .null }

    var text: String? {
        switch self {
        case .text(let s): s
        case .int(let i): String(i)
        case .bytes, .null: nil
        }
    }

    var int: Int64? {
        switch self {
        case .int(let i): i
        case .text(let s): Int64(s)
        case .bytes, .null: nil
        }
    }

    var date: Date? { int.map { Date(milliseconds: $0) } }

    var bytes: [UInt8]? {
        if case .bytes(let b) = self { return b }
        return nil
    }
}

enum SQLDialect: Sendable {
    case sqlite
    case postgres
}

/// Runs queries on one connection. Statements are written with PostgreSQL's `$1`
/// placeholders; the SQLite driver rewrites them to `?1`.
protocol SQLExecutor: Sendable {
    func query(_ sql: String, _ binds: [SQLValue]) async throws -> [[SQLValue]]
}

extension SQLExecutor {
    @discardableResult
    func execute(_ sql: String, _ binds: [SQLValue] = []) async throws -> [[SQLValue]] {
        try await query(sql, binds)
    }
}

/// A backend: one connection, used by one operation at a time.
protocol SQLDriver: Sendable {
    var dialect: SQLDialect { get }

    /// Runs `body` with the connection to itself; inside one write transaction that is
    /// serialised against every other writer (in this process and in others) when
    /// `transaction` is true, committed when `body` returns and rolled back when it throws.
    /// With `serialized` false, a transaction takes no store-wide writer lock (PostgreSQL):
    /// the caller locks the rows it needs (audit chains, one per writer).
    func run<T: Sendable>(
        transaction: Bool, serialized: Bool, _ body: @Sendable (any SQLExecutor) async throws -> T
    ) async throws -> T

    /// Runs `body`, which only reads, where no writer can hold it up: a write waiting for
    /// another process's lock must not delay reading the token feed or a token.
    func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T

    func close() async

    /// Signals of committed changes from other processes, when the backend has them.
    func changeSignals() -> AsyncStream<Void>?

    /// Links and appends audit events in one transaction by a path of the driver's own (SQLite's
    /// audit connection: ``SQLiteAuditAppender``); nil when the driver has none and the portable
    /// path over ``SQLExecutor`` applies. The linked events come back only when `returningLinked`.
    func appendAudit(_ events: [AuditEvent], instance: String, returningLinked: Bool) async throws -> [AuditEvent]?
}

extension SQLDriver {
    func changeSignals() -> AsyncStream<Void>? { nil }
    /// A pool of connections (PostgreSQL) reads on any of them.
    func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        try await run(transaction: false, serialized: true, body)
    }
    func appendAudit(_ events: [AuditEvent], instance: String, returningLinked: Bool) async throws -> [AuditEvent]? {
        nil
    }
}

extension SQLDriver {
    func run<T: Sendable>(transaction: Bool, _ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        try await run(transaction: transaction, serialized: true, body)
    }
}

/// Lets one task at a time use a connection. Unlike an actor it holds across `await`s,
/// so a transaction's statements are never interleaved with another operation's.
actor AsyncGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !busy {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }

    nonisolated func withGate<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        do {
            let result = try await body()
            await release()
            return result
        } catch {
            await release()
            throw error
        }
    }
}
