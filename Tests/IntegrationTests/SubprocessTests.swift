import Foundation
import PostgresCluster
import RolegateTestSupport
import Testing

/// The process helpers the integration tests stand on.
@Suite(.ownThreads) struct SubprocessTests {
    /// A process is waited for once: stopping it again returns the same status and signals
    /// nothing (its pid may belong to another process by then). Before, a second stop signalled
    /// the pid again and reported 0: on a busy CI machine that killed another test's psql.
    @Test func aStoppedProcessIsNeverSignalledOrWaitedForAgain() throws {
        let directory = NSTemporaryDirectory() + "rolegate-subprocess-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let exited = try Subprocess.launch("/bin/sh", ["-c", "exit 3"], output: directory + "/out")
        #expect(exited.stop(signal: 0) == 3)
        #expect(exited.stop() == 3)
        #expect(exited.stop(signal: 9) == 3)

        let sleeping = try Subprocess.launch("/bin/sh", ["-c", "exec sleep 30"], output: directory + "/sleep")
        #expect(sleeping.stop() == 128 + SIGTERM)
        #expect(sleeping.stop(signal: 9) == 128 + SIGTERM)
    }

    @Test func runReportsExitCodesAndOutput() throws {
        let result = try Subprocess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 7"])
        #expect(result.status == 7 && result.stdout == "out\n" && result.stderr == "err\n")
    }
}
