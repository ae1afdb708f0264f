import Foundation

/// A person's Rolegate tokens from `rolegate login`, one per gateway, in
/// `$XDG_CONFIG_HOME/rolegate/credentials.json` (else `~/.config/rolegate/`): the folder 0700,
/// the file 0600, replaced whole on each write. `rolegate env` and `rolegate psql` read it.
struct Credentials: Codable {
    struct Login: Codable {
        var api: String
        var token: String
        var token_id: String
        var user: String
        var role: String
        var database: String?
        var subject: String
        var wire_address: String
        var expires_at: String
    }

    var logins: [String: Login] = [:]

    static var path: String {
        let environment = ProcessInfo.processInfo.environment
        let base =
            environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (environment["HOME"] ?? NSHomeDirectory()) + "/.config"
        return base + "/rolegate/credentials.json"
    }

    static func load() throws -> Credentials {
        guard FileManager.default.fileExists(atPath: path) else { return Credentials() }
        do {
            return try JSONDecoder().decode(Credentials.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw CLIError("\(path) cannot be read (\(error)); remove it and run rolegate login again")
        }
    }

    func save() throws {
        let folder = (Self.path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(
                atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(self)
            // Written to a new 0600 file, then renamed over the old one: never readable by others.
            let temporary = folder + "/.credentials-\(getpid()).json"
            let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            guard descriptor >= 0 else { throw CLIError("cannot create \(temporary)") }
            let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, data.count) }
            close(descriptor)
            guard written == data.count, rename(temporary, Self.path) == 0 else {
                unlink(temporary)
                throw CLIError("cannot write \(Self.path)")
            }
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("cannot write \(Self.path): \(error.localizedDescription)")
        }
    }

    /// The login for `api`, or an error that says how to get one (none, or expired).
    static func current(api: URL) throws -> Login {
        guard let login = try load().logins[api.absoluteString] else {
            throw CLIError("not logged in to \(api.absoluteString): run rolegate login --api \(api.absoluteString)")
        }
        if let expires = Date(rfc3339: login.expires_at), expires <= Date() {
            throw CLIError(
                "your login to \(api.absoluteString) expired at \(login.expires_at): run rolegate login again")
        }
        return login
    }
}
