import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs a program to completion and captures what it printed. Used by the cluster
/// helper and by tests that drive the real `rolegate` binary, `psql` or `pgbench`.
///
/// Built on `posix_spawn` and `waitpid` rather than Foundation's `Process`, whose
/// `waitUntilExit` can miss a child's exit when several run at once on Linux.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public var succeeded: Bool { status == 0 }
}

public enum Subprocess {
    static let spawnLock = NSLock()

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Runs `executable` (a path, or a name looked up on PATH) with `arguments`.
    /// `environment` replaces the inherited one when given.
    @discardableResult
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        stdin: String? = nil, workingDirectory: String? = nil
    ) throws -> ProcessResult {
        var path = try resolve(executable)
        var arguments = arguments
        if let workingDirectory {
            // posix_spawn has no portable chdir: let a shell change directory, then exec the program.
            arguments = ["-c", "cd \"$0\" && exec \"$@\"", workingDirectory, path] + arguments
            path = "/bin/sh"
        }
        let (pid, inWrite, outRead, errRead) = try spawnLock.withLock {
            try spawn(path: path, arguments: arguments, environment: environment)
        }

        // Feed stdin and drain stdout/stderr together so no pipe can fill up and stall the child.
        var input = Array((stdin ?? "").utf8)[...]
        var inFD: Int32 = inWrite
        if input.isEmpty {
            close(inFD)
            inFD = -1
        } else {
            _ = fcntl(inFD, F_SETFL, fcntl(inFD, F_GETFL) | O_NONBLOCK)
        }
        var out: [UInt8] = []
        var err: [UInt8] = []
        var open: [Int32: Bool] = [outRead: true, errRead: true]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while open.values.contains(true) || inFD >= 0 {
            var fds: [pollfd] = []
            for (fd, isOpen) in open where isOpen { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            if inFD >= 0 { fds.append(pollfd(fd: inFD, events: Int16(POLLOUT), revents: 0)) }
            guard poll(&fds, nfds_t(fds.count), -1) >= 0 else {
                if errno == EINTR { continue }
                break
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == inFD {
                    let written = input.withUnsafeBytes { write(inFD, $0.baseAddress, $0.count) }
                    if written > 0 { input = input.dropFirst(written) }
                    if written < 0 && errno != EAGAIN || input.isEmpty {
                        close(inFD)
                        inFD = -1
                    }
                    continue
                }
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    if entry.fd == outRead {
                        out += buffer[0..<count]
                    } else {
                        err += buffer[0..<count]
                    }
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    open[entry.fd] = false
                    close(entry.fd)
                }
            }
        }
        var stderr = String(decoding: err, as: UTF8.self)
        let exitCode: Int32
        if let status = wait(for: pid) {
            exitCode = status
        } else {
            // Someone else reaped it (ECHILD): its exit status is lost. Never report that as success.
            exitCode = -1
            stderr += "\n(waitpid \(pid): \(String(cString: strerror(errno))); the exit status is unknown)"
        }
        return ProcessResult(status: exitCode, stdout: String(decoding: out, as: UTF8.self), stderr: stderr)
    }

    /// Reaps `pid` and returns its exit code (128 + the signal when a signal ended it); nil
    /// when it cannot be waited for (not our child, or already reaped).
    static func wait(for pid: pid_t) -> Int32? {
        var status: Int32 = 0
        var result: pid_t
        repeat { result = waitpid(pid, &status, 0) } while result < 0 && errno == EINTR
        guard result == pid else { return nil }
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Spawn attributes that give the child an empty signal mask and default signal
    /// handlers. The calling thread (a Dispatch or NIO thread) may block signals, and a
    /// child would inherit that: `pgbench -T` waits for a SIGALRM that never comes.
    static func cleanSignalAttributes(_ attributes: inout posix_spawnattr_t, flags extra: Int32 = 0) {
        posix_spawnattr_init(&attributes)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var all = sigset_t()
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(
            &attributes, Int16(Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF) | extra))
    }

    /// Creates the child's pipes (close-on-exec, so no other child inherits them) and spawns
    /// it. Runs under `spawnLock`: a child started concurrently must not inherit another
    /// child's pipe ends, or that child's stdin would never reach end-of-file.
    private static func spawn(
        path: String, arguments: [String], environment: [String: String]?
    ) throws -> (
        pid: pid_t, stdin: Int32, stdout: Int32, stderr: Int32
    ) {
        var inPipe: [Int32] = [-1, -1]
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard pipe(&inPipe) == 0, pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
            throw Failure(description: "pipe(): \(String(cString: strerror(errno)))")
        }
        for fd in inPipe + outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var attributes = posix_spawnattr_t()
        cleanSignalAttributes(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var pid: pid_t = 0
        let spawned = withCStrings([path] + arguments) { argv in
            withCStrings(env) { envp in posix_spawn(&pid, path, &actions, &attributes, argv, envp) }
        }
        close(inPipe[0])
        close(outPipe[1])
        close(errPipe[1])
        guard spawned == 0 else {
            close(inPipe[1])
            close(outPipe[0])
            close(errPipe[0])
            throw Failure(description: "cannot start \(path): \(String(cString: strerror(spawned)))")
        }
        return (pid, inPipe[1], outPipe[0], errPipe[0])
    }

    /// Starts a program in a new session with no standard streams and does not wait for it.
    public static func spawnDetached(_ executable: String, _ arguments: [String]) throws {
        let path = try resolve(executable)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        var attributes = posix_spawnattr_t()
        // 0x80 is glibc's POSIX_SPAWN_SETSID: leave our session.
        cleanSignalAttributes(&attributes, flags: 0x80)
        defer { posix_spawnattr_destroy(&attributes) }
        var pid: pid_t = 0
        let env = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let spawned = spawnLock.withLock {
            withCStrings([path] + arguments) { argv in
                withCStrings(env) { envp in posix_spawn(&pid, path, &actions, &attributes, argv, envp) }
            }
        }
        guard spawned == 0 else {
            throw Failure(description: "cannot start \(path): \(String(cString: strerror(spawned)))")
        }
    }

    /// Runs and throws unless the program exits 0.
    @discardableResult
    public static func check(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil
    ) throws -> ProcessResult {
        let result = try run(executable, arguments, environment: environment, stdin: stdin)
        guard result.succeeded else {
            throw Failure(
                description:
                    "\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)\(result.stdout)"
            )
        }
        return result
    }

    /// A program's path: as given when it contains a slash, else the first match on PATH.
    public static func resolve(_ name: String) throws -> String {
        if name.contains("/") { return name }
        if let found = which(name) { return found }
        throw Failure(description: "\(name) not found on PATH")
    }

    public static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    private static func withCStrings<R>(
        _ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R
    ) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

