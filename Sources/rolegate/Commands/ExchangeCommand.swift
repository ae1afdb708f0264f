import ArgumentParser
import Foundation

extension TokenCommand {
    struct Exchange: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Exchange an identity token (a JWT from a trusted issuer) for a Rolegate token.",
            discussion: """
                For CI jobs and pods: no stored secret, only the identity the platform already gives \
                (a GitHub Actions OIDC token, a Kubernetes projected service account token). Calls the \
                gateway's POST /v1/auth/exchange; needs no policy or store here.
                  TOKEN=$(rolegate token exchange --jwt-file /var/run/secrets/tokens/rolegate)
                  eval "$(rolegate token exchange --jwt-file jwt.txt --format env)"   # PGUSER, PGPASSWORD
                Exit codes: 0 ok; 1 refused or unreachable (the reason is printed).
                """)

        @Option(help: "The file holding the identity token ('-' reads standard input).") var jwtFile: String
        @Option(help: "The gateway's HTTP API (default: $ROLEGATE_API, else http://127.0.0.1:8080).")
        var api: String?
        @Option(help: "Output: text (the token alone on stdout), json, or env (PGUSER/PGPASSWORD exports).")
        var format: ExchangeFormat = .text

        enum ExchangeFormat: String, ExpressibleByArgument, CaseIterable {
            case text, json, env
        }

        func run() async throws {
            let data: Data
            if jwtFile == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard FileManager.default.fileExists(atPath: jwtFile) else {
                    throw CLIError("--jwt-file \(jwtFile) does not exist")
                }
                // A FileHandle reads what Data(contentsOf:) refuses (a FIFO, a projected token's symlink chain).
                guard let handle = FileHandle(forReadingAtPath: jwtFile) else {
                    throw CLIError("cannot read --jwt-file \(jwtFile) (permissions?)")
                }
                data = handle.readDataToEndOfFile()
                try? handle.close()
            }
            let jwt = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !jwt.isEmpty else { throw CLIError("--jwt-file \(jwtFile) is empty") }
            let exchanged = try await ExchangeClient(api: try ExchangeClient.apiURL(api)).exchange(jwt: jwt)
            switch format {
            case .json: printJSON(exchanged)
            case .env:
                print("export PGUSER=\(shellQuoted(exchanged.service))")
                print("export PGPASSWORD=\(shellQuoted(exchanged.access_token))")
            case .text:
                print(exchanged.access_token)
                Terminal.note(
                    "Exchanged for token \(exchanged.token_id): \(exchanged.service) (role \(exchanged.role)), subject \(exchanged.subject); expires \(exchanged.expires_at)."
                )
            }
        }
    }
}

/// `text` in single quotes for a POSIX shell.
func shellQuoted(_ text: String) -> String {
    "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
