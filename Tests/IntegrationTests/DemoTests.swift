import Foundation
import PostgresCluster
import Testing

@Suite struct DemoTests {
    /// `rolegate demo` sets everything up, prints a tour whose commands name real files,
    /// and leaves nothing behind.
    @Test func demoRunsAndCleansUp() throws {
        let before = Set(
            try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("rolegate-demo-") })
        let result = try Subprocess.run(
            RolegateBinary.path, ["demo", "--once"],
            environment: [
                "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": NSTemporaryDirectory(),
            ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("Plan: 3 to create, 0 to change, 0 to drop."))
        #expect(result.stdout.contains("Applied"))
        for service in ["dashboard", "billing-api", "support-desk"] { #expect(result.stdout.contains(service)) }
        #expect(result.stdout.contains("rolegate plan --check"))
        #expect(result.stdout.contains("rolegate token revoke --service dashboard"))
        #expect(!result.stdout.contains("rgt_"), "the demo prints token ids, never tokens")
        let after = Set(
            try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("rolegate-demo-") })
        #expect(after.subtracting(before).isEmpty, "the demo left \(after.subtracting(before))")
    }
}
