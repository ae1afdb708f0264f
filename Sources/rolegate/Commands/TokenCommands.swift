import ArgumentParser
import Foundation
import RolegateCore
import RolegateStore
import RolegateTokens

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Issue, rotate, revoke and list service tokens.",
        discussion: """
            Exit codes: 0 ok; 1 error; 2 refused by the policy (unknown service, lifetime over \
            max_token_ttl or grace over max_grace, service already has a live token).
            """,
        subcommands: [Issue.self, Rotate.self, Revoke.self, List.self, Show.self, Exchange.self])
}

/// `--store`, and opening the store with the policy it serves.
struct StoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The state store: sqlite:PATH or postgres://user@host/db.",
            discussion:
                "Default: $ROLEGATE_STORE, else store: in the policy, else sqlite:.rolegate/state.db beside the policy.",
            valueName: "url"))
    var store: String?

    func open(policy: Policy, policyPath: String, forAudit: Bool = false) async throws -> any Store {
        let location: StoreLocation
        do {
            location = try StoreLocation.resolve(
                explicit: store, environment: ProcessInfo.processInfo.environment, policy: policy,
                policyPath: policyPath)
        } catch {
            throw CLIError(error.description)
        }
        do {
            return try await location.open(forAudit: forAudit)
        } catch {
            throw CLIError(error.description)
        }
    }
}

/// Loads the policy and opens the store, runs `body`, closes the store.
func withTokenService<T>(
    _ policyOptions: PolicyOptions, _ storeOptions: StoreOptions, _ body: (TokenService) async throws -> T
) async throws -> T {
    let policy = try policyOptions.load()
    let store = try await storeOptions.open(policy: policy, policyPath: policyOptions.path)
    let user =
        ProcessInfo.processInfo.environment["USER"] ?? getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) }
        ?? "unknown"
    let service = TokenService(
        store: store, policy: policy, issuer: "cli:\(user)@\(ProcessInfo.processInfo.hostName)"
    ) { events in await AuditSupport.record(events, policy: policy, store: store) }
    do {
        let result = try await body(service)
        await store.close()
        return result
    } catch {
        await store.close()
        throw error
    }
}

/// Maps token failures to the documented exit codes.
func exitFor(_ error: any Error) -> any Error {
    guard let failure = error as? TokenService.Failure else { return CLIError("\(error)") }
    switch failure {
    case .refused(let message):
        Terminal.error(message)
        return ExitCode(2)
    case .notFound, .store, .identityRevoked:
        return CLIError(failure.description)
    }
}

func parseDuration(_ text: String?, flag: String) throws -> Duration? {
    guard let text else { return nil }
    do {
        return try DurationText.parse(text)
    } catch {
        throw ValidationError("\(flag): \(error.description)")
    }
}

struct IssuedJSON: Encodable {
    var token: String
    var id: String
    var service: String
    var role: String
    var issued_at: String
    var expires_at: String
    var superseded: [TokenJSON]
}

func printJSON(_ value: some Encodable) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = (try? encoder.encode(value)) ?? Data("null".utf8)
    print(String(decoding: data, as: UTF8.self))
}

func printIssued(_ issued: TokenService.Issued, format: OutputFormat, verb: String) {
    let record = issued.record
    switch format {
    case .json:
        let now = Date()
        printJSON(
            IssuedJSON(
                token: issued.token, id: record.id, service: record.service, role: record.role,
                issued_at: record.issuedAt.rfc3339, expires_at: record.expiresAt.rfc3339,
                superseded: issued.superseded.map { TokenJSON($0, now: now) }))
    case .text:
        // The token alone on stdout (TOKEN=$(rolegate token issue svc) works); the rest on stderr.
        print(issued.token)
        let ttl = DurationText.format(
            .milliseconds(record.expiresAt.millisecondsSince1970 - record.issuedAt.millisecondsSince1970))
        Terminal.note(
            "\(verb) token \(record.id) for service \(record.service) (\(record.role.isEmpty ? "admin token" : "role \(record.role)")); expires \(record.expiresAt.rfc3339) (in \(ttl))."
        )
        for old in issued.superseded {
            Terminal.note("Token \(old.id) keeps working until \(old.expiresAt.rfc3339) (grace), then stops.")
        }
        Terminal.note("The token is shown only now: put it in your secret store.")
    }
}

extension TokenCommand {
    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue the token of a service (refused if it already has a live one: use rotate).")

        @OptionGroup var policy: PolicyOptions
        @OptionGroup var storeOptions: StoreOptions
        @Argument(help: "The service, as named in the policy.") var service: String
        @Option(help: "Lifetime, e.g. 30m (default: the service's token_ttl; at most its max_token_ttl).")
        var ttl: String?
        @Option(help: "A note stored with the token (not secret).") var note: String?
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func validate() throws { _ = try parseDuration(ttl, flag: "--ttl") }

