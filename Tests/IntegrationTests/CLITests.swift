import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// The CLI's contract without a database: exit codes and messages for bad input.
@Suite(.ownThreads) struct CLITests {
    func run(
        _ arguments: [String], in directory: String, environment: [String: String] = [:], stdin: String? = nil
    )
        throws -> ProcessResult
    {
        var env = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": directory]
        env.merge(environment) { $1 }
        return try Subprocess.run(
            RolegateBinary.path, arguments, environment: env, stdin: stdin, workingDirectory: directory)
    }

    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "rolegate-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func typoExitsOneWithFileLineAndKey() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var policy = contractPolicy
        policy.replaceSubrange(policy.range(of: "privileges: [USAGE]")!, with: "privilegs: [USAGE]")
        try policy.write(toFile: dir + "/rolegate.yaml", atomically: true, encoding: .utf8)
        for command in [["validate"], ["plan"], ["plan", "--check"], ["apply", "--yes"]] {
            let result = try run(command, in: dir, environment: ["APP_ADMIN_URL": "postgres://nobody@127.0.0.1:1/x"])
            #expect(result.status == 1, "\(command)")
            #expect(
                result.stderr.hasPrefix(
                    "error: rolegate.yaml:12:9: roles.analytics_ro.grants[0].privilegs: unknown key 'privilegs' (did you mean 'privileges'?)"
                ), "\(result.stderr)")
            // One mistake, one message: no cascade of "missing key" errors.
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        }
    }

    @Test func configPathComesFromFlagThenEnvironment() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try contractPolicy.write(toFile: dir + "/custom.yaml", atomically: true, encoding: .utf8)
        let env = ["APP_ADMIN_URL": "postgres://u@h/app"]
        #expect(try run(["validate", "--config", "custom.yaml"], in: dir, environment: env).status == 0)
        #expect(
            try run(["validate"], in: dir, environment: env.merging(["ROLEGATE_CONFIG": "custom.yaml"]) { $1 }).status
                == 0)
        let missing = try run(["validate"], in: dir, environment: env)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("policy file rolegate.yaml not found"))
    }

    @Test func unknownFlagsAndValuesAreErrors() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let unknown = try run(["plan", "--frobnicate"], in: dir)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("Unknown option '--frobnicate'"))
        let format = try run(["plan", "--format", "yaml"], in: dir)
        #expect(format.status == 1)
        #expect(format.stderr.contains("yaml"))
        try contractPolicy.write(toFile: dir + "/rolegate.yaml", atomically: true, encoding: .utf8)
        let database = try run(
            ["plan", "--database", "nope"], in: dir, environment: ["APP_ADMIN_URL": "postgres://u@h/app"])
        #expect(database.status == 1)
        #expect(database.stderr.contains("--database nope: the policy declares no such database"))
        // serve's instance flags are checked before anything starts.
        let instance = try run(["serve", "--instance-id", "has spaces; and more"], in: dir)
        #expect(instance.status != 0 && instance.stderr.contains("--instance-id:"), "\(instance.stderr)")
        let advertise = try run(["serve", "--advertise", "nowhere"], in: dir)
        #expect(
            advertise.status != 0 && advertise.stderr.contains("--advertise: expected host:port, got 'nowhere'"),
            "\(advertise.stderr)")
    }

    @Test func applyWithoutATerminalNeedsYes() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try contractPolicy.write(toFile: dir + "/rolegate.yaml", atomically: true, encoding: .utf8)
        let result = try run(["apply"], in: dir, environment: ["APP_ADMIN_URL": "postgres://u@h/app"], stdin: "yes\n")
        #expect(result.status == 1)
        #expect(result.stderr.contains("pass --yes"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/.rolegate/master.key"))
    }

    @Test func unreachableDatabaseIsAClearErrorWithoutThePassword() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try contractPolicy.write(toFile: dir + "/rolegate.yaml", atomically: true, encoding: .utf8)
        let result = try run(
            ["plan", "--check"], in: dir,
            environment: ["APP_ADMIN_URL": "postgres://admin:hunter2@127.0.0.1:1/app?sslmode=disable"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot connect to database app (admin@127.0.0.1:1/app)"), "\(result.stderr)")
        #expect(!result.stderr.contains("hunter2"))
    }

    @Test func initWritesAValidExampleAndRefusesToOverwrite() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try run(["init"], in: dir).status == 0)
        #expect(try run(["validate"], in: dir, environment: ["APP_ADMIN_URL": "postgres://u@h/app"]).status == 0)
        let again = try run(["init"], in: dir)
        #expect(again.status == 1)
        #expect(again.stderr.contains("already exists"))
        #expect(try run(["init", "--force"], in: dir).status == 0)
    }

    @Test func helpListsEveryCommand() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let help = try run(["--help"], in: dir)
        #expect(help.status == 0)
        for command in ["init", "validate", "plan", "apply"] { #expect(help.stdout.contains(command)) }
    }
}