extension Subprocess {
    /// `run`, on a thread of its own. Use it from async code: a blocking wait on Swift's
    /// cooperative pool (two threads on a two-core machine) can starve async work in the
    /// same process, such as a gateway under test.
    public static func runDetached(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil,
        workingDirectory: String? = nil
    ) async throws -> ProcessResult {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                do {
                    continuation.resume(
                        returning: try run(
                            executable, arguments, environment: environment, stdin: stdin,
                            workingDirectory: workingDirectory))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.start()
        }
    }
}

/// A program started in the background by ``Subprocess/launch(_:_:environment:output:)``.
public final class RunningProcess: Sendable {
    public let pid: Int32
    public let outputPath: String
    /// Its exit code once reaped. After that its pid may belong to any new process (pids
    /// come round within minutes on a busy CI machine with a 32,768 pid_max), so it is never
    /// signalled or waited for again.
    private let exitCode = Mutex<Int32?>(nil)

    init(pid: Int32, outputPath: String) {
        self.pid = pid
        self.outputPath = outputPath
    }

    /// What it has printed so far (stdout and stderr together).
    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Sends `signal` (15, SIGTERM, by default; 0 sends none) and waits for the exit; returns
    /// the exit status. Once it has exited, later calls return that status and signal nothing.
    @discardableResult
    public func stop(signal: Int32 = 15) -> Int32 {
        exitCode.withLock { code in
            if let code { return code }
            // Not reaped yet, so the pid is still this process's (a zombie keeps it).
            if signal != 0 { kill(pid, signal) }
            let reaped = Subprocess.wait(for: pid) ?? -1
            code = reaped
            return reaped
        }
    }
}

extension Subprocess {
    /// Starts a program in the background with stdout and stderr going to `output`.
    public static func launch(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, output: String
    ) throws -> RunningProcess {
        let path = try resolve(executable)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var attributes = posix_spawnattr_t()
        cleanSignalAttributes(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var pid: pid_t = 0
        let spawned = spawnLock.withLock {
            withCStrings([path] + arguments) { argv in
                withCStrings(env) { envp in posix_spawn(&pid, path, &actions, &attributes, argv, envp) }
            }
        }
        guard spawned == 0 else {
            throw Failure(description: "cannot start \(path): \(String(cString: strerror(spawned)))")
        }
        return RunningProcess(pid: pid, outputPath: output)
    }
}
