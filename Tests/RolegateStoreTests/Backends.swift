import Foundation
import PostgresCluster
import RolegateCore
import RolegateStore
import RolegateTestSupport
import Testing

/// The two store backends the contract suite runs against. PostgreSQL stores live in
/// their own database on one throwaway cluster shared by the whole test process.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    static let cluster: Result<PostgresCluster, any Error> = Result { try PostgresCluster.start() }

    /// A new, empty store location.
    func freshLocation() throws -> StoreLocation {
        switch self {
        case .sqlite:
            let directory = NSTemporaryDirectory() + "rolegate-store-" + UUID().uuidString
            return .sqlite(path: directory + "/state.db")
        case .postgres:
            try TestThreads.requireForBlockingWork("a PostgreSQL store's database")
            let cluster = try Self.cluster.get()
            let name = "store_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            try cluster.psql("CREATE DATABASE \(name)")
            return .postgres(
                url: cluster.url(user: cluster.superuser, password: cluster.superuserPassword, database: name))
        }
    }

    /// Everything the store has written, as text, for secret scanning.
    func dump(_ location: StoreLocation) throws -> String {
        switch location {
        case .sqlite(let path):
            let directory = (path as NSString).deletingLastPathComponent
            var text = ""
            for file in try FileManager.default.contentsOfDirectory(atPath: directory) {
                let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
                text += String(decoding: data, as: UTF8.self)
            }
            return text
        case .postgres(let url):
            let database = String(url.split(separator: "/").last!.split(separator: "?").first!)
            return try Self.cluster.get().psql(
                """
                SELECT string_agg(t::text, E'\\n') FROM rolegate_tokens t;
                SELECT string_agg(c::text, E'\\n') FROM rolegate_changes c;
                SELECT string_agg(s::text, E'\\n') FROM rolegate_services s;
                SELECT string_agg(m::text, E'\\n') FROM rolegate_meta m;
                """, database: database)
        }
    }

    /// Edits the store's audit blocks behind its back (see ``AuditTampering``).
    func tampering(_ location: StoreLocation) throws -> AuditTampering {
        switch location {
        case .sqlite(let path):
            return .sqlite(path: path)
        case .postgres(let url):
            let database = String(url.split(separator: "/").last!.split(separator: "?").first!)
            let cluster = try Self.cluster.get()
            return AuditTampering(dialect: .postgres) { sql in try cluster.psql(sql, database: database) }
        }
    }

    /// Runs SQL on the store's own database (to tamper with it in tests).
    func tamper(_ location: StoreLocation, _ sql: String) throws {
        switch location {
        case .sqlite(let path):
            try Subprocess.check(
                TestClients.python,
                [
                    "-c",
                    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
                    path, sql,
                ])
        case .postgres(let url):
            let database = String(url.split(separator: "/").last!.split(separator: "?").first!)
            try Self.cluster.get().psql(sql, database: database)
        }
    }
}
