import Foundation
import PostgresCluster
import RolegateTestSupport
import Testing

@Suite(.ownThreads) struct DemoTests {
    /// `rolegate demo` brings everything up and prints a tour; every command of the tour works
    /// as printed; Ctrl-C leaves no process and no folder behind.
    @Test func theTourWorksAsPrintedAndCtrlCCleansUp() async throws {
        let before = Set(
            try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("rolegate-demo-") })
        let log = NSTemporaryDirectory() + "rolegate-demotest-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let demo = try Subprocess.launch(
            RolegateBinary.path, ["demo"],
            environment: [
                "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": NSTemporaryDirectory(),
            ], output: log)
        var output = ""
        for _ in 0..<1200 where !output.contains("Press Ctrl-C") {
            try await Task.sleep(for: .milliseconds(100))
            output = demo.output
        }
        #expect(output.contains("Plan: 3 to create, 0 to change, 0 to drop."), "\(output)")
        #expect(!output.contains("rgt_"), "the demo prints token ids, never tokens")
        let lines = output.split(separator: "\n").map(String.init)
        let envFile = try #require(
            lines.first { $0.hasPrefix("  source ") }.map { String($0.dropFirst("  source ".count)) })
        let attributes = try FileManager.default.attributesOfItem(atPath: envFile)
        #expect((attributes[.posixPermissions] as? Int) == 0o600, "the tokens file must be private")

        // The tour's commands, in order, as one shell script.
        let start = try #require(lines.firstIndex { $0.hasPrefix("  source ") })
        let end = try #require(lines.firstIndex { $0.hasPrefix("Files:") })
        let commands = lines[start..<end].filter { $0.hasPrefix("  ") }.map { $0.dropFirst(2) }
        #expect(commands.count >= 15)
        let tour = try await Subprocess.runDetached(
            "/bin/bash", ["-c", commands.joined(separator: "\n") + "\nwait"],
            environment: [
                "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": NSTemporaryDirectory(),
            ])
        let all = tour.stdout + tour.stderr
        #expect(tour.status == 0, "\(all)")
        #expect(all.contains("login"), "the dashboard's query: \(all)")
        #expect(all.components(separatedBy: "permission denied").count - 1 >= 3, "\(all)")
        #expect(all.contains("\"code\":\"permission_denied\""), "\(all)")
        #expect(all.contains("\"sessions\""), "\(all)")
        #expect(all.contains("token of service \"dashboard\" was revoked"), "the open session did not end: \(all)")
        #expect(all.contains("ok     chain") && !all.contains("BROKEN"), "\(all)")
        #expect(all.contains("exit 0") && all.contains("exit 2") && all.contains("Apply complete"), "\(all)")

        // Ctrl-C: everything stops and the folder goes away.
        let base = (envFile as NSString).deletingLastPathComponent
        #expect(demo.stop(signal: SIGINT) == 0, "\(demo.output)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(!FileManager.default.fileExists(atPath: base))
        // (The cluster's watchdog notices within a second that there is nothing left to guard.)
        var leftovers: [Substring] = []
        for _ in 0..<30 {
            let processes = try Subprocess.run("ps", ["-eo", "pid,args"]).stdout.split(separator: "\n")
            leftovers = processes.filter { $0.contains(base) }
            if leftovers.isEmpty { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(leftovers.isEmpty, "still running: \(leftovers)")
        let after = Set(
            try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("rolegate-demo-") })
        #expect(after.subtracting(before).isEmpty, "the demo left \(after.subtracting(before))")
    }
}
