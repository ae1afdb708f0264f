import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import RolegateCore
import RolegateStore

/// `/console/audit`: the log filtered by service, token, session, kind, outcome and time; one
/// session's statements in order with durations and SQLSTATEs; "verify the chain" (the walk
/// `rolegate audit verify` does); the current filter exported as CSV or JSON lines (the schema
/// of `rolegate audit --format json`).
extension HTTPAPI {
    /// How many events one export holds at most.
    static let exportLimit = 50_000

    func addConsoleAuditRoutes(to router: Router<APIContext>) {
        let api = self
        router.get("/console/audit") { request, _ in
            await api.consolePage(request, needs: .viewer) { viewer in await api.auditPage(viewer, request) }
        }
        router.get("/console/audit/export") { request, _ in
            await api.consolePage(request, needs: .viewer) { _ in await api.auditExport(request) }
        }
        router.post("/console/audit/verify") { request, _ in
            await api.consoleAction(request, needs: .viewer) { viewer, _ in
                let reports = try? await api.store.verifyAuditChains()
                return Self.page(ConsolePage.verified(viewer, reports: reports))
            }
        }
    }

    /// The page's filter as a store query, or what is wrong with it.
    static func auditFilter(_ values: [String: String]) -> Result<(AuditQuery, ConsoleAuditFilter), Problem> {
        var filter = ConsoleAuditFilter()
        func value(_ key: String) -> String? { values[key].flatMap { $0.isEmpty ? nil : $0 } }
        filter.service = value("service")
        filter.token = value("token")
        filter.session = value("session")
        filter.kind = value("kind")
        filter.outcome = value("outcome")
        filter.since = value("since")
        filter.until = value("until")
        var query = AuditQuery()
        query.service = filter.service
        query.tokenID = filter.token
        query.sessionID = filter.session
        if let kind = filter.kind {
            guard let known = AuditEvent.Kind(rawValue: kind) else {
                return .failure(.badRequest("unknown kind '\(kind)'"))
            }
            query.kinds = [known]
        }
        if let outcome = filter.outcome {
            guard let actions = ConsoleAuditFilter.outcomes[outcome] else {
                return .failure(.badRequest("unknown outcome '\(outcome)'"))
            }
            query.actions = actions
        }
        do {
            query.since = try ContractFormats.pointInTime(filter.since, "since")
            query.until = try ContractFormats.pointInTime(filter.until, "until")
        } catch {
            return .failure(error)
        }
        // One session's events read in the order they happened.
        query.order = filter.session != nil ? .oldestFirst : .newestFirst
        return .success((query, filter))
    }

    func auditPage(_ viewer: ConsoleViewer, _ request: Request) async -> Response {
        switch Self.auditFilter(Self.query(request)) {
        case .failure(let problem):
            return Self.page(
                ConsolePage.audit(viewer, events: [], filter: ConsoleAuditFilter(), problem: problem.message),
                status: .badRequest)
        case .success(let (filtered, filter)):
            var query = filtered
            query.limit = 200
            do {
                let events = try await store.auditEvents(query)
                return Self.page(ConsolePage.audit(viewer, events: events, filter: filter, problem: nil))
            } catch {
                return Self.page(
                    ConsolePage.audit(viewer, events: [], filter: filter, problem: "the store: \(error)"),
                    status: .internalServerError)
            }
        }
    }

