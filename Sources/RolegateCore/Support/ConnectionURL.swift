import Foundation

/// A `postgres://user:password@host:port/dbname?sslmode=...` connection URL.
/// The password is kept only in memory; ``redacted`` is what may be printed.
public struct ConnectionURL: Sendable, Equatable {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var user: String
    public var password: String?
    /// Host name or IP; when `unixSocketDirectory` is set this is ignored.
    public var host: String
    public var port: Int
    public var database: String
    public var sslMode: SSLMode
    public var unixSocketDirectory: String?
    public var applicationName: String?
    /// `sslrootcert`: CA certificates (PEM) to verify the server with; the system's roots when nil.
    public var sslRootCert: String?
    /// `require_auth` (libpq's spelling): how the gateway may log in to this server; nil when unset.
    public var requireAuth: UpstreamAuthMethods?

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    static let knownParameters: Set<String> = [
        "sslmode", "sslrootcert", "host", "port", "application_name", "connect_timeout", "require_auth",
    ]

    public init(parsing text: String) throws(ParseError) {
        guard let components = URLComponents(string: text),
            let scheme = components.scheme?.lowercased(), scheme == "postgres" || scheme == "postgresql"
        else {
            throw ParseError(description: "not a PostgreSQL URL (expected postgres://user@host:5432/dbname)")
        }
        guard let user = components.percentEncodedUser.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw ParseError(description: "the URL names no user (expected postgres://user@host:5432/dbname)")
        }
        self.user = user
        self.password = components.percentEncodedPassword?.removingPercentEncoding
        self.host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "localhost"
        if self.host.hasPrefix("[") && self.host.hasSuffix("]") {
            self.host = String(self.host.dropFirst().dropLast())
        }
        self.port = components.port ?? 5432
        let path = components.percentEncodedPath.removingPercentEncoding ?? ""
        let db = path.hasPrefix("/") ? String(path.dropFirst()) : path
        self.database = db.isEmpty ? user : db
        self.sslMode = .prefer
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw ParseError(
                        description:
                            "unknown sslmode '\(value)' (use one of: \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")))"
                    )
                }
                sslMode = mode
            case "host":
                if value.hasPrefix("/") { unixSocketDirectory = value } else { host = value }
            case "port":
                guard let p = Int(value), (1...65535).contains(p) else {
                    throw ParseError(description: "'\(value)' is not a port number")
                }
                port = p
            case "application_name":
                applicationName = value
            case "connect_timeout":
                break
            case "sslrootcert":
                sslRootCert = value.isEmpty ? nil : value
            case "require_auth":
                do {
                    requireAuth = try UpstreamAuthMethods(names: value.split(separator: ",").map(String.init))
                } catch {
                    throw ParseError(description: "require_auth: \(error.description)")
                }
            default:
                throw ParseError(
                    description:
                        "unknown URL parameter '\(item.name)' (supported: \(Self.knownParameters.sorted().joined(separator: ", ")))"
                )
            }
        }
        guard (1...65535).contains(port) else { throw ParseError(description: "port \(port) is out of range") }
    }

    /// Why `text` is not a usable URL, or nil. Never repeats the password.
    public static func problem(_ text: String) -> String? {
        do {
            _ = try ConnectionURL(parsing: text)
            return nil
        } catch {
            return "\(error.description): \(redact(text))"
        }
    }

    /// The URL with its password replaced by `***`.
    public static func redact(_ text: String) -> String {
        guard var components = URLComponents(string: text) else {
            // Not a URL we understand: show nothing after the scheme that could be a secret.
            if let at = text.lastIndex(of: "@"), let schemeEnd = text.range(of: "://") {
                return String(text[..<schemeEnd.upperBound]) + "***" + String(text[at...])
            }
            return text.contains("@") ? "***" : text
        }
        if components.percentEncodedPassword != nil { components.percentEncodedPassword = "***" }
        return components.string ?? "***"
    }

    /// `user@host:port/db`, for messages.
    public var displayName: String {
        let where_ = unixSocketDirectory.map { "\($0)/.s.PGSQL.\(port)" } ?? "\(host):\(port)"
        return "\(user)@\(where_)/\(database)"
    }
}
