import Logging
import PostgresNIO
import RolegateCore
import RolegatePostgres

/// Whether managed roles still log in with the credential Rolegate gave them. Every role
/// can change its own password (`ALTER ROLE … PASSWORD` needs no privilege), and with a
/// password of its own a service could log in around the gateway. A superuser admin reads
/// `pg_authid` (see CatalogInspector); otherwise this logs in as each role once.
enum CredentialProbe {
    /// What `rolpassword` is taken to be when the derived credential was refused.
    static let changedMarker = "(changed outside rolegate)"

    /// Fills in ``ActualRole/password`` for managed login roles it could not read: the
    /// expected verifier when the credential logs in, ``changedMarker`` when PostgreSQL
    /// refuses it (28P01). Anything else (no pg_hba entry, connection limit) leaves it unknown.
    static func probe(
        _ snapshot: inout CatalogSnapshot, roles: [String], database: DatabaseSpec, key: MasterKey
    ) async {
        guard let url = try? ConnectionURL(parsing: database.url) else { return }
        var logger = Logger(label: "rolegate.provision.probe")
        logger.logLevel = .critical
        for name in roles {
            guard let role = snapshot.roles[name], role.password == nil, role.canLogin,
                role.marker?.keyFingerprint == key.fingerprint
            else { continue }
            var asRole = url
            asRole.user = name
            asRole.password = key.rolePassword(role: name)
            guard var configuration = try? PostgresConnect.configuration(for: asRole, applicationName: "rolegate")
            else { continue }
            configuration.options.connectTimeout = .seconds(5)
            do {
                let connection = try await PostgresConnection.connect(
                    configuration: configuration, id: 2, logger: logger)
                try? await connection.close()
                snapshot.roles[name]?.password = .some(key.roleVerifier(role: name).postgresText)
            } catch {
                if PostgresErrorText.sqlState(error) == "28P01" {
                    snapshot.roles[name]?.password = .some(changedMarker)
                }
            }
        }
    }
}
