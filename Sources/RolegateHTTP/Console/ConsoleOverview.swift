import Foundation
import Hummingbird
import RolegateCore
import RolegateHTTPContract
import RolegateStore

/// `/console`: each database's drift (the last check and when, and a button that plans without
/// applying), the instances and their health, counts of live tokens, sessions and refusals, and
/// sessions and statements per minute drawn by the server as SVG.
extension HTTPAPI {
    func addConsoleOverviewRoutes(to router: Router<APIContext>) {
        let api = self
        router.post("/console/plan") { request, _ in
            await api.consoleAction(request, needs: .admin) { viewer, _ in await api.planPage(viewer) }
        }
    }

    func overviewPage(_ viewer: ConsoleViewer) async -> Response {
        let now = Date()
        var query = AuditQuery()
        query.kinds = [.policy]
        query.actions = ["drift", "in_sync", "applied"]
        query.limit = 500
        let checks = (try? await store.auditEvents(query)) ?? []
        let lastCheck = Dictionary(
            checks.compactMap { e in e.database.map { ($0, e) } }, uniquingKeysWith: { a, _ in a })
        let readiness = await readiness()
        let instances = (try? await store.instances()) ?? []
        let liveTokens = ((try? await store.tokens(service: nil)) ?? []).filter { $0.isUsable(at: now) }.count
        let sessions = await sessionList(viewer)?.sessions
        // Counted from the audit blocks' summaries (only a block that straddles the cut-off or
        // midnight is read in full), so the figure is exact however many there were; "?" when
        // the store cannot answer.
        let refused = (try? await store.auditActivity(kinds: [.auth], since: now - 86_400, bucket: 86_400))
            .map { $0.filter { ["refused", "throttled"].contains($0.action) }.reduce(0) { $0 + $1.count } }
        let hours = 3
        let activity =
            (try? await store.auditActivity(
                kinds: [.session, .statement], since: now - TimeInterval(hours * 3600), bucket: 60)) ?? []
        return Self.page(
            ConsolePage.overview(
                viewer, databases: policy.databases.map(\.name), lastCheck: lastCheck, readiness: readiness,
                instances: instances, liveTokens: liveTokens, sessions: sessions?.count, refused: refused,
                activity: activity, hours: hours, now: now))
    }

    /// Runs the admin API's plan (never apply) and records each database's result, so the
    /// overview's drift status is this check's.
    func planPage(_ viewer: ConsoleViewer) async -> Response {
        let output = try? await asAdmin(viewer) { try await $0.plan(.init()) }
        guard case .ok(let ok)? = output, case .json(let plan) = ok.body else {
            return Self.page(ConsolePage.message("The plan could not be made."), status: .internalServerError)
        }
        for database in plan.databases where database.error == nil {
            audit?.record(
                AuditEvent(
                    kind: .policy, action: database.inSync == true ? "in_sync" : "drift", database: database.name,
                    sql: database.inSync == true ? nil : (database.statements ?? []).joined(separator: "\n"),
                    detail: ["by": viewer.actor, "policy": policy.sourcePath]))
        }
        return Self.page(ConsolePage.plan(viewer, plan: plan))
    }
}

