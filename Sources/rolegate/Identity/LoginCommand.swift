import ArgumentParser
import Foundation

/// `rolegate login`: a person logs in at their organisation's OpenID provider and gets a
/// Rolegate token bound to their role, kept for `rolegate env` and `rolegate psql`.
struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Log in through your organisation's identity provider and keep a short-lived token.",
        discussion: """
            Opens the provider's login page (authorization code with PKCE, redirected back to \
            127.0.0.1), exchanges the ID token at the gateway, and keeps the token in \
            ~/.config/rolegate/credentials.json (0600). Then: rolegate psql, or eval "$(rolegate env)".
            --device logs in from a machine without a browser: enter the code shown on another device.
            """)

    @Option(help: "The gateway's HTTP API (default: $ROLEGATE_API, else http://127.0.0.1:8080).") var api: String?
    @Option(help: "The trusted issuer to log in through (its name in the policy's trust:), when there are several.")
    var trust: String?
    @Flag(help: "Use the device authorization grant (a code to enter on another device) instead of a browser here.")
    var device = false
    @Flag(inversion: .prefixedNo, help: "Open a browser on the login page (--no-browser: only print its URL).")
    var browser = true
    @Option(help: "How long to wait for the login to finish, e.g. 5m.") var timeout: String = "5m"

    func run() async throws {
        let apiURL = try ExchangeClient.apiURL(api)
        let client = ExchangeClient(api: apiURL)
        let listed = try await client.providers()
        let provider: ExchangeClient.Providers.Provider
        if let trust {
            guard let named = listed.providers.first(where: { $0.name == trust }) else {
                throw CLIError(
                    "the gateway has no provider '\(trust)' for people (providers: \(listed.providers.map(\.name).joined(separator: ", ")))"
                )
            }
            provider = named
        } else {
            guard listed.providers.count == 1 else {
                throw CLIError(
                    listed.providers.isEmpty
                        ? "the gateway trusts no provider for people's logins (a trust: with a client_id in its policy)"
                        : "the gateway trusts several providers: choose one with --trust (\(listed.providers.map(\.name).joined(separator: ", ")))"
                )
            }
            provider = listed.providers[0]
        }
        let login = OAuthLogin(
            issuer: provider.issuer, clientID: provider.client_id, clientSecret: provider.client_secret)
        let endpoints = try await login.discover()
        /// The ID token → the person's Rolegate token, kept; says who they are now.
        let finish: (String) async throws -> String = { idToken in
            let exchanged = try await client.exchange(jwt: idToken, type: "urn:ietf:params:oauth:token-type:id_token")
            var credentials = try Credentials.load()
            credentials.logins[apiURL.absoluteString] = Credentials.Login(
                api: apiURL.absoluteString, token: exchanged.access_token, token_id: exchanged.token_id,
                user: exchanged.service, role: exchanged.role, database: exchanged.database,
                subject: exchanged.subject, wire_address: listed.wire_address, expires_at: exchanged.expires_at)
            try credentials.save()
            return "Logged in as \(exchanged.service) (role \(exchanged.role)) until \(exchanged.expires_at)."
        }
        let message: String
        if device {
            let idToken = try await login.deviceCode(endpoints) { code, page in
                Terminal.note("To log in, open \(page.absoluteString) and enter the code \(code)")
            }
            message = try await finish(idToken)
        } else {
            let wait = try parseDuration(timeout, flag: "--timeout") ?? .seconds(300)
            message = try await login.authorizationCode(
                endpoints, timeout: wait,
                show: { url in
                    Terminal.note("To log in, open this page in your browser:\n\n    \(url.absoluteString)\n")
                    if browser { Self.openBrowser(url) }
                }, finish: finish)
        }
        Terminal.note("\(message) Connect with: rolegate psql")
    }

    static func openBrowser(_ url: URL) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["xdg-open", url.absoluteString]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try? process.run()
    }
}

/// `rolegate env`: the logged-in person's connection as libpq environment variables.
struct EnvCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "env",
        abstract: "Print PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE exports for your login.",
        discussion: "eval \"$(rolegate env)\" and then any libpq client (psql, pg_dump, pgcli) connects as you.")

    @Option(help: "The gateway's HTTP API (default: $ROLEGATE_API, else http://127.0.0.1:8080).") var api: String?

    func run() async throws {
        for (name, value) in try connection(api: api) { print("export \(name)=\(shellQuoted(value))") }
    }
}

/// `rolegate psql`: psql, connected as the logged-in person.
struct PsqlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "psql",
        abstract: "Run psql connected through the gateway as you (after rolegate login).",
        discussion: "Arguments after -- go to psql: rolegate psql -- -c 'SELECT current_user'")

    @Option(help: "The gateway's HTTP API (default: $ROLEGATE_API, else http://127.0.0.1:8080).") var api: String?
    @Argument(parsing: .postTerminator, help: "Arguments for psql.") var arguments: [String] = []

    func run() async throws {
        for (name, value) in try connection(api: api) { setenv(name, value, 1) }
        let argv = ["psql"] + arguments
        var cArguments = argv.map { strdup($0) } + [nil]
        execvp("psql", &cArguments)
        throw CLIError("cannot run psql: \(String(cString: strerror(errno))) (is it installed and on PATH?)")
    }
}

/// The libpq environment of the current login to `api`.
func connection(api: String?) throws -> [(String, String)] {
    let login = try Credentials.current(api: try ExchangeClient.apiURL(api))
    guard let colon = login.wire_address.lastIndex(of: ":") else {
        throw CLIError("the gateway's wire address '\(login.wire_address)' has no port")
    }
    var host = String(login.wire_address[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    var variables = [
        ("PGHOST", host), ("PGPORT", String(login.wire_address[login.wire_address.index(after: colon)...])),
        ("PGUSER", login.user), ("PGPASSWORD", login.token),
    ]
    if let database = login.database { variables.append(("PGDATABASE", database)) }
    return variables
}
