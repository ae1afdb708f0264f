import Logging
import PostgresNIO
public import RolegateCore
import RolegatePostgres

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
        do {
            configuration = try PostgresConnect.configuration(for: url, applicationName: "rolegate")
        } catch {
            throw ProvisionError(.connection, "database \(database.name): cannot set up TLS: \(error)")
        }
        configuration.options.additionalStartupParameters.append(("client_min_messages", "warning"))
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

    static func sqlState(_ error: any Error) -> String? { PostgresErrorText.sqlState(error) }

    static func describe(_ error: any Error) -> String { PostgresErrorText.describe(error) }
}
