import Foundation
import Hummingbird
import RolegateCore
import RolegateHTTPContract

/// `/console/sessions`: every instance's live sessions (the admin API's listing, which asks each
/// peer), with the statement each runs and for how long; an operator ends one, or every session
/// of a token or a service. The page refreshes itself every few seconds.
extension HTTPAPI {
    func addConsoleSessionRoutes(to router: Router<APIContext>) {
        let api = self
        router.get("/console/sessions") { request, _ in
            await api.consolePage(request, needs: .viewer) { viewer in await api.sessionsPage(viewer, request) }
        }
        router.post("/console/sessions/end") { request, _ in
            await api.consoleAction(request, needs: .operator) { viewer, form in
                await api.endSessionsFromConsole(viewer, form)
            }
        }
        router.post("/console/sessions/:id/end") { request, context in
            await api.consoleAction(request, needs: .operator) { viewer, _ in
                let id = context.parameters.get("id") ?? ""
                let ended = await api.endSessions([id], viewer)
                return Self.redirect(
                    "/console/sessions?done="
                        + Self.percentEncoded(ended == 1 ? "ended session \(id)" : "session \(id) was already gone"))
            }
        }
    }

    func sessionsPage(_ viewer: ConsoleViewer, _ request: Request) async -> Response {
        let query = Self.query(request)
        let service = query["service"].flatMap { $0.isEmpty ? nil : $0 }
        let token = query["token"].flatMap { $0.isEmpty ? nil : $0 }
        let list = await sessionList(viewer)
        let sessions = (list?.sessions ?? []).filter {
            (service == nil || $0.service == service) && (token == nil || $0.tokenId == token)
        }
        return Self.page(
            ConsolePage.sessions(
                viewer, sessions: sessions, instances: list?.instances ?? [], service: service, token: token,
                notice: query["done"], failed: list == nil))
    }

    func endSessionsFromConsole(_ viewer: ConsoleViewer, _ form: [String: String]) async -> Response {
        let service = form["service"].flatMap { $0.isEmpty ? nil : $0 }
        let token = form["token"].flatMap { $0.isEmpty ? nil : $0 }
        guard service != nil || token != nil else {
            return Self.page(
                ConsolePage.message("Say which token's or service's sessions to end."), status: .badRequest)
        }
        let ids = await allSessions(viewer).filter {
            (service == nil || $0.service == service) && (token == nil || $0.tokenId == token)
        }.map(\.id)
        let ended = await endSessions(ids, viewer)
        let whose = token.map { "token \($0)" } ?? "service \(service ?? "")"
        return Self.redirect("/console/sessions?done=" + Self.percentEncoded("ended \(ended) sessions of \(whose)"))
    }

    /// Ends sessions through the admin API's handler (on whichever instance holds each); how many.
    func endSessions(_ ids: [String], _ viewer: ConsoleViewer) async -> Int {
        var ended = 0
        for id in ids {
            if (try? await asAdmin(viewer, { try await $0.endSession(.init(path: .init(id: id), query: .init())) }))
                != nil
            {
                ended += 1
            }
        }
        return ended
    }
}

extension ConsolePage {
    static func sessions(
        _ viewer: ConsoleViewer, sessions: [Components.Schemas.Session],
        instances: [Components.Schemas.InstanceAnswer], service: String?, token: String?, notice: String?,
        failed: Bool
    ) -> HTML {
        var body: HTML = "<h1>Live sessions</h1>" + self.notice(notice)
        let now = Date()
        if failed { body += alert("The sessions could not be listed.") }
        body += """
            <form method="get" action="/console/sessions" class="filters" aria-label="Filter sessions">
            \(input("service", label: "Service", value: service))
            \(input("token", label: "Token", value: token))
            <button type="submit">Filter</button>
            <span class="hint" data-refresh="5">This page refreshes every 5 s.</span>
            </form>
            """
        let unanswered = instances.filter { !$0.ok }
        if !unanswered.isEmpty {
            let names = unanswered.map { "\($0.id) (\($0.detail ?? ""))" }.joined(separator: ", ")
            body += alert("Not answering: \(names). Their sessions are missing below.")
        }
        if viewer.may(.operator), token != nil || service != nil, !sessions.isEmpty {
            let whose = token.map { "token \($0)" } ?? "service \(service ?? "")"
            body += """
                <form method="post" action="/console/sessions/end" class="inline-form">
                \(csrfField(viewer))
                <input type="hidden" name="service" value="\(service ?? "")">
                <input type="hidden" name="token" value="\(token ?? "")">
                <button type="submit" class="danger">End all \(sessions.count) sessions of \(whose)</button>
                </form>
                """
        }
        let rows = sessions.map { s -> [HTML] in
            var statement: HTML = "—"
            if let sql = s.statement {
                let running = s.statementRunning == true
                let duration = s.statementMs.map { String(format: "%.1f ms", $0) } ?? ""
                statement =
                    "\(code(String(sql.prefix(300))))<br><small>\(running ? "running for \(duration)" : "took \(duration)")</small>"
            }
            var actions: HTML = ""
            if viewer.may(.operator) {
                actions = """
                    <form method="post" action="/console/sessions/\(s.id)/end" class="inline">\(csrfField(viewer))\
                    <button type="submit" class="danger">End</button></form>
                    """
            }
            let tokenLink: HTML = "<a href=\"/console/sessions?token=\(s.tokenId)\">\(code(s.tokenId))</a>"
            return [
                "<a href=\"/console/audit?token=\(s.tokenId)&amp;session=\(s.id)\">\(code(s.id))</a>",
                "\(s.instance ?? "—")", "<a href=\"/console/sessions?service=\(s.service)\">\(s.service)</a>",
                "\(s.role)", "\(s.subject ?? "—")", tokenLink, "\(s.database)", "\(s.client ?? "—")",
                "\(time(s.startedAt))<br><small>\(ago(now.timeIntervalSince(s.startedAt)))</small>", statement,
                actions,
            ]
        }
        body +=
            sessions.isEmpty
            ? "<p>No live session\(service != nil || token != nil ? " matches" : "").</p>"
            : table(
                [
                    "Session", "Instance", "Service", "Role", "Subject", "Token", "Database", "Client", "Since",
                    "Statement", "",
                ], rows, id: "sessions")
        return document(title: "Sessions", body: body, viewer: viewer, current: "/console/sessions")
    }
}
