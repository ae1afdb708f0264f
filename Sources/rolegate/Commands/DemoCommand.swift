import ArgumentParser
import Foundation
import PostgresCluster
import RolegateCore
import RolegateProvision
import RolegateStore
import RolegateTokens

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start a throwaway PostgreSQL, apply an example policy, issue tokens, and show the tour.",
        discussion: """
            Needs the PostgreSQL server binaries (on PATH or under /usr/lib/postgresql/*/bin). \
            Ctrl-C stops everything and removes the temporary folder; with --keep the folder stays.
            """)

    @Option(help: ArgumentHelp("Keep the cluster, policy and store in this new folder.", valueName: "dir"))
    var keep: String?

    @Flag(help: ArgumentHelp("Set up, print the tour and stop at once (for scripts and tests).", visibility: .hidden))
    var once = false

    func run() async throws {
        let base: String
        if let keep {
            base = URL(fileURLWithPath: keep).standardizedFileURL.path
            guard !FileManager.default.fileExists(atPath: base) else {
                throw CLIError("--keep \(base): the folder already exists; name a new one")
            }
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        } else {
            var template = Array("/tmp/rolegate-demo-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw CLIError("cannot create a temporary folder") }
            base = String(cString: made)
        }
        // The server runs as 'postgres' when we are root: it must be able to reach the folder.
        chmod(base, 0o755)

        Terminal.note("Starting a throwaway PostgreSQL in \(base)/postgres ...")
        let cluster: PostgresCluster
        do {
            cluster = try PostgresCluster.start(directory: base + "/postgres", keepFiles: keep != nil)
        } catch {
            if keep == nil { try? FileManager.default.removeItem(atPath: base) }
            throw CLIError("\(error)")
        }
        let gateway: RunningProcess
        do {
            gateway = try await setUp(cluster: cluster, base: base)
        } catch {
            cluster.stop()
            if keep == nil { try? FileManager.default.removeItem(atPath: base) }
            throw error
        }
        if !once { await waitForSignal() }
        Terminal.note("\nStopping the gateway and PostgreSQL ...")
        gateway.stop()
        cluster.stop()
        if keep == nil {
            try? FileManager.default.removeItem(atPath: base)
            Terminal.note("Removed \(base). Bye.")
        } else {
            Terminal.note(
                "Kept \(base). Start the cluster again with: \(cluster.binaries.pgCtl) -D \(cluster.dataDirectory) -l \(base)/postgres/server.log start"
            )
        }
    }

    private func setUp(cluster: PostgresCluster, base: String) async throws -> RunningProcess {
        let adminPassword = Base64URL.random(bytes: 18)
        try cluster.psql(
            """
            CREATE ROLE rolegate_admin LOGIN CREATEROLE PASSWORD '\(adminPassword)';
            CREATE DATABASE app OWNER rolegate_admin;
            """)
        try cluster.psql("SET ROLE rolegate_admin;\n" + DemoScenario.schema, database: "app")
        let adminURL = cluster.url(user: "rolegate_admin", password: adminPassword, database: "app")

        let policyPath = base + "/rolegate.yaml"
        try DemoScenario.policy.write(toFile: policyPath, atomically: true, encoding: .utf8)
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().path
        let envFile = base + "/demo.env"
        let envHeader = """
            # source this file to talk to the demo (it holds the demo's tokens: keep it private)
            export APP_ADMIN_URL='\(adminURL)'
            export ROLEGATE_CONFIG='\(policyPath)'
            export PATH='\(binary)':"$PATH"

            """

        var environment = ProcessInfo.processInfo.environment
        environment["APP_ADMIN_URL"] = adminURL
        let policy = try PolicyLoader.load(path: policyPath, environment: environment)
        let key = try MasterKeyFile.create(at: MasterKeyFile.path(policy: policy, environment: [:]))
        let provisioner = Provisioner(policy: policy, key: key)
        let plan = try await provisioner.plan(policy.databases[0])
        print("== rolegate plan (what apply will do) ==\n")
        print(PlanRenderer.text([plan]))
        let applied = try await provisioner.apply(policy.databases[0], expected: plan.statements.map(\.display))
        print("== rolegate apply ==\n\nApplied \(applied.plan.statements.count) statements in one transaction.\n")

        let store = try await StoreLocation.sqlite(path: base + "/.rolegate/state.db").open()
        let tokens = TokenService(store: store, policy: policy, issuer: "demo") { events in
            _ = try? await store.appendAudit(events, instance: "cli@demo")
        }
        print("== tokens (one per service; the store keeps only hashes) ==\n")
        var rows: [[String]] = []
        var exports: [String] = []
        for service in policy.services {
            let issued = try await tokens.issue(service: service.name, ttl: nil, note: "demo")
            rows.append([
                service.name, service.admin ? "(admin API)" : service.role, issued.record.id,
                issued.record.expiresAt.rfc3339,
            ])
            exports.append("export \(Self.variable(service.name))='\(issued.token)'")
        }
        await store.close()
        print(table(["SERVICE", "ROLE", "TOKEN ID", "EXPIRES"], rows))

        // The gateway (wire and HTTP) as a child process that stops with us.
        let port = try PostgresCluster.freePort()
        let httpPort = try PostgresCluster.freePort()
        var serveEnvironment = environment
        serveEnvironment["ROLEGATE_CONFIG"] = policyPath
        let gateway = try Subprocess.launch(
            binary + "/rolegate",
            [
                "serve", "--listen", "127.0.0.1:\(port)", "--http", "127.0.0.1:\(httpPort)", "--exit-with-parent",
            ], environment: serveEnvironment, output: base + "/gateway.log")
        for _ in 0..<200 where !gateway.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard gateway.output.contains("HTTP API on") else {
            gateway.stop()
            throw CLIError("the gateway did not start: \(gateway.output)")
        }
        // Tokens go to a file only its owner can read, never to the terminal.
        _ = FileManager.default.createFile(atPath: envFile, contents: nil, attributes: [.posixPermissions: 0o600])
        try
            (envHeader + exports.joined(separator: "\n")
            + "\nexport GW='host=127.0.0.1 port=\(port) dbname=app'\nexport API='http://127.0.0.1:\(httpPort)'\n")
            .write(toFile: envFile, atomically: false, encoding: .utf8)
        print(DemoScenario.tour(envFile: envFile, policyPath: policyPath, base: base, port: port, httpPort: httpPort))
        if !once { print("\nPress Ctrl-C to stop; everything is removed\(keep == nil ? "" : " except \(base)").") }
        fflush(nil)  // the tour must appear now, also when stdout is a pipe or a file
        return gateway
    }

    /// `billing-api` → `BILLING_API_TOKEN`.
    static func variable(_ service: String) -> String {
        service.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined() + "_TOKEN"
    }

}

enum Base64URL {
    static func random(bytes count: Int) -> String {
        Data(SecureRandom.bytes(count)).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