        func run() async throws {
            let ttl = try parseDuration(ttl, flag: "--ttl")
            try await withTokenService(policy, storeOptions) { tokens in
                do {
                    printIssued(
                        try await tokens.issue(service: service, ttl: ttl, note: note), format: format, verb: "Issued")
                } catch {
                    throw exitFor(error)
                }
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a new token for a service; the old one works only for the grace window.")

        @OptionGroup var policy: PolicyOptions
        @OptionGroup var storeOptions: StoreOptions
        @Argument(help: "The service, as named in the policy.") var service: String
        @Option(help: "How long the old token keeps working (default: the service's grace, 5m; at most max_grace).")
        var grace: String?
        @Option(help: "Lifetime of the new token (default: the service's token_ttl).") var ttl: String?
        @Option(help: "A note stored with the new token.") var note: String?
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func validate() throws {
            _ = try parseDuration(grace, flag: "--grace")
            _ = try parseDuration(ttl, flag: "--ttl")
        }

        func run() async throws {
            let grace = try parseDuration(grace, flag: "--grace")
            let ttl = try parseDuration(ttl, flag: "--ttl")
            try await withTokenService(policy, storeOptions) { tokens in
                do {
                    printIssued(
                        try await tokens.rotate(service: service, grace: grace, ttl: ttl, note: note), format: format,
                        verb: "Rotated: issued")
                } catch {
                    throw exitFor(error)
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a token now (by id), every live token of a service, or of a subject.")

        @OptionGroup var policy: PolicyOptions
        @OptionGroup var storeOptions: StoreOptions
        @Argument(help: "The token id (as shown by token list).") var id: String?
        @Option(help: "Revoke every live token of this service instead (with --subject: only its tokens).")
        var service: String?
        @Option(help: "Revoke every live token exchanged for this subject (an identity token's sub).")
        var subject: String?
        @Option(help: "Why (recorded with the revocation).") var reason: String?
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func validate() throws {
            if id != nil, service != nil || subject != nil {
                throw ValidationError("give a token id, or --service SERVICE and/or --subject SUBJECT, not both")
            }
            if id == nil, service == nil, subject == nil {
                throw ValidationError("give a token id, --service SERVICE or --subject SUBJECT")
            }
            if subject?.isEmpty == true { throw ValidationError("--subject cannot be empty") }
        }

        func run() async throws {
            try await withTokenService(policy, storeOptions) { tokens in
                let now = Date()
                var revoked: [TokenRecord]
                do {
                    if let id {
                        revoked = [try await tokens.revoke(id: id, reason: reason, now: now)]
                    } else if let subject {
                        revoked = try await tokens.revokeAll(
                            subject: subject, service: service, reason: reason, now: now)
                    } else {
                        revoked = try await tokens.revokeAll(service: service!, reason: reason, now: now)
                    }
                } catch {
                    throw exitFor(error)
                }
                switch format {
                case .json: printJSON(revoked.map { TokenJSON($0, now: now) })
                case .text:
                    if revoked.isEmpty {
                        let whose = subject.map { "Subject \($0)" } ?? "Service \(service ?? "")"
                        print("\(whose) has no live token; nothing revoked.")
                    }
                    for record in revoked {
                        let when = record.revokedAt.map { $0.rfc3339 } ?? now.rfc3339
                        print(
                            "Revoked token \(record.id) (service \(record.service)\(record.subject.map { ", subject \($0)" } ?? "")) at \(when)\(record.revokeReason.map { ": \($0)" } ?? ".")"
                        )
                    }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List tokens (live and in grace; --all for expired and revoked too). Never shows secrets.")

        @OptionGroup var policy: PolicyOptions
        @OptionGroup var storeOptions: StoreOptions
        @Option(help: "Only this service's tokens.") var service: String?
        @Option(help: "Only tokens exchanged for this subject.") var subject: String?
        @Flag(help: "Include expired and revoked tokens.") var all = false
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            try await withTokenService(policy, storeOptions) { tokens in
                let now = Date()
                let records: [TokenRecord]
                do {
                    records = try await tokens.store.tokens(service: service).filter {
                        (all || $0.isUsable(at: now)) && (subject == nil || $0.subject == subject)
                    }
                } catch {
                    throw CLIError("\(error)")
                }
                switch format {
                case .json: printJSON(records.map { TokenJSON($0, now: now) })
                case .text:
                    let rows = records.map {
                        [
                            $0.id, $0.service, $0.role, $0.state(at: now).rawValue, $0.subject ?? "-",
                            $0.issuedAt.rfc3339, $0.expiresAt.rfc3339, $0.lastUsedAt?.rfc3339 ?? "-",
                            $0.revokeReason ?? $0.note ?? "",
                        ]
                    }
                    print(
                        table(
                            [
                                "ID", "SERVICE", "ROLE", "STATE", "SUBJECT", "ISSUED", "EXPIRES", "LAST USED",
                                "NOTE/REASON",
                            ], rows))
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one token's record (never its secret).")

        @OptionGroup var policy: PolicyOptions
        @OptionGroup var storeOptions: StoreOptions
        @Argument(help: "The token id.") var id: String
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            try await withTokenService(policy, storeOptions) { tokens in
                let found: TokenRecord?
                do {
                    found = try await tokens.store.token(id: id)
                } catch {
                    throw CLIError("\(error)")
                }
                guard let record = found else { throw CLIError("no token with id \(id)") }
                let json = TokenJSON(record, now: Date())
                switch format {
                case .json: printJSON(json)
                case .text:
                    let fields: [(String, String?)] = [
                        ("id", json.id), ("service", json.service), ("role", json.role), ("state", json.state),
                        ("issued_at", json.issued_at), ("expires_at", json.expires_at), ("revoked_at", json.revoked_at),
                        ("revoke_reason", json.revoke_reason), ("last_used_at", json.last_used_at),
                        ("superseded_by", json.superseded_by), ("issuer", json.issuer), ("note", json.note),
                        ("subject", json.subject), ("grant", json.grant),
                    ]
                    for (key, value) in fields {
                        print("\(key.padding(toLength: 14, withPad: " ", startingAt: 0)) \(value ?? "-")")
                    }
                }
            }
        }
    }
}

/// A plain left-aligned text table.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
            .trimmingCharacters(in: .whitespaces)
    }.joined(separator: "\n")
}
