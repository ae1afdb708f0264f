import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// A throwaway cluster with a database `app` owned by a non-superuser admin (CREATEROLE
/// only, as the README recommends), a schema the policies grant on, and a folder for
/// the policy file and the master key. Everything is removed when the test ends,
/// whether it passed or not.
final class Fixture: @unchecked Sendable {
    let cluster: PostgresCluster
    let directory: String
    let adminPassword = "admin-" + UUID().uuidString

    static let schema = """
        CREATE SCHEMA billing;
        CREATE TABLE billing.customers (id serial PRIMARY KEY, email text NOT NULL, ssn text);
        CREATE TABLE billing.invoices (id serial PRIMARY KEY, customer_id int REFERENCES billing.customers, amount numeric);
        CREATE FUNCTION billing.close_month(d date) RETURNS int LANGUAGE sql AS 'SELECT 1';
        CREATE FUNCTION billing.wipe() RETURNS void LANGUAGE sql AS 'SELECT';
        REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;
        CREATE SCHEMA analytics;
        CREATE TABLE analytics.events (id bigserial PRIMARY KEY, name text);
        CREATE VIEW analytics.daily AS SELECT name, count(*) FROM analytics.events GROUP BY name;
        CREATE TABLE public.notes (id int, body text);
        INSERT INTO billing.customers (email, ssn) VALUES ('a@example.com', '123'), ('b@example.com', '456');
        INSERT INTO analytics.events (name) VALUES ('signup'), ('login');
        """

    init() throws {
        try TestThreads.requireForBlockingWork("a test's PostgreSQL cluster")
        cluster = try PostgresCluster.start()
        directory = NSTemporaryDirectory() + "rolegate-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try cluster.psql(
            """
            CREATE ROLE rolegate_admin LOGIN CREATEROLE PASSWORD '\(adminPassword)';
            CREATE DATABASE app OWNER rolegate_admin;
            """)
        // The schema belongs to the admin, as it would after the application's migrations.
        try cluster.psql("SET ROLE rolegate_admin;\n" + Self.schema, database: "app")
    }

    deinit {
        cluster.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var adminURL: String { cluster.url(user: "rolegate_admin", password: adminPassword, database: "app") }

    var environment: [String: String] {
        [
            "APP_ADMIN_URL": adminURL,
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "HOME": directory,
        ]
    }

    var policyPath: String { directory + "/rolegate.yaml" }

    func writePolicy(_ text: String) throws {
        try text.write(toFile: policyPath, atomically: true, encoding: .utf8)
    }

    /// Runs the real `rolegate` binary in the fixture's folder.
    @discardableResult
    func rolegate(_ arguments: [String], stdin: String? = nil) throws -> ProcessResult {
        try TestThreads.requireForBlockingWork("running rolegate \(arguments.first ?? "")")
        return try Subprocess.run(
            RolegateBinary.path, arguments, environment: environment, stdin: stdin, workingDirectory: directory)
    }

    /// Runs `rolegate` and records a test failure (with its output) unless it exits `status`.
    @discardableResult
    func expectRolegate(
        _ arguments: [String], status: Int32 = 0, sourceLocation: Testing.SourceLocation = #_sourceLocation
    ) throws -> ProcessResult {
        let result = try rolegate(arguments)
        #expect(
            result.status == status,
            "rolegate \(arguments.joined(separator: " ")) exited \(result.status)\n\(result.stdout)\n\(result.stderr)",
            sourceLocation: sourceLocation)
        return result
    }

    /// SQL as the superuser on `app`.
    @discardableResult
    func sql(_ text: String) throws -> String {
        try TestThreads.requireForBlockingWork("psql")
        return try cluster.psql(text, database: "app")
    }

    /// The master key `apply` created.
    func masterKey() throws -> MasterKey {
        try MasterKeyFile.load(from: directory + "/.rolegate/master.key")
    }

    /// Runs SQL over TCP (scram-sha-256) as a managed role with its derived credential, waited
    /// for on a thread of its own (a long statement must not hold one of the two threads of
    /// Swift's cooperative pool: a full run once starved other tests' tasks for a minute).
    func sqlAsRole(_ role: String, _ text: String) async throws -> ProcessResult {
        try await Subprocess.runDetached(
            cluster.binaries.psql,
            [
                "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "\(cluster.port)", "-U", role,
                "-d", "app", "-c", text,
            ],
            environment: [
                "PGPASSWORD": try masterKey().rolePassword(role: role), "PATH": environment["PATH"]!,
                "PGSSLMODE": "disable",
            ])
    }
}

enum RolegateBinary {
    /// The `rolegate` executable built beside this test bundle.
    static let path: String = {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = runner.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("rolegate").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/rolegate").path
    }()
}
