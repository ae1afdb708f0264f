import Foundation
import Logging
import NIOCore
import NIOPosix
import RolegateCore
import SQLiteNIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// SQLite through sqlite-nio: WAL mode, a busy timeout so several processes can share
/// the file, and the file created 0600 in a 0700 folder.
final class SQLiteDriver: SQLDriver {
    let dialect = SQLDialect.sqlite
    let connection: SQLiteConnection
    /// This connection's own thread: SQLite blocks in its busy handler while another process
    /// holds the write lock, and on a shared pool such waits could starve the very connection
    /// that would release the lock.
    let thread: NIOThreadPool
    let gate = AsyncGate()
    /// The audit writer's fast path, on append-only connections (see ``SQLiteAuditAppender``).
    let auditAppender: SQLiteAuditAppender?
    /// A second, read-only connection on a thread of its own for ``read(_:)``: in WAL mode
    /// readers never wait for the write lock, but a write waiting for it on ``connection``
    /// (another process holding it) would hold up everything queued behind it there.
    private let reader: (connection: SQLiteConnection, thread: NIOThreadPool)

    private init(
        connection: SQLiteConnection, thread: NIOThreadPool, auditAppender: SQLiteAuditAppender?,
        reader: (connection: SQLiteConnection, thread: NIOThreadPool)
    ) {
        self.connection = connection
        self.thread = thread
        self.auditAppender = auditAppender
        self.reader = reader
    }

    /// The page size of a store file this driver creates.
    static let pageSize = 16384

    /// `appendOnly`: the connection of the audit writer. Its commits skip the fsync of the
    /// WAL (`synchronous = NORMAL`: still atomic and crash-safe for the process; a power loss may
    /// drop the last moments), so the audit log keeps up with the gateway.
    static func open(path: String, appendOnly: Bool = false) async throws -> SQLiteDriver {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        // Create the file (and, through the umask, its -wal and -shm companions) private to us.
        let previous = umask(0o077)
        defer { umask(previous) }
        if !FileManager.default.fileExists(atPath: path) {
            let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            if fd >= 0 { Glibc.close(fd) }
        }
        let (connection, thread) = try await connect(path: path)
        var opened: (connection: SQLiteConnection, thread: NIOThreadPool)?
        do {
            // Settings that make the file (its page size, WAL mode) come first, on the main connection.
            _ = try await raw("PRAGMA busy_timeout = 10000", [], on: connection)
            // A new file only (an existing one keeps its page size): the audit log's appends on 16 KiB
            // pages take ~12% less CPU per row than on SQLite's default 4 KiB (fewer splits, WAL frames
            // and writes) and ~15% less space.
            _ = try await raw("PRAGMA page_size = \(pageSize)", [], on: connection)
            _ = try await raw("PRAGMA journal_mode = WAL", [], on: connection)
            _ = try await raw("PRAGMA synchronous = \(appendOnly ? "NORMAL" : "FULL")", [], on: connection)
            _ = try await raw("PRAGMA foreign_keys = ON", [], on: connection)
            let reader = try await connect(path: path)
            opened = reader
            _ = try await raw("PRAGMA busy_timeout = 10000", [], on: reader.connection)
            // Anything but a read on it fails loudly instead of taking the write lock.
            _ = try await raw("PRAGMA query_only = ON", [], on: reader.connection)
            return SQLiteDriver(
                connection: connection, thread: thread,
                auditAppender: appendOnly ? SQLiteAuditAppender(path: path, thread: thread) : nil, reader: reader)
        } catch {
            for (connection, thread) in [opened, (connection, thread)].compactMap({ $0 }) {
                try? await connection.close()
                try? await thread.shutdownGracefully()
            }
            throw error
        }
    }

    /// A connection to `path` on a thread of its own.
    private static func connect(path: String) async throws -> (connection: SQLiteConnection, thread: NIOThreadPool) {
        var logger = Logger(label: "rolegate.store.sqlite")
        logger.logLevel = .critical
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        do {
            let connection = try await SQLiteConnection.open(
                storage: .file(path: path), threadPool: thread, logger: logger,
                on: MultiThreadedEventLoopGroup.singleton.any())
            return (connection, thread)
        } catch {
            try? await thread.shutdownGracefully()
            throw error
        }
    }

    /// Every SQLite write transaction is serialised by the database lock (`BEGIN IMMEDIATE`).
    func run<T: Sendable>(
        transaction: Bool, serialized: Bool, _ body: @Sendable (any SQLExecutor) async throws -> T
    ) async throws -> T {
        try await gate.withGate {
            let executor = Executor(connection: connection)
            guard transaction else { return try await body(executor) }
            _ = try await raw("BEGIN IMMEDIATE", [])
            do {
                let result = try await body(executor)
                _ = try await raw("COMMIT", [])
                return result
            } catch {
                _ = try? await raw("ROLLBACK", [])
                throw error
            }
        }
    }

    /// Reads on the read-only connection; no gate: single statements, each its own read transaction.
    func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        try await body(Executor(connection: reader.connection))
    }

    struct Executor: SQLExecutor {
        let connection: SQLiteConnection

        func query(_ sql: String, _ binds: [SQLValue]) async throws -> [[SQLValue]] {
            try await SQLiteDriver.raw(Self.sqlitePlaceholders(sql), binds, on: connection)
        }

        /// `$1` → `?1`; a `$` not followed by a digit (a JSON path such as `'$.at'`) stays.
        static func sqlitePlaceholders(_ sql: String) -> String {
            var bytes = Array(sql.utf8)
            for index in bytes.indices.dropLast()
            where bytes[index] == UInt8(ascii: "$")
                && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index + 1])
            {
                bytes[index] = UInt8(ascii: "?")
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    fileprivate func raw(_ sql: String, _ binds: [SQLValue]) async throws -> [[SQLValue]] {
        try await Self.raw(sql, binds, on: connection)
    }

    fileprivate static func raw(
        _ sql: String, _ binds: [SQLValue], on connection: SQLiteConnection
    ) async throws -> [[SQLValue]] {
        let data: [SQLiteData] = binds.map {
            switch $0 {
            case .text(let s): .text(s)
            case .int(let i): .integer(Int(i))
            case .bytes(let b): .blob(ByteBuffer(bytes: b))
            case .null: .null
            }
        }
        let rows = try await connection.query(sql, data)
        return rows.map { row in
            row.columns.map { column in
                switch column.data {
                case .integer(let i): .int(Int64(i))
                case .text(let s): .text(s)
                case .float(let d): .int(Int64(d))
                case .blob(let b): .bytes(Array(b.readableBytesView))
                case .null: .null
                }
            }
        }
    }

    /// The audit writer's group commit through ``auditAppender``; nil when this connection has none.
    func appendAudit(_ events: [AuditEvent], instance: String, returningLinked: Bool) async throws -> [AuditEvent]? {
        guard let auditAppender else { return nil }
        return try await gate.withGate {
            try await auditAppender.append(events, instance: instance, returningLinked: returningLinked)
        }
    }

    func close() async {
        await auditAppender?.close()
        try? await connection.close()
        try? await thread.shutdownGracefully()
        try? await reader.connection.close()
        try? await reader.thread.shutdownGracefully()
    }
}
