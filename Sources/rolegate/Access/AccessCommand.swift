import ArgumentParser
import Foundation
import RolegateCore
import RolegateTokens

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `rolegate access`: ask for more privilege for a bounded time, decide others' requests, use a
/// granted one. Talks to the gateway's HTTP API as you: the token of `rolegate login`, or
/// `$ROLEGATE_TOKEN` (a service's, or an admin token standing for a person).
struct AccessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access",
        abstract: "Request, approve and use time-bounded elevated access (the policy's access: grants).",
        discussion: """
            rolegate access request fix-billing --for 30m --reason "INC-4411 wrong invoice total" --wait
            rolegate access list --pending            # what you may decide
            rolegate access approve ar-… --comment "ok, pairing"
            eval "$(rolegate access token ar-… --format env)" && psql -c 'UPDATE …'
            Exit codes: 0 ok; 1 error; 2 refused (not allowed, self-approval, not approved).
            """,
        subcommands: [
            Request.self, List.self, Show.self, Approve.self, Deny.self, Revoke.self, Token.self, Webhooks.self,
        ])
}

/// `--api`, and calling the gateway as the person or service at the keyboard.
struct AccessClientOptions: ParsableArguments {
    @Option(help: "The gateway's HTTP API (default: $ROLEGATE_API, else http://127.0.0.1:8080).") var api: String?

    /// `$ROLEGATE_TOKEN`, else the token of `rolegate login` for this gateway.
    func bearer() throws -> (URL, String) {
        let url = try ExchangeClient.apiURL(api)
        if let token = ProcessInfo.processInfo.environment["ROLEGATE_TOKEN"], !token.isEmpty { return (url, token) }
        return (url, try Credentials.current(api: url).token)
    }

    /// One call: the JSON answer, or the problem as an error (exit 2 for a refusal by the rules).
    func call(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> [String: Any] {
        let (api, token) = try bearer()
        var request = URLRequest(url: api.appendingPathComponent(path), timeoutInterval: 30)
        request.httpMethod = method
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        if let body {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
        }
        let (data, status) = try await send(request, cannotReach: "the gateway at \(api)")
        let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        guard (200..<300).contains(status) else {
            let message = "\(json["code"] as? String ?? "http_\(status)"): \(json["detail"] as? String ?? "")"
            if status == 403 || status == 409 {
                Terminal.error(message)
                throw ExitCode(2)
            }
            throw CLIError(message)
        }
        return json
    }
}

extension AccessCommand {
    static func describe(_ request: [String: Any]) -> String {
        let id = request["id"] as? String ?? "?"
        let state = request["state"] as? String ?? "?"
        let approvals = (request["decisions"] as? [[String: Any]] ?? []).filter { $0["approve"] as? Bool == true }
        var line =
            "\(id)  \(request["access"] as? String ?? "") (role \(request["role"] as? String ?? ""))  \(state)"
            + "  by \(request["requester"] as? String ?? "")"
        if request["break_glass"] as? Bool == true { line += "  BREAK-GLASS" }
        if let until = request["granted_until"] as? String { line += "  until \(until)" }
        if !approvals.isEmpty {
            line += "  approved by \(approvals.compactMap { $0["approver"] as? String }.joined(separator: ", "))"
        }
        if let reason = request["reason"] as? String { line += "  — \(reason)" }
        return line
    }

    static func show(_ request: [String: Any], format: OutputFormat) {
        switch format {
        case .json:
            let data =
                (try? JSONSerialization.data(withJSONObject: request, options: [.prettyPrinted, .sortedKeys])) ?? Data()
            print(String(decoding: data, as: UTF8.self))
        case .text: print(describe(request))
        }
    }

    struct Request: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask for a requestable grant.")
        @OptionGroup var client: AccessClientOptions
        @Argument(help: "The grant, as named in the policy's access:.") var access: String
        @Option(name: .customLong("for"), help: "How long, e.g. 30m (default and maximum: the grant's max_duration).")
        var duration: String?
        @Option(help: "Why (required where the grant says so, always for break-glass).") var reason: String?
        @Flag(help: "Wait until it is decided; exit 2 when denied or expired.") var wait = false
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            if let duration { _ = try parseDuration(duration, flag: "--for") }
            var body: [String: Any] = ["access": access]
            if let duration { body["duration"] = duration }
            if let reason { body["reason"] = reason }
            var request = try await client.call("POST", "v1/access/requests", body)
            if wait {
                let id = request["id"] as? String ?? ""
                Terminal.note("Request \(id) is \(request["state"] as? String ?? "?"); waiting for a decision…")
                while request["state"] as? String == "pending" {
                    try await Task.sleep(for: .seconds(2))
                    request = try await client.call("GET", "v1/access/requests/\(id)")
                }
            }
            AccessCommand.show(request, format: format)
            if wait, request["state"] as? String != "approved" { throw ExitCode(2) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Requests you made or may decide (an admin token sees all).")
        @OptionGroup var client: AccessClientOptions
        @Flag(help: "Only pending ones (your inbox).") var pending = false
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            let answer = try await client.call(
                "GET", pending ? "v1/access/requests?state=pending" : "v1/access/requests")
            let requests = answer["requests"] as? [[String: Any]] ?? []
            switch format {
            case .json: AccessCommand.show(["requests": requests], format: .json)
            case .text:
                if requests.isEmpty { print(pending ? "No pending request." : "No request.") }
                for request in requests { print(AccessCommand.describe(request)) }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One request with its decisions.")
        @OptionGroup var client: AccessClientOptions
        @Argument(help: "The request id.") var id: String
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            AccessCommand.show(try await client.call("GET", "v1/access/requests/\(id)"), format: format)
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Approve a request (never your own).")
        @OptionGroup var client: AccessClientOptions
        @Argument(help: "The request id.") var id: String
        @Option(help: "A comment kept with your approval.") var comment: String?
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            let body: [String: Any] = comment.map { ["comment": $0] } ?? [:]
            AccessCommand.show(try await client.call("POST", "v1/access/requests/\(id)/approve", body), format: format)
        }
    }

