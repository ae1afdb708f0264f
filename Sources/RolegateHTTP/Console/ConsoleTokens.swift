import Foundation
import HTTPTypes
import Hummingbird
import RolegateCore
import RolegateHTTPContract

/// `/console/tokens`: filter by service, subject and state; issue and rotate (admin), revoke with
/// a reason after a confirmation that lists the sessions it ends (operator). A new token is
/// shown once: the POST seals it into a cookie that lives two minutes, the page after the
/// redirect opens it and clears the cookie, so a reload shows it no more (and issues nothing).
extension HTTPAPI {
    static let issuedCookie = "rolegate_issued"

    func addConsoleTokenRoutes(to router: Router<APIContext>) {
        let api = self
        router.get("/console/tokens") { request, _ in
            await api.consolePage(request, needs: .viewer) { viewer in await api.tokensPage(viewer, request) }
        }
        router.post("/console/tokens") { request, _ in
            await api.consoleAction(request, needs: .admin) { viewer, form in
                await api.issueFromConsole(viewer, form, rotate: false)
            }
        }
        router.post("/console/tokens/rotate") { request, _ in
            await api.consoleAction(request, needs: .admin) { viewer, form in
                await api.issueFromConsole(viewer, form, rotate: true)
            }
        }
        router.get("/console/tokens/issued") { request, _ in
            await api.consolePage(request, needs: .admin) { viewer in api.issuedPage(viewer, request) }
        }
        router.get("/console/tokens/:id/revoke") { request, context in
            await api.consolePage(request, needs: .operator) { viewer in
                await api.revokeConfirmation(viewer, id: context.parameters.get("id") ?? "")
            }
        }
        router.post("/console/tokens/:id/revoke") { request, context in
            await api.consoleAction(request, needs: .operator) { viewer, form in
                await api.revokeFromConsole(viewer, id: context.parameters.get("id") ?? "", form: form)
            }
        }
    }

    func tokensPage(_ viewer: ConsoleViewer, _ request: Request) async -> Response {
        let query = Self.query(request)
        let service = query["service"].flatMap { $0.isEmpty ? nil : $0 }
        let subject = query["subject"].flatMap { $0.isEmpty ? nil : $0 }
        let state = query["state"].flatMap(TokenState.init(rawValue:))
        let now = Date()
        let records = ((try? await store.tokens(service: service)) ?? []).filter { record in
            (subject == nil || record.subject?.lowercased() == subject?.lowercased())
                && (state == nil || record.state(at: now) == state)
        }.sorted { $0.issuedAt > $1.issuedAt }
        return Self.page(
            ConsolePage.tokens(
                viewer, records: Array(records.prefix(500)), total: records.count,
                services: policy.services.map(\.name), filter: (service, subject, state), now: now,
                notice: query["done"], problem: query["problem"]))
    }

    func issueFromConsole(_ viewer: ConsoleViewer, _ form: [String: String], rotate: Bool) async -> Response {
        func value(_ key: String) -> String? { form[key].flatMap { $0.isEmpty ? nil : $0 } }
        let service = value("service") ?? ""
        do {
            let issued = try await asAdmin(viewer) { handlers -> Components.Schemas.IssuedToken in
                let output =
                    rotate
                    ? try await handlers.rotateService(
                        .init(
                            path: .init(service: service),
                            body: .json(.init(grace: value("grace"), ttl: value("ttl"), note: value("note"))))
                    )
                    .created.body.json
                    : try await handlers.issueToken(
                        .init(body: .json(.init(service: service, ttl: value("ttl"), note: value("note"))))
                    ).created.body.json
                return output
            }
            var response = Self.redirect("/console/tokens/issued")
            let sealed = SealedText.seal(
                issued.value2.token, key: masterKey.consoleSealKey, expires: Date() + 120)
            response.headers[.setCookie] = issuedCookie(sealed, maxAge: 120)
            return response
        } catch {
            let problem = ContractProblems.problem(for: error)
            return Self.redirect(
                "/console/tokens?problem=" + Self.percentEncoded("\(rotate ? "rotate" : "issue"): \(problem.message)"))
        }
    }