    func auditExport(_ request: Request) async -> Response {
        let values = Self.query(request)
        let jsonLines = values["format"] == "jsonl"
        guard case .success(var (query, _)) = Self.auditFilter(values) else {
            return Self.page(ConsolePage.message("That filter is not valid."), status: .badRequest)
        }
        // Oldest first, page by page, up to the export's limit.
        query.order = .oldestFirst
        query.limit = 5000
        var events: [AuditEvent] = []
        while events.count < Self.exportLimit {
            guard let page = try? await store.auditEvents(query) else {
                return Self.page(ConsolePage.message("The store could not be read."), status: .internalServerError)
            }
            events += page
            guard page.count == query.limit, let last = page.last?.id else { break }
            query.afterID = last
        }
        events = Array(events.prefix(Self.exportLimit))
        let text =
            jsonLines
            ? events.map(AuditExport.jsonLine).joined(separator: "\n") + (events.isEmpty ? "" : "\n")
            : AuditExport.csv(events)
        let stamp = Int(Date().timeIntervalSince1970)
        var response = Response(
            status: .ok,
            headers: [
                .contentType: jsonLines ? "application/jsonl; charset=utf-8" : "text/csv; charset=utf-8",
                .contentDisposition:
                    "attachment; filename=\"rolegate-audit-\(stamp).\(jsonLines ? "jsonl" : "csv")\"",
            ], body: .init(byteBuffer: ByteBuffer(string: text)))
        Self.secure(&response)
        return response
    }
}

/// The audit page's filter as the person typed it (shown back in the form and kept in links).
struct ConsoleAuditFilter: Sendable {
    var service: String?
    var token: String?
    var session: String?
    var kind: String?
    var outcome: String?
    var since: String?
    var until: String?

    /// The outcomes the page offers, and the actions each stands for.
    static let outcomes: [String: [String]] = [
        "ok": ["ok", "allowed", "start", "end", "issued", "rotated", "applied", "in_sync"],
        "error": ["error", "skipped", "interrupted"],
        "refused": ["refused", "throttled"],
    ]

