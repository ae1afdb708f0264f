import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A throwaway PostgreSQL cluster: `initdb` into a temporary folder, `pg_ctl start` on a
/// free loopback port, `scram-sha-256` for TCP (as in production) and trust on its own
/// Unix socket for setup. When running as root the server runs as the `postgres` user.
///
/// A watchdog process stops the cluster and removes its folder if the process that
/// started it dies without calling ``stop()``, so a crashed test leaves nothing behind.
public final class PostgresCluster: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let binaries: PostgresBinaries
    public let baseDirectory: String
    public let dataDirectory: String
    public let socketDirectory: String
    public let port: Int
    public let superuser = "postgres"
    /// The superuser's password for TCP logins (random per cluster).
    public let superuserPassword: String
    /// Leave the folder in place when stopping (the server is still stopped).
    public let keepFiles: Bool
    private let runAsUser: String?
    private let lock = NSLock()
    private var stopped = false
    /// `max_connections` for the next ``startServer()`` (e.g. after ``stopServer()`` for a load test).
    public var maxConnections: Int {
        get { lock.withLock { _maxConnections } }
        set { lock.withLock { _maxConnections = newValue } }
    }
    private var _maxConnections = 200

    /// Starts a new cluster, in a new temporary folder or in `directory` (which must not
    /// exist yet). Throws with a message naming what to install when the server binaries
    /// are missing.
    public static func start(directory: String? = nil, keepFiles: Bool = false) throws -> PostgresCluster {
        let binaries = try PostgresBinaries.locate()
        var lastError: (any Error)?
        for _ in 0..<3 {
            do {
                return try PostgresCluster(binaries: binaries, directory: directory, keepFiles: keepFiles)
            } catch {
                lastError = error  // most often: the free port was taken meanwhile
            }
        }
        throw lastError!
    }

    private init(binaries: PostgresBinaries, directory: String?, keepFiles: Bool) throws {
        self.binaries = binaries
        self.keepFiles = keepFiles
        runAsUser = geteuid() == 0 ? "postgres" : nil
        if let directory {
            guard !FileManager.default.fileExists(atPath: directory) else {
                throw Failure(description: "\(directory) already exists; choose a new folder")
            }
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            baseDirectory = directory
        } else {
            var template = Array("/tmp/rolegate-pg-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else {
                throw Failure(description: "cannot create a temporary folder: \(String(cString: strerror(errno)))")
            }
            baseDirectory = String(cString: made)
        }
        dataDirectory = baseDirectory + "/data"
        socketDirectory = baseDirectory
        superuserPassword = "pw-" + UUID().uuidString
        port = try Self.freePort()
        do {
            try setUp()
        } catch {
            _ = try? runAsServerUser(binaries.pgCtl, ["-D", dataDirectory, "-m", "immediate", "-w", "stop"])
            try? FileManager.default.removeItem(atPath: baseDirectory)
            throw error
        }
    }

    private func setUp() throws {
        let passwordFile = baseDirectory + "/pwfile"
        try (superuserPassword + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
        if let user = runAsUser {
            guard let entry = getpwnam(user) else {
                throw Failure(
                    description:
                        "running as root, but there is no '\(user)' user to run PostgreSQL as (apt-get install postgresql creates it)"
                )
            }
            for path in [baseDirectory, passwordFile] {
                guard chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
                    throw Failure(description: "cannot chown \(path) to \(user): \(String(cString: strerror(errno)))")
                }
            }
        }
        try runAsServerUser(
            binaries.initdb,
            [
                "-D", dataDirectory, "-U", superuser, "--pwfile=\(passwordFile)", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "-N",
            ])
        try? FileManager.default.removeItem(atPath: passwordFile)
        startWatchdog()
        try startServer()
    }

    /// Starts the server (again) on the same port and folder.
    public func startServer() throws {
        let options = [
            "-p \(port)", "-c listen_addresses=127.0.0.1", "-c unix_socket_directories='\(socketDirectory)'",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c shared_buffers=16MB",
            "-c max_connections=\(maxConnections)", "-c password_encryption=scram-sha-256",
        ].joined(separator: " ")
        try runAsServerUser(
            binaries.pgCtl,
            ["-D", dataDirectory, "-o", options, "-l", baseDirectory + "/server.log", "-w", "-t", "60", "start"])
    }

    /// Turns TLS on (`ssl = on`, reloaded without a restart) with a PEM certificate and key,
    /// copied into the data folder where the server user can read them.
    public func enableTLS(certificate: String, key: String) throws {
        for (source, name) in [(certificate, "server.crt"), (key, "server.key")] {
            let target = dataDirectory + "/" + name
            try? FileManager.default.removeItem(atPath: target)
            try FileManager.default.copyItem(atPath: source, toPath: target)
            chmod(target, 0o600)
            if let user = runAsUser, let entry = getpwnam(user) {
                guard chown(target, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
                    throw Failure(description: "cannot chown \(target) to \(user): \(String(cString: strerror(errno)))")
                }
            }
        }
        _ = try psql("ALTER SYSTEM SET ssl = on")
        _ = try psql("SELECT pg_reload_conf()")
        for _ in 0..<50 {
            if try psql("SHOW ssl") == "on" { return }
            usleep(100_000)
        }
        throw Failure(description: "the server did not turn TLS on; see \(baseDirectory)/server.log")
    }

    /// Stops the server but keeps the cluster, to simulate an outage (`startServer()` brings it back).
    public func stopServer() throws {
        try runAsServerUser(binaries.pgCtl, ["-D", dataDirectory, "-m", "fast", "-w", "stop"])
    }

    /// Stops the server and removes its folder. Safe to call twice.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        _ = try? runAsServerUser(
            binaries.pgCtl, ["-D", dataDirectory, "-m", keepFiles ? "fast" : "immediate", "-w", "stop"])
        if !keepFiles { try? FileManager.default.removeItem(atPath: baseDirectory) }
    }

    deinit { stop() }

    /// A TCP URL (scram-sha-256) for `user` on `database`.
    public func url(user: String, password: String, database: String) -> String {
        func enc(_ s: String) -> String {
            s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-._~"))) ?? s
        }
        return "postgres://\(enc(user)):\(enc(password))@127.0.0.1:\(port)/\(enc(database))?sslmode=disable"
    }

    /// Runs SQL as the superuser over the Unix socket with `psql` and returns what it printed
    /// (unaligned, tuples only). Throws with PostgreSQL's message on any error.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres", user: String? = nil) throws -> String {
        let (arguments, environment) = psqlInvocation(database: database, user: user)
        return try psqlOutput(Subprocess.run(binaries.psql, arguments, environment: environment, stdin: sql))
    }

    /// `psql`, waited for on a thread of its own: for async code that polls the server
    /// (a blocking wait on Swift's cooperative pool can starve the rest of the process).
    public func psqlDetached(
        _ sql: String, database: String = "postgres", user: String? = nil
    ) async throws
        -> String
    {
        let (arguments, environment) = psqlInvocation(database: database, user: user)
        return try psqlOutput(
            await Subprocess.runDetached(binaries.psql, arguments, environment: environment, stdin: sql))
    }

    private func psqlInvocation(database: String, user: String?) -> ([String], [String: String]) {
        (
            [
                "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory, "-p", "\(port)",
                "-U", user ?? superuser, "-d", database, "-f", "-",
            ],
            [
                "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10",
            ]
        )
    }

    private func psqlOutput(_ result: ProcessResult) throws -> String {
        guard result.succeeded else {
            throw Failure(description: "psql failed (\(result.status)): \(result.stderr)")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func runAsServerUser(_ executable: String, _ arguments: [String]) throws {
        if let user = runAsUser {
            try Subprocess.check("/usr/sbin/runuser", ["-u", user, "--", executable] + arguments)
        } else {
            try Subprocess.check(executable, arguments)
        }
    }

    /// A detached shell that stops the server once our process is gone: the cluster this
    /// process made, named by a random id written beside it, and no other (a new cluster made
    /// in the same folder meanwhile, `rolegate demo --keep DIR` run again at once, is left alone).
    private func startWatchdog() {
        let stopCommand =
            (runAsUser.map { "/usr/sbin/runuser -u \($0) -- " } ?? "")
            + "'\(binaries.pgCtl)' -D '\(dataDirectory)' -m immediate -w stop"
        let marker = baseDirectory + "/.watchdog-id"
        let id = UUID().uuidString
        try? id.write(toFile: marker, atomically: true, encoding: .utf8)
        let script = """
            while kill -0 \(getpid()) 2>/dev/null && [ -d '\(dataDirectory)' ]; do sleep 1; done
            if [ -d '\(dataDirectory)' ] && [ "$(cat '\(marker)' 2>/dev/null)" = '\(id)' ]; then \(stopCommand) >/dev/null 2>&1; \(keepFiles ? "true" : "rm -rf '\(baseDirectory)'"); fi
            """
        try? Subprocess.spawnDetached("/bin/sh", ["-c", script])
    }

    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw Failure(description: "bind(): \(String(cString: strerror(errno)))") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw Failure(description: "getsockname(): \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Where the PostgreSQL server programs are: on PATH, or under Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest version first).
public struct PostgresBinaries: Sendable {
    public var initdb: String
    public var pgCtl: String
    public var psql: String

    public static func locate() throws -> PostgresBinaries {
        if let initdb = Subprocess.which("initdb"), let pgCtl = Subprocess.which("pg_ctl") {
            let dir = (initdb as NSString).deletingLastPathComponent
            let psql = Subprocess.which("psql") ?? "\(dir)/psql"
            return PostgresBinaries(initdb: initdb, pgCtl: pgCtl, psql: psql)
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap { Int($0) }.sorted(by: >)
        for version in versions {
            let bin = "\(root)/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: "\(bin)/initdb"),
                FileManager.default.isExecutableFile(atPath: "\(bin)/pg_ctl")
            {
                let psql =
                    FileManager.default.isExecutableFile(atPath: "\(bin)/psql")
                    ? "\(bin)/psql" : (Subprocess.which("psql") ?? "\(bin)/psql")
                return PostgresBinaries(initdb: "\(bin)/initdb", pgCtl: "\(bin)/pg_ctl", psql: psql)
            }
        }
        throw PostgresCluster.Failure(
            description:
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin; install them, e.g. 'apt-get install -y postgresql' on Debian/Ubuntu"
        )
    }
}
