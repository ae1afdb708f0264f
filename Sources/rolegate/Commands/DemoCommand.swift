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
        do {
            try await setUp(cluster: cluster, base: base)
        } catch {
            cluster.stop()
            if keep == nil { try? FileManager.default.removeItem(atPath: base) }
            throw error
        }
        if !once { await waitForSignal() }
        Terminal.note("\nStopping PostgreSQL ...")
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

    private func setUp(cluster: PostgresCluster, base: String) async throws {
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
        try """
        # source this file to talk to the demo
        export APP_ADMIN_URL='\(adminURL)'
        export ROLEGATE_CONFIG='\(policyPath)'
        export PATH='\(binary)':"$PATH"
        """.write(toFile: envFile, atomically: true, encoding: .utf8)

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
        let tokens = TokenService(store: store, policy: policy, issuer: "demo")
        print("== tokens (one per service; secrets are never stored, only hashes) ==\n")
        var rows: [[String]] = []
        for service in policy.services {
            let issued = try await tokens.issue(service: service.name, ttl: nil, note: "demo")
            rows.append([service.name, service.role, issued.record.id, issued.record.expiresAt.rfc3339])
        }
        await store.close()
        print(table(["SERVICE", "ROLE", "TOKEN ID", "EXPIRES"], rows))
        print(
            """

            == try it (in another terminal) ==

              source \(envFile)

              rolegate plan --check; echo "exit $?"            # 0: PostgreSQL matches the policy
              psql "$APP_ADMIN_URL" -c 'GRANT DELETE ON billing.invoices TO billing_writer'
              rolegate plan --check; echo "exit $?"            # 2: drift, and the REVOKE that repairs it
              rolegate apply --yes                             # back in sync, in one transaction

              psql "$APP_ADMIN_URL" -c "SELECT has_column_privilege('billing_writer', 'billing.customers', 'card_last4', 'SELECT')"   # f
              psql "$APP_ADMIN_URL" -c "SELECT has_table_privilege('analytics_ro', 'billing.invoices', 'SELECT')"                       # f

              rolegate token list
              rolegate token rotate billing-api --grace 1m     # new token; the old one works for 1 more minute
              rolegate token revoke --service dashboard --reason "demo"
              rolegate token list --all

            Files: \(policyPath), \(base)/.rolegate/ (master key, token store).
            """)
        if !once { print("\nPress Ctrl-C to stop; everything is removed\(keep == nil ? "" : " except \(base)").") }
        fflush(nil)  // the tour must appear now, also when stdout is a pipe or a file
    }

}

enum Base64URL {
    static func random(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