    /// The filter as a query string (for the export links and the session links).
    var queryString: String {
        let pairs: [(String, String?)] = [
            ("service", service), ("token", token), ("session", session), ("kind", kind), ("outcome", outcome),
            ("since", since), ("until", until),
        ]
        return pairs.compactMap { name, value in
            value.map { "\(name)=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }
        }.joined(separator: "&")
    }
}

/// The export formats: JSON lines in `rolegate audit --format json`'s schema, and CSV.
enum AuditExport {
    static func jsonLine(_ event: AuditEvent) -> String {
        let data =
            (try? JSONSerialization.data(withJSONObject: event.jsonObject, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static let columns = [
        "id", "instance", "sequence", "at", "kind", "action", "service", "token_id", "role", "database",
        "session_id", "client", "sql_state", "rows", "duration_ms", "sql", "detail", "hash",
    ]

    static func csv(_ events: [AuditEvent]) -> String {
        var out = columns.joined(separator: ",") + "\r\n"
        for e in events {
            let detail =
                (try? JSONSerialization.data(withJSONObject: e.detail, options: [.sortedKeys]))
                .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            let fields: [String?] = [
                e.id.map(String.init), e.instance, String(e.sequence), e.at.rfc3339Milliseconds, e.kind.rawValue,
                e.action, e.service, e.tokenID, e.role, e.database, e.sessionID, e.client, e.sqlState,
                e.rows.map(String.init), e.durationMicros.map { String(format: "%.3f", Double($0) / 1000) }, e.sql,
                detail, e.hash,
            ]
            out += fields.map { field($0 ?? "") }.joined(separator: ",") + "\r\n"
        }
        return out
    }

    /// RFC 4180 quoting; a cell a spreadsheet would run as a formula (`=`, `+`, `@`, a tab or
    /// carriage return first) is prefixed with `'` so opening the export runs nothing.
    static func field(_ text: String) -> String {
        var text = text
        if let first = text.first, "=+@\t\r".contains(first) { text = "'" + text }
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

extension ConsolePage {
    static func audit(
        _ viewer: ConsoleViewer, events: [AuditEvent], filter: ConsoleAuditFilter, problem: String?
    ) -> HTML {
        var body: HTML = "<h1>Audit log</h1>"
        if let problem { body += alert(problem) }
        let kinds = [("", "any kind")] + AuditEvent.Kind.allCases.map { ($0.rawValue, $0.rawValue) }
        let outcomes = [("", "any outcome"), ("ok", "ok"), ("error", "error"), ("refused", "refused")]
        body += """
            <form method="get" action="/console/audit" class="filters" aria-label="Filter the audit log">
            \(input("service", label: "Service", value: filter.service, size: 12))
            \(input("token", label: "Token", value: filter.token, size: 12))
            \(input("session", label: "Session", value: filter.session, size: 12))
            \(select("kind", label: "Kind", options: kinds, selected: filter.kind))
            \(select("outcome", label: "Outcome", options: outcomes, selected: filter.outcome))
            \(input("since", label: "Since", value: filter.since, placeholder: "1h or 2026-12-01", size: 10))
            \(input("until", label: "Until", value: filter.until, placeholder: "RFC 3339", size: 10))
            <button type="submit">Filter</button>
            </form>
            """
        let query = filter.queryString
        let separator = query.isEmpty ? "" : "&"
        body += """
            <p class="actions">
            <a class="button" href="/console/audit/export?format=csv\(separator)\(query)">Export CSV</a>
            <a class="button" href="/console/audit/export?format=jsonl\(separator)\(query)">Export JSON lines</a>
            </p>
            <form method="post" action="/console/audit/verify" class="inline-form">
            \(csrfField(viewer))
            <button type="submit">Verify the chain</button>
            <span class="hint">Walks every instance's hash chain and names the first altered, missing or reordered event.</span>
            </form>
            """
        if filter.session != nil {
            body += "<h2>Session \(filter.session ?? ""), in order</h2>"
        }
        let rows = events.map { e -> [HTML] in
            let details = e.detail.keys.sorted().map { "\($0)=\(e.detail[$0] ?? "")" }.joined(separator: " ")
            let session: HTML =
                e.sessionID.map { id in
                    let token = e.tokenID.map { "&token=\($0)" } ?? ""
                    return "<a href=\"/console/audit?session=\(id)\(token)\">\(code(id))</a>"
                } ?? "—"
            let outcomeClass =
                ["error", "refused", "throttled", "drift", "revoked", "interrupted"].contains(e.action) ? "bad" : "ok"
            return [
                "#\(e.sequence) <small>\(e.instance)</small>", time(e.at),
                "\(e.kind.rawValue) <span class=\"\(outcomeClass)\">\(e.action)</span>", "\(e.service ?? "—")",
                e.tokenID.map(code) ?? "—", session, e.sql.map { code(String($0.prefix(400))) } ?? "—",
                "\(e.sqlState ?? "—")",
                "\(e.durationMicros.map { String(format: "%.3f ms", Double($0) / 1000) } ?? "—")",
                "<small>\(details)</small>",
            ]
        }
        body +=
            events.isEmpty
            ? "<p>No event matches.</p>"
            : table(
                ["Event", "At", "What", "Service", "Token", "Session", "SQL", "SQLSTATE", "Took", "Detail"], rows,
                id: "events")
        if events.count == 200 { body += "<p class=\"hint\">The first 200; narrow the filter or export.</p>" }
        return document(title: "Audit log", body: body, viewer: viewer, current: "/console/audit")
    }

    static func verified(_ viewer: ConsoleViewer, reports: [AuditChainReport]?) -> HTML {
        var body: HTML = "<h1>Audit chain verification</h1>"
        guard let reports else {
            body += alert("The store could not be read.")
            return document(title: "Verify", body: body, viewer: viewer, current: "/console/audit")
        }
        let broken = reports.filter { $0.problem != nil }
        body +=
            broken.isEmpty
            ? "<p class=\"notice\" role=\"status\">Every chain is intact (\(reports.count) chains).</p>"
            : "<p class=\"error\" role=\"alert\">\(broken.count) of \(reports.count) chains are broken.</p>"
        body += table(
            ["Chain", "Events checked", "Last", "Result"],
            reports.map { report -> [HTML] in
                [
                    "\(report.instance)", "\(report.events)", "#\(report.lastSequence)",
                    report.problem.map { "<span class=\"bad\">BROKEN</span> \($0.description)" }
                        ?? "<span class=\"ok\">intact</span>",
                ]
            }, id: "chains")
        body += "<p><a href=\"/console/audit\">Back to the audit log</a></p>"
        return document(title: "Verify", body: body, viewer: viewer, current: "/console/audit")
    }
}