extension ConsolePage {
    static func overview(
        _ viewer: ConsoleViewer, databases: [String], lastCheck: [String: AuditEvent],
        readiness: Components.Schemas.Readiness, instances: [GatewayInstance], liveTokens: Int, sessions: Int?,
        refused: Int?, activity: [AuditActivity], hours: Int, now: Date
    ) -> HTML {
        var body: HTML = "<h1>Overview</h1>"
        body += """
            <ul class="counts">
            <li><a href="/console/tokens"><strong>\(liveTokens)</strong> live tokens</a></li>
            <li><a href="/console/sessions"><strong>\(sessions.map(String.init) ?? "?")</strong> live sessions</a></li>
            <li><a href="/console/audit?kind=auth&amp;outcome=refused"><strong>\(refused.map(String.init) ?? "?")</strong> refusals in 24 h</a></li>
            </ul>
            """
        body += "<h2>Activity, last \(hours) hours</h2>"
        body += ActivityChart.svg(activity, from: now - TimeInterval(hours * 3600), to: now)
        body += "<h2>Databases</h2>"
        let probes = Dictionary(readiness.checks.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        body += table(
            ["Database", "Reachable", "Drift", "Checked"],
            databases.map { name -> [HTML] in
                let probe = probes["database:\(name)"]
                let reachable: HTML =
                    probe?.ok == true
                    ? "<span class=\"ok\">yes</span>" : "<span class=\"bad\">no</span> \(probe?.detail ?? "")"
                let check = lastCheck[name]
                let drift: HTML
                switch check?.action {
                case "drift": drift = "<span class=\"bad\">drift</span>"
                case "in_sync", "applied": drift = "<span class=\"ok\">in sync</span>"
                default: drift = "<span class=\"muted\">never checked</span>"
                }
                let checked: HTML =
                    check.map { e in
                        "\(time(e.at)) <small>(\(ago(now.timeIntervalSince(e.at))) ago, \(e.detail["by"] ?? ""))</small>"
                    } ?? "—"
                return ["\(name)", reachable, drift, checked]
            }, id: "databases")
        if viewer.may(.admin) {
            body += """
                <form method="post" action="/console/plan" class="inline-form">
                  \(csrfField(viewer))
                  <button type="submit">Run a plan</button>
                  <span class="hint">Shows the SQL <code>apply</code> would run. It never applies.</span>
                </form>
                """
        }
        body += "<h2>Instances</h2>"
        let checks = readiness.checks.filter { !$0.name.hasPrefix("database:") }.map { check -> HTML in
            let state: HTML = check.ok ? "<span class=\"ok\">ok</span>" : "<span class=\"bad\">failing</span>"
            let detail: HTML = check.detail.map { " <small>\($0)</small>" } ?? ""
            return "\(check.name): \(state)\(detail)"
        }.joined(separator: "<br>")
        if instances.isEmpty {
            body += "<p>One instance (no peers registered). This instance: \(checks)</p>"
        } else {
            body += table(
                ["Instance", "Wire", "HTTP", "Started", "Last seen"],
                instances.map { instance -> [HTML] in
                    let fresh: HTML = now.timeIntervalSince(instance.seenAt) < 30 ? "ok" : "bad"
                    return [
                        "\(instance.id)", "\(instance.wireAddress)", "\(instance.httpAddress ?? "—")",
                        time(instance.startedAt),
                        "<span class=\"\(fresh)\">\(ago(now.timeIntervalSince(instance.seenAt))) ago</span>",
                    ]
                }, id: "instances")
            body += "<p><small>This instance's checks:</small><br>\(checks)</p>"
        }
        return document(title: "Overview", body: body, viewer: viewer, current: "/console")
    }

    static func plan(_ viewer: ConsoleViewer, plan: Components.Schemas.Plan) -> HTML {
        var body: HTML = "<h1>Plan</h1><p>\(plan.inSync ? "Every database matches the policy." : "Drift found.")"
        body += " Nothing was applied; <code>rolegate apply</code> would run the SQL below.</p>"
        for database in plan.databases {
            body += "<h2>\(database.name)</h2>"
            if let error = database.error {
                body += "<p class=\"error\">Could not inspect: \(error)</p>"
            } else if database.inSync == true {
                body += "<p class=\"ok\">In sync.</p>"
            } else {
                body += "<pre class=\"sql\">\((database.statements ?? []).joined(separator: "\n"))</pre>"
            }
        }
        body += "<p><a href=\"/console\">Back to the overview</a></p>"
        return document(title: "Plan", body: body, viewer: viewer, current: "/console")
    }
}

/// Sessions started and statements run per minute, as an SVG the server draws: bars for
/// statements, a line for sessions, each scaled to its own maximum, with a text summary for
/// screen readers. No script, no external asset.
enum ActivityChart {
    /// `HH:mm` in UTC, for the time axis.
    static func clock(_ date: Date) -> String {
        String(date.rfc3339.dropFirst(11).prefix(5))
    }

    static func svg(_ activity: [AuditActivity], from: Date, to: Date) -> HTML {
        let width = 720.0
        let height = 160.0
        let minutes = max(1, Int(to.timeIntervalSince(from) / 60))
        var statements = [Int](repeating: 0, count: minutes + 1)
        var sessions = [Int](repeating: 0, count: minutes + 1)
        for item in activity {
            let index = Int(item.start.timeIntervalSince(from) / 60)
            guard index >= 0, index <= minutes else { continue }
            if item.kind == .statement { statements[index] += item.count }
            if item.kind == .session, item.action == "start" { sessions[index] += item.count }
        }
        let maxStatements = max(1, statements.max() ?? 1)
        let maxSessions = max(1, sessions.max() ?? 1)
        let step = width / Double(minutes + 1)
        var bars: HTML = ""
        for (index, count) in statements.enumerated() where count > 0 {
            let h = Double(count) / Double(maxStatements) * (height - 20)
            // Numbers this function formatted: markup of its own.
            bars += HTML(
                trusted: String(
                    format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", Double(index) * step,
                    height - h, max(step - 0.5, 0.5), h))
        }
        let points = sessions.enumerated().map { index, count in
            String(
                format: "%.1f,%.1f", Double(index) * step + step / 2,
                height - Double(count) / Double(maxSessions) * (height - 20))
        }.joined(separator: " ")
        let totalStatements = statements.reduce(0, +)
        let totalSessions = sessions.reduce(0, +)
        if totalStatements == 0, totalSessions == 0 {
            return
                "<p class=\"muted\" id=\"activity\">No session started and no statement ran since \(from.rfc3339).</p>"
        }
        let summary =
            "\(totalStatements) statements and \(totalSessions) sessions started from \(from.rfc3339) to \(to.rfc3339); busiest minute \(maxStatements) statements, \(maxSessions) sessions"
        return """
            <figure class="chart" id="activity">
            <svg viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-labelledby="chart-title" preserveAspectRatio="none">
            <title id="chart-title">\(summary)</title>
            <g class="statements">\(bars)</g>
            <polyline class="sessions" points="\(points)"/>
            </svg>
            <div class="axis"><span>\(clock(from))</span><span>\(clock(to)) UTC</span></div>
            <figcaption><span class="key statements"></span> statements per minute (peak \(maxStatements)) \
            <span class="key sessions"></span> sessions started per minute (peak \(maxSessions)) · \
            \(totalStatements) statements, \(totalSessions) sessions in all</figcaption>
            </figure>
            """
    }
}