    func issuedPage(_ viewer: ConsoleViewer, _ request: Request) -> Response {
        let token = Self.cookie(named: Self.issuedCookie, in: request).flatMap {
            SealedText.open($0, key: masterKey.consoleSealKey)
        }
        var response = Self.page(ConsolePage.issued(viewer, token: token))
        // Shown once: the cookie goes with this answer, whatever it held.
        response.headers[.setCookie] = issuedCookie("", maxAge: 0)
        return response
    }

    func issuedCookie(_ value: String, maxAge: Int) -> String {
        setCookie(Self.issuedCookie, value, path: "/console/tokens/issued", maxAge: maxAge)
    }

    func revokeConfirmation(_ viewer: ConsoleViewer, id: String) async -> Response {
        guard let record = try? await store.token(id: id) else {
            return Self.page(ConsolePage.message("No token \(id)."), status: .notFound)
        }
        let sessions = await allSessions(viewer).filter { $0.tokenId == record.id }
        return Self.page(ConsolePage.revoke(viewer, record: record, sessions: sessions))
    }

    func revokeFromConsole(_ viewer: ConsoleViewer, id: String, form: [String: String]) async -> Response {
        let reason = form["reason"].flatMap { $0.isEmpty ? nil : String($0.prefix(500)) }
        do {
            _ = try await asAdmin(viewer) {
                try await $0.revokeToken(.init(path: .init(id: id), body: .json(.init(reason: reason))))
            }
            return Self.redirect(
                "/console/tokens?done=" + Self.percentEncoded("revoked \(id); its sessions end within a second"))
        } catch {
            let problem = ContractProblems.problem(for: error)
            return Self.redirect("/console/tokens?problem=" + Self.percentEncoded("revoke: \(problem.message)"))
        }
    }

    /// Every instance's live sessions, through the admin API's listing (as the console's person).
    func allSessions(_ viewer: ConsoleViewer) async -> [Components.Schemas.Session] {
        await sessionList(viewer)?.sessions ?? []
    }

    func sessionList(_ viewer: ConsoleViewer) async -> Components.Schemas.SessionList? {
        guard let output = try? await asAdmin(viewer, { try await $0.listSessions(.init(query: .init())) }),
            case .ok(let ok) = output, case .json(let list) = ok.body
        else { return nil }
        return list
    }

    static func percentEncoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }
}

extension ConsolePage {
    static func tokens(
        _ viewer: ConsoleViewer, records: [TokenRecord], total: Int, services: [String],
        filter: (service: String?, subject: String?, state: TokenState?), now: Date, notice: String?,
        problem: String?
    ) -> HTML {
        var body: HTML = "<h1>Tokens</h1>" + self.notice(notice)
        if let problem { body += alert("Not done: \(problem)") }
        let serviceOptions = [("", "any service")] + services.map { ($0, $0) }
        body += """
            <form method="get" action="/console/tokens" class="filters" aria-label="Filter tokens">
            \(select("service", label: "Service", options: serviceOptions, selected: filter.service))
            \(input("subject", label: "Subject", value: filter.subject, placeholder: "alice@example.com"))
            \(select("state", label: "State", options: [("", "any state")] + TokenState.allCases.map { ($0.rawValue, $0.rawValue) }, selected: filter.state?.rawValue))
            <button type="submit">Filter</button>
            </form>
            """
        let rows = records.map { record -> [HTML] in
            let state = record.state(at: now)
            var actions: HTML = ""
            if viewer.may(.operator), state == .live || state == .grace, record.id != viewer.record.id {
                actions = "<a class=\"button danger\" href=\"/console/tokens/\(record.id)/revoke\">Revoke…</a>"
            }
            let reason: HTML = record.revokeReason.map { "<br><small>\($0)</small>" } ?? ""
            return [
                code(record.id), "\(record.service)", "\(record.role)", "\(record.subject ?? "—")",
                "<span class=\"state \(state.rawValue)\">\(state.rawValue)</span>\(reason)",
                time(record.issuedAt), time(record.expiresAt), record.lastUsedAt.map(time) ?? "—",
                "\(record.note ?? "")", actions,
            ]
        }
        body +=
            records.isEmpty
            ? "<p>No token matches.</p>"
            : table(
                ["Token", "Service", "Role", "Subject", "State", "Issued", "Expires", "Last used", "Note", ""], rows,
                id: "tokens")
        if total > records.count {
            body += "<p class=\"hint\">Showing the newest \(records.count) of \(total).</p>"
        }
        if viewer.may(.admin) {
            let options = services.map { ($0, $0) }
            body += """
                <h2>Issue a token</h2>
                <form method="post" action="/console/tokens" class="card" aria-label="Issue a token">
                \(csrfField(viewer))
                \(select("service", label: "Service", options: options, selected: filter.service))
                \(input("ttl", label: "Lifetime", value: nil, placeholder: "the service's token_ttl", size: 10))
                \(input("note", label: "Note", value: nil, placeholder: "what it is for", size: 30))
                <p class="hint">A service has one live token: issuing while one is live is refused (rotate instead).</p>
                <button type="submit">Issue</button>
                </form>
                <h2>Rotate a service's token</h2>
                <form method="post" action="/console/tokens/rotate" class="card" aria-label="Rotate a token">
                \(csrfField(viewer))
                \(select("service", label: "Service", options: options, selected: filter.service))
                \(input("grace", label: "Grace", value: nil, placeholder: "the service's grace", size: 10))
                \(input("ttl", label: "Lifetime", value: nil, placeholder: "the service's token_ttl", size: 10))
                <p class="hint">The old token keeps working for the grace, then ends.</p>
                <button type="submit">Rotate</button>
                </form>
                """
        }
        return document(title: "Tokens", body: body, viewer: viewer, current: "/console/tokens")
    }

