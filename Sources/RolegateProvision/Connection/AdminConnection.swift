import Logging
import NIOSSL
import PostgresNIO
public import RolegateCore

/// Why provisioning stopped. ``description`` is for people and never holds a secret:
/// not the admin password, not a role credential.
public struct ProvisionError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The admin connection could not be made.
        case connection
        /// PostgreSQL refused a statement.
        case server
        /// The plan cannot be applied as it stands (e.g. a role to drop owns objects).
        case refused
        /// The database changed between the plan shown and the transaction.
        case changed
    }

    public var kind: Kind
    public var message: String
    /// SQLSTATE when PostgreSQL raised the error.
    public var sqlState: String?

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
    }

    public var description: String { message }
}

/// The admin connection `plan` and `apply` use, from a policy database's `url`.
public final class AdminConnection: Sendable {
    let connection: PostgresConnection
    let logger: Logger
    public let target: String

    private init(connection: PostgresConnection, logger: Logger, target: String) {
        self.connection = connection
        self.logger = logger
        self.target = target
    }

    public static func connect(to database: DatabaseSpec) async throws(ProvisionError) -> AdminConnection {
        let url: ConnectionURL
        do {
            url = try ConnectionURL(parsing: database.url)
        } catch {
            throw ProvisionError(.connection, "database \(database.name): \(error.description)")
        }
        var logger = Logger(label: "rolegate.provision")
        logger.logLevel = .critical
        var configuration: PostgresConnection.Configuration
        if let socketDirectory = url.unixSocketDirectory {
            configuration = .init(
                unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(url.port)", username: url.user, password: url.password,
                database: url.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            do {
                tls = try Self.tls(for: url)
            } catch {
                throw ProvisionError(.connection, "database \(database.name): cannot set up TLS: \(error)")
            }
            configuration = .init(
                host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
                tls: tls)
        }
        configuration.options.connectTimeout = .seconds(10)
        var startup = [("application_name", url.applicationName ?? "rolegate")]
        startup.append(("client_min_messages", "warning"))
        configuration.options.additionalStartupParameters = startup
        do {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
            return AdminConnection(connection: connection, logger: logger, target: url.displayName)
        } catch {
            throw ProvisionError(
                .connection,
                "cannot connect to database \(database.name) (\(url.displayName)): \(Self.describe(error))",
                sqlState: Self.sqlState(error))
        }
    }

    static func tls(for url: ConnectionURL) throws -> PostgresConnection.Configuration.TLS {
        switch url.sslMode {
        case .disable, .allow:
            return .disable
        case .prefer, .require:
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = .none
            let context = try NIOSSLContext(configuration: config)
            return url.sslMode == .prefer ? .prefer(context) : .require(context)
        case .verifyCA, .verifyFull:
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = url.sslMode == .verifyFull ? .fullVerification : .noHostnameVerification
            return .require(try NIOSSLContext(configuration: config))
        }
    }

    public func close() async {
        try? await connection.close()
    }

    /// Runs one statement, discarding rows. `display` is what an error message may show.
    public func execute(_ sql: String, display: String? = nil) async throws(ProvisionError) {
        do {
            try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        } catch {
            let shown = display ?? sql
            throw ProvisionError(
                .server, "\(Self.describe(error))\n  while running: \(shown)", sqlState: Self.sqlState(error))
        }
    }

    /// Runs a query and decodes every row.
    func rows<each Column: PostgresDecodable & Sendable>(
        _ query: PostgresQuery, as: (repeat each Column).Type
    ) async throws(ProvisionError) -> [(repeat each Column)] {
        do {
            var result: [(repeat each Column)] = []
            for try await row in try await connection.query(query, logger: logger).decode((repeat each Column).self) {
                result.append(row)
            }
            return result
        } catch {
            throw ProvisionError(
                .server, "inspecting the catalog failed: \(Self.describe(error))", sqlState: Self.sqlState(error))
        }
    }

    static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }

    /// PostgreSQL's message, detail and hint, or what went wrong with the connection;
    /// never the query text (it may carry a credential verifier).
    static func describe(_ error: any Error) -> String {
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
}
