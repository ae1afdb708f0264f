import NIOSSL
public import PostgresNIO
public import RolegateCore

/// How Rolegate opens a connection to PostgreSQL from a ``ConnectionURL``: TCP or Unix
/// socket, TLS as `sslmode` says, a connect timeout and an `application_name`.
public enum PostgresConnect {
    public static func configuration(
        for url: ConnectionURL, applicationName: String
    ) throws
        -> PostgresConnection.Configuration
    {
        var configuration: PostgresConnection.Configuration
        if let socketDirectory = url.unixSocketDirectory {
            configuration = .init(
                unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(url.port)", username: url.user, password: url.password,
                database: url.database)
        } else {
            configuration = .init(
                host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
                tls: try tls(for: url.sslMode, rootCertificate: url.sslRootCert))
        }
        configuration.options.connectTimeout = .seconds(10)
        configuration.options.additionalStartupParameters = [
            ("application_name", url.applicationName ?? applicationName)
        ]
        return configuration
    }

    /// `sslmode` as libpq reads it: `disable`/`allow` plain, `prefer`/`require` encrypted
    /// without verification, `verify-ca`/`verify-full` verified.
    static func tls(
        for mode: ConnectionURL.SSLMode, rootCertificate: String?
    ) throws -> PostgresConnection.Configuration.TLS {
        switch mode {
        case .disable, .allow:
            return .disable
        case .prefer, .require:
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = .none
            let context = try NIOSSLContext(configuration: config)
            return mode == .prefer ? .prefer(context) : .require(context)
        case .verifyCA, .verifyFull:
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = mode == .verifyFull ? .fullVerification : .noHostnameVerification
            if let rootCertificate { config.trustRoots = .file(rootCertificate) }
            return .require(try NIOSSLContext(configuration: config))
        }
    }
}

/// Human-readable text for PostgreSQL errors: the server's message, detail, hint and
/// SQLSTATE, or what went wrong with the connection. Never the query text, which may
/// carry a credential verifier.
public enum PostgresErrorText {
    public static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let info = error.serverInfo {
                var text = info[.message] ?? "server error"
                if let detail = info[.detail] { text += " (\(detail))" }
                if let hint = info[.hint] { text += "; hint: \(hint)" }
                if let state = info[.sqlState] { text += " [SQLSTATE \(state)]" }
                return text
            }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        if let error = error as? PostgresDecodingError {
            return "unexpected column type (\(error.code)) in \(error.columnName)"
        }
        return "\(error)"
    }

    public static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }
}