    static func issued(_ viewer: ConsoleViewer, token: String?) -> HTML {
        var body: HTML = "<h1>New token</h1>"
        if let token {
            body += """
                <p class="notice" role="status">Copy it now: this page shows it once, and no page or log shows it again.</p>
                <div class="card once">
                <label for="new-token">Token</label>
                <input id="new-token" value="\(token)" readonly autocomplete="off" spellcheck="false">
                <button type="button" data-copy="new-token" hidden>Copy</button>
                <p class="hint">Connect with <code>psql "host=… user=&lt;service&gt; password=&lt;token&gt;"</code>, or send it as <code>Authorization: Bearer</code>.</p>
                </div>
                """
        } else {
            body += """
                <p class="error" role="alert">This token was shown once and is not shown again.</p>
                <p>Lost it? Rotate the service's token (the old one keeps its grace) or revoke it.</p>
                """
        }
        body += "<p><a href=\"/console/tokens\">Back to the tokens</a></p>"
        return document(title: "New token", body: body, viewer: viewer, current: "/console/tokens")
    }

    static func revoke(_ viewer: ConsoleViewer, record: TokenRecord, sessions: [Components.Schemas.Session]) -> HTML {
        var body: HTML = "<h1>Revoke token <code>\(record.id)</code>?</h1>"
        let subject = record.subject.map { ", subject \($0)" } ?? ""
        body +=
            "<p>Service <strong>\(record.service)</strong>, role \(record.role)\(subject), expires \(time(record.expiresAt)).</p>"
        if sessions.isEmpty {
            body += "<p>It has no live session.</p>"
        } else {
            body += "<p><strong>These \(sessions.count) live sessions end at once:</strong></p>"
            body += table(
                ["Session", "Instance", "Database", "Client", "Since", "Statement"],
                sessions.map { s -> [HTML] in
                    [
                        code(s.id), "\(s.instance ?? "—")", "\(s.database)", "\(s.client ?? "—")", time(s.startedAt),
                        code(s.statement ?? "—"),
                    ]
                }, id: "sessions-to-end")
        }
        body += """
            <form method="post" action="/console/tokens/\(record.id)/revoke" class="card" aria-label="Revoke">
            \(csrfField(viewer))
            <label for="reason">Reason (kept with the token and in the audit log)</label>
            <input id="reason" name="reason" maxlength="500" required>
            <button type="submit" class="danger">Revoke the token and end its sessions</button>
            <a href="/console/tokens">Cancel</a>
            </form>
            """
        return document(title: "Revoke", body: body, viewer: viewer, current: "/console/tokens")
    }
}