    struct Deny: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deny a request (final).")
        @OptionGroup var client: AccessClientOptions
        @Argument(help: "The request id.") var id: String
        @Option(help: "Why.") var comment: String?
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            let body: [String: Any] = comment.map { ["comment": $0] } ?? [:]
            AccessCommand.show(try await client.call("POST", "v1/access/requests/\(id)/deny", body), format: format)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a request now: its token is revoked, its sessions end on every instance.")
        @OptionGroup var client: AccessClientOptions
        @Argument(help: "The request id.") var id: String
        @Option(help: "Why.") var reason: String?
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            let body: [String: Any] = reason.map { ["reason": $0] } ?? [:]
            AccessCommand.show(try await client.call("POST", "v1/access/requests/\(id)/revoke", body), format: format)
        }
    }

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pick up the elevated token of your approved request (once); it lives until the grant ends.")
        @OptionGroup var client: AccessClientOptions
        @Argument(help: "The request id.") var id: String
        @Option(help: "Output: text (the token alone), json, or env (PGUSER, PGPASSWORD, PGDATABASE exports).")
        var format: TokenExchangeFormat = .text

        enum TokenExchangeFormat: String, ExpressibleByArgument, CaseIterable { case text, json, env }

        func run() async throws {
            let answer = try await client.call("POST", "v1/access/requests/\(id)/token")
            let token = answer["access_token"] as? String ?? ""
            switch format {
            case .json: AccessCommand.show(answer, format: .json)
            case .env:
                print("export PGUSER=\(shellQuoted(answer["user"] as? String ?? ""))")
                print("export PGPASSWORD=\(shellQuoted(token))")
                if let database = answer["database"] as? String { print("export PGDATABASE=\(shellQuoted(database))") }
            case .text:
                print(token)
                Terminal.note(
                    "Elevated token \(answer["token_id"] as? String ?? "") for \(answer["user"] as? String ?? "") (role \(answer["role"] as? String ?? "")) until \(answer["expires_at"] as? String ?? ""); its sessions end then."
                )
            }
        }
    }

    struct Webhooks: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Webhook deliveries and their status (where the store is).")
        @OptionGroup var policy: PolicyOptions
        @OptionGroup var storeOptions: StoreOptions
        @Option(help: "At most this many, newest first.") var limit = 50
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() async throws {
            let loaded = try policy.load()
            let store = try await storeOptions.open(policy: loaded, policyPath: policy.path)
            let deliveries: [WebhookDelivery]
            do {
                deliveries = try await store.webhookDeliveries(limit: limit)
            } catch {
                await store.close()
                throw CLIError(error.description)
            }
            await store.close()
            let rows = deliveries.map { delivery -> [String] in
                [
                    String(delivery.id), delivery.webhook, delivery.event, delivery.requestID ?? "-",
                    delivery.state.rawValue,
                    String(delivery.attempts), delivery.lastStatus.map(String.init) ?? "-",
                    delivery.deliveredAt?.rfc3339 ?? delivery.nextAttemptAt.rfc3339, delivery.lastError ?? "",
                ]
            }
            switch format {
            case .json:
                printJSON(
                    deliveries.map {
                        [
                            "id": String($0.id), "webhook": $0.webhook, "event": $0.event,
                            "request_id": $0.requestID ?? "",
                            "state": $0.state.rawValue, "attempts": String($0.attempts),
                            "last_status": $0.lastStatus.map(String.init) ?? "", "last_error": $0.lastError ?? "",
                        ]
                    })
            case .text:
                print(table(["ID", "WEBHOOK", "EVENT", "REQUEST", "STATE", "ATTEMPTS", "STATUS", "AT", "ERROR"], rows))
            }
        }
    }
}
