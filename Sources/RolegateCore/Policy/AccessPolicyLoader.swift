import Foundation

/// `access:` (requestable grants) and `webhooks:` (where their events go), as strict as the
/// rest of the file.
enum AccessPolicyLoader {
    static let accessKeys: Set<String> = [
        "role", "requesters", "approvers", "min_approvals", "max_duration", "require_reason", "pending_timeout",
        "description",
    ]
    static let webhookKeys: Set<String> = ["url", "secret", "format", "events"]

    static func buildAccess(
        _ value: YAMLValue, roleNames: [String], services: [ServiceSpec], roles: [RoleSpec]
    ) -> [AccessSpec] {
        guard let items = value.mapping(what: "requestable grants by name") else { return [] }
        var result: [AccessSpec] = []
        for (name, spec) in items {
            if let problem = NameRules.serviceNameProblem(name) {
                spec.fail("access name: \(problem.replacingOccurrences(of: "service name", with: "name"))")
                continue
            }
            let before = spec.report.issues.count
            guard let fields = spec.mapping(allowed: accessKeys, what: "a requestable grant") else { continue }
            if spec.report.issues.count > before { continue }
            let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let roleValue = f["role"] else {
                spec.fail("missing key 'role': the role the grant gives for its duration")
                continue
            }
            guard let role = roleValue.string(what: "a role name") else { continue }
            guard roleNames.contains(role) else {
                let known = roleNames.joined(separator: ", ")
                roleValue.fail("unknown role '\(role)'; declared roles: \(known.isEmpty ? "none" : known)")
                continue
            }
            if let service = services.first(where: { $0.role == role }),
                roles.first(where: { $0.name == role })?.shared != true
            {
                roleValue.fail(
                    "role '\(role)' is service '\(service.name)''s; a requestable grant needs a role of its own (or mark it 'shared: true')"
                )
                continue
            }
            guard let requestersValue = f["requesters"] else {
                spec.fail("missing key 'requesters' (people, group:NAME or service:NAME who may ask)")
                continue
            }
            let issuesBefore = spec.report.issues.count
            let requesters = principals(requestersValue, services: services)
            if requesters.isEmpty, spec.report.issues.count == issuesBefore {
                requestersValue.fail("list at least one requester")
            }
            let approvers = f["approvers"].map { principals($0, services: services) } ?? []
            if f["approvers"] == nil {
                spec.fail("missing key 'approvers' (who approves; [] for break-glass: no approval, everyone notified)")
                continue
            }
            var minApprovals = approvers.isEmpty ? 0 : 1
            if let field = f["min_approvals"], let number = field.int(what: "min_approvals") {
                if approvers.isEmpty, number != 0 {
                    field.fail("a grant without approvers is break-glass: min_approvals must be 0")
                } else if !approvers.isEmpty, number < 1 || number > 10 {
                    field.fail("min_approvals must be between 1 and 10 when there are approvers")
                } else {
                    minApprovals = number
                }
            }
            var maxDuration = AccessSpec.defaultMaxDuration
            if let field = f["max_duration"], let duration = field.duration(what: "a duration") {
                if duration <= .zero || duration > AccessSpec.longestDuration {
                    field.fail("max_duration must be longer than zero and at most 24h")
                } else {
                    maxDuration = duration
                }
            }
            var pendingTimeout = AccessSpec.defaultPendingTimeout
            if let field = f["pending_timeout"], let duration = field.duration(what: "a duration") {
                if duration <= .zero {
                    field.fail("pending_timeout must be longer than zero")
                } else {
                    pendingTimeout = duration
                }
            }
            // Break-glass always asks why: it is the one grant nobody reviews first.
            let requireReason = f["require_reason"]?.bool(what: "require_reason") ?? approvers.isEmpty
            if approvers.isEmpty, requireReason == false {
                f["require_reason"]?.fail("break-glass (no approvers) always requires a reason")
            }
            _ = f["description"]?.string(what: "a description")
            result.append(
                AccessSpec(
                    name: name, role: role, requesters: requesters, approvers: approvers, minApprovals: minApprovals,
                    maxDuration: maxDuration, requireReason: approvers.isEmpty || requireReason,
                    pendingTimeout: pendingTimeout, location: spec.location))
        }
        return result
    }

