import Foundation
import Hummingbird
import RolegateCore
import RolegateProvision

/// `/console/services`: each service with its role, the privileges the database reports for the
/// role (read by `plan`'s inspection, in words), and its tokens by state. `/console/identity`:
/// the trusted identity providers and who each one lets in (services by claims, people, groups,
/// requestable grants).
extension HTTPAPI {
    func addConsoleDirectoryRoutes(to router: Router<APIContext>) {
        let api = self
        router.get("/console/services") { request, _ in
            await api.consolePage(request, needs: .viewer) { viewer in await api.servicesPage(viewer) }
        }
        router.get("/console/identity") { request, _ in
            await api.consolePage(request, needs: .viewer) { viewer in
                Self.page(ConsolePage.identity(viewer, policy: api.policy))
            }
        }
    }

    func servicesPage(_ viewer: ConsoleViewer) async -> Response {
        let provisioner = Provisioner(policy: policy, key: masterKey)
        var privileges: [String: [String]] = [:]
        var problems: [String: String] = [:]
        for database in policy.databases {
            do {
                for (role, lines) in try await provisioner.privileges(database) {
                    privileges[role, default: []] += lines
                }
            } catch {
                problems[database.name] = "\(error)"
            }
        }
        let now = Date()
        var states: [String: [TokenState: Int]] = [:]
        for record in (try? await store.tokens(service: nil)) ?? [] {
            states[record.service, default: [:]][record.state(at: now), default: 0] += 1
        }
        return Self.page(
            ConsolePage.services(viewer, policy: policy, privileges: privileges, problems: problems, tokens: states))
    }
}

extension ConsolePage {
    static func services(
        _ viewer: ConsoleViewer, policy: Policy, privileges: [String: [String]], problems: [String: String],
        tokens: [String: [TokenState: Int]]
    ) -> HTML {
        var body: HTML = "<h1>Services and roles</h1>"
        for (database, problem) in problems.sorted(by: { $0.key < $1.key }) {
            body += alert("Could not read the privileges in \(database): \(problem)")
        }
        func privilegeList(_ role: String) -> HTML {
            let lines = privileges[role] ?? []
            return lines.isEmpty
                ? "<span class=\"muted\">none reported</span>"
                : "<ul class=\"privileges\">\(lines.map { line -> HTML in "<li>\(line)</li>" }.joined())</ul>"
        }
        func roleDatabase(_ role: String) -> HTML {
            "\(policy.roles.first { $0.name == role }?.database ?? "—")"
        }
        let rows = policy.services.map { service -> [HTML] in
            let counts = tokens[service.name] ?? [:]
            let tokenSummary = TokenState.allCases.compactMap { state -> HTML? in
                counts[state].map { "<span class=\"state \(state.rawValue)\">\($0) \(state.rawValue)</span>" }
            }.joined(separator: ", ")
            var kind: [String] = []
            if service.admin { kind.append("admin API") }
            if let trust = service.identity?.trust { kind.append("identity: \(trust)") }
            if service.mcp != nil { kind.append("MCP") }
            let description: HTML = service.description.map { "<br><small>\($0)</small>" } ?? ""
            let kinds: HTML = kind.isEmpty ? "" : "<br><small>\(kind.joined(separator: " · "))</small>"
            return [
                "<strong>\(service.name)</strong>\(description)\(kinds)",
                service.admin ? "—" : "\(service.role)", service.admin ? "—" : roleDatabase(service.role),
                service.admin ? "<span class=\"muted\">no database access</span>" : privilegeList(service.role),
                "<a href=\"/console/tokens?service=\(service.name)\">\(tokenSummary.isEmpty ? "none" : tokenSummary)</a>",
            ]
        }
        body += table(
            ["Service", "Role", "Database", "Privileges (as the database reports)", "Tokens"], rows, id: "services")
        let bound = Set(policy.services.map(\.role))
        let others = policy.roles.filter { !bound.contains($0.name) }
        if !others.isEmpty {
            body += "<h2>Roles bound to people, groups and requestable grants</h2>"
            body += table(
                ["Role", "Database", "Privileges (as the database reports)", "Bound to"],
                others.map { role -> [HTML] in
                    let holders: [HTML] =
                        policy.people.filter { $0.role == role.name }.map { "\($0.name)" }
                        + policy.groups.filter { $0.role == role.name }.map { "group \($0.name)" }
                        + policy.access.filter { $0.role == role.name }.map { "grant \($0.name)" }
                    return [
                        "<strong>\(role.name)</strong>", "\(role.database)", privilegeList(role.name),
                        holders.isEmpty ? "—" : holders.joined(separator: "<br>"),
                    ]
                }, id: "roles")
        }
        return document(title: "Services", body: body, viewer: viewer, current: "/console/services")
    }

    static func identity(_ viewer: ConsoleViewer, policy: Policy) -> HTML {
        var body: HTML = "<h1>Identity providers</h1>"
        if policy.trusts.isEmpty {
            body += "<p>No identity provider is trusted (the policy has no <code>trust:</code>).</p>"
        } else {
            body += table(
                ["Provider", "Issuer", "Audiences", "Keys", "Max age", "People log in"],
                policy.trusts.map { trust -> [HTML] in
                    let keys: String
                    switch trust.keys {
                    case .url(let url): keys = "JWKS \(url.absoluteString)"
                    case .file(let path): keys = "file \(path)"
                    case .discovery: keys = "discovery"
                    }
                    return [
                        "<strong>\(trust.name)</strong>", code(trust.issuer),
                        "\(trust.acceptedAudiences.joined(separator: ", "))", "\(keys)",
                        "\(trust.maxAge.map(DurationText.format) ?? "—")",
                        trust.clientID.map { "yes, client \(code($0))" } ?? "no (workloads only)",
                    ]
                }, id: "trusts")
        }
        let workloads = policy.services.filter { $0.identity != nil }
        if !workloads.isEmpty {
            body += "<h2>Workloads (services by claims)</h2>"
            body += table(
                ["Service", "Role", "Provider", "Claims"],
                workloads.map { service -> [HTML] in
                    let claims = (service.identity?.claims ?? []).map { rule -> HTML in
                        "\(code(rule.claim)) = \(code(rule.pattern))"
                    }.joined(separator: "<br>")
                    return ["\(service.name)", "\(service.role)", "\(service.identity?.trust ?? "")", claims]
                }, id: "workloads")
        }
        if !policy.people.isEmpty || !policy.groups.isEmpty {
            body += "<h2>People and groups</h2>"
            let people = policy.people.map { person -> [HTML] in
                ["\(person.name)", "\(person.role)", "\(person.trust)"]
            }
            let groups = policy.groups.map { group -> [HTML] in
                [
                    "group <strong>\(group.name)</strong> <small>(claim \(group.claim))</small>", "\(group.role)",
                    "\(group.trust)",
                ]
            }
            body += table(["Who", "Role", "Provider"], people + groups, id: "people")
        }
        let members = ConsoleRole.allCases.sorted(by: >).compactMap { role -> [HTML]? in
            guard let list = policy.console.members[role], !list.isEmpty else { return nil }
            return ["\(role.rawValue)", "\(list.map(\.description).joined(separator: ", "))"]
        }
        body += "<h2>Console roles</h2>"
        body +=
            members.isEmpty
            ? "<p>Only admin tokens see the console's pages (the policy has no <code>console:</code>).</p>"
            : table(["Console role", "Who"], members, id: "console-roles")
        return document(title: "Identity providers", body: body, viewer: viewer, current: "/console/identity")
    }
}
