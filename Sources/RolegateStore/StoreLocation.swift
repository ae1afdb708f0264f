import Foundation
public import RolegateCore

/// Where the store lives: `sqlite:PATH` or `postgres://…`.
///
/// Resolved from `--store`, else `ROLEGATE_STORE`, else `store:` in the policy, else
/// `sqlite:.rolegate/state.db` beside the policy file.
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(url: String)

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(parsing text: String, relativeTo directory: String = "") throws(ParseError) {
        if text.hasPrefix("sqlite:") {
            var path = String(text.dropFirst("sqlite:".count))
            if path.hasPrefix("//") { path = String(path.dropFirst(2)) }
            guard !path.isEmpty else {
                throw ParseError(description: "sqlite: needs a file path, e.g. sqlite:.rolegate/state.db")
            }
            if !path.hasPrefix("/"), !directory.isEmpty { path = directory + "/" + path }
            self = .sqlite(path: path)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            if let problem = ConnectionURL.problem(text) { throw ParseError(description: "store: \(problem)") }
            self = .postgres(url: text)
        } else {
            throw ParseError(
                description:
                    "unknown store '\(ConnectionURL.redact(text))' (use sqlite:PATH or postgres://user@host/db)")
        }
    }

    public static func resolve(
        explicit: String?, environment: [String: String], policy: Policy?, policyPath: String
    ) throws(ParseError) -> StoreLocation {
        let policyDirectory = (policyPath as NSString).deletingLastPathComponent
        if let explicit, !explicit.isEmpty { return try StoreLocation(parsing: explicit) }
        if let fromEnv = environment["ROLEGATE_STORE"], !fromEnv.isEmpty { return try StoreLocation(parsing: fromEnv) }
        if let configured = policy?.store { return try StoreLocation(parsing: configured, relativeTo: policyDirectory) }
        let base = policyDirectory.isEmpty ? "" : policyDirectory + "/"
        return .sqlite(path: base + ".rolegate/state.db")
    }

    /// Without secrets.
    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let url): ConnectionURL.redact(url)
        }
    }

    /// Opens (and migrates) the store. `forAudit`: a connection for the audit writer only
    /// (SQLite: commits without a WAL fsync, see `SQLiteDriver.open`).
    public func open(forAudit: Bool = false) async throws(StoreError) -> any Store {
        switch self {
        case .sqlite(let path): try await SQLiteStore.open(path: path, appendOnly: forAudit)
        case .postgres(let url): try await PostgresStore.open(url: url)
        }
    }
}