    /// `[alice@example.com, group:oncall, service:deploy-bot]`; a service must be in the policy.
    static func principals(_ value: YAMLValue, services: [ServiceSpec]) -> [Principal] {
        guard let list = value.stringList(what: "people, group:NAME or service:NAME") else { return [] }
        var result: [Principal] = []
        for text in list {
            let principal = Principal(text)
            switch principal {
            case .service(let name) where services.first(where: { $0.name == name }) == nil:
                value.fail("service:\(name) is not a service of this policy")
            case .group(let name) where name.isEmpty:
                value.fail("group: needs a group name")
            case .person(let name) where IdentityPolicyLoader.personNameProblem(name) != nil:
                value.fail(
                    "'\(name)' is not a person's name (their email), a group:NAME or a service:NAME")
            default:
                result.append(principal)
            }
        }
        return result
    }

    /// `console: {admin: [...], operator: [...], viewer: [...]}`.
    static func buildConsole(_ value: YAMLValue, services: [ServiceSpec]) -> ConsoleSettings {
        let keys = Set(ConsoleRole.allCases.map(\.rawValue))
        guard let fields = value.mapping(allowed: keys, what: "console roles (admin, operator, viewer)") else {
            return ConsoleSettings()
        }
        var settings = ConsoleSettings()
        for (key, list) in fields {
            guard let role = ConsoleRole(rawValue: key) else { continue }
            settings.members[role] = principals(list, services: services)
        }
        return settings
    }

    static func buildWebhooks(_ value: YAMLValue) -> [WebhookSpec] {
        guard let items = value.mapping(what: "webhooks by name") else { return [] }
        var result: [WebhookSpec] = []
        for (name, spec) in items {
            let before = spec.report.issues.count
            guard let fields = spec.mapping(allowed: webhookKeys, what: "a webhook") else { continue }
            if spec.report.issues.count > before { continue }
            let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let urlValue = f["url"], let url = urlValue.string(what: "a URL") else {
                if f["url"] == nil { spec.fail("missing key 'url'") }
                continue
            }
            if let problem = IdentityPolicyLoader.urlProblem(url, what: "url") {
                urlValue.fail(problem)
                continue
            }
            guard let secretValue = f["secret"], let secret = secretValue.string(what: "a secret") else {
                if f["secret"] == nil {
                    spec.fail(
                        "missing key 'secret' (the HMAC key receivers check signatures with, e.g. ${ROLEGATE_WEBHOOK_SECRET})"
                    )
                }
                continue
            }
            if secret.utf8.count < 16 {
                secretValue.fail("the secret must be at least 16 bytes (it signs every delivery)")
                continue
            }
            var format = WebhookSpec.Format.json
            if let field = f["format"], let text = field.string(what: "json or slack") {
                if let known = WebhookSpec.Format(rawValue: text) {
                    format = known
                } else {
                    field.fail("unknown format '\(text)' (use json or slack)")
                }
            }
            var events = WebhookSpec.events
            if let field = f["events"], let list = field.stringList(what: "event names") {
                let unknown = list.filter { !WebhookSpec.events.contains($0) }
                if !unknown.isEmpty {
                    field.fail(
                        "unknown event \(unknown.joined(separator: ", ")) (events: \(WebhookSpec.events.sorted().joined(separator: ", ")))"
                    )
                }
                events = Set(list)
            }
            result.append(
                WebhookSpec(
                    name: name, url: url, secret: secret, format: format, events: events, location: spec.location))
        }
        return result
    }
}
