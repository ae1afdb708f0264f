import Foundation
import RolegateCore

/// The console's pages, as ``HTML``: a value from outside (names, reasons, comments, SQL, ids)
/// interpolated into them is escaped unless it is markup this code made. Plain HTML forms,
/// labelled, in document order (keyboard-navigable), with one stylesheet that follows the
/// system's light or dark mode and narrows to a phone's width.
enum ConsolePage {
    /// The navigation's pages, with the console role each needs (nil: anyone signed in).
    static let sections: [(path: String, title: String, needs: ConsoleRole?)] = [
        ("/console", "Overview", .viewer), ("/console/services", "Services", .viewer),
        ("/console/tokens", "Tokens", .viewer), ("/console/sessions", "Sessions", .viewer),
        ("/console/audit", "Audit", .viewer), ("/console/access", "Access requests", nil),
        ("/console/identity", "Identity providers", .viewer),
    ]

    static func document(title: String, body: HTML, viewer: ConsoleViewer? = nil, current: String? = nil) -> HTML {
        var nav: HTML = ""
        if let viewer {
            let links = sections.filter { $0.needs.map(viewer.may) ?? true }.map { section -> HTML in
                let here: HTML = section.path == current ? " aria-current=\"page\"" : ""
                return "<a href=\"\(section.path)\"\(here)>\(section.title)</a>"
            }.joined(separator: "\n")
            let role = viewer.role.map { " · \($0.rawValue)" } ?? ""
            nav = """
                <nav aria-label="Console">
                \(links)
                <span class="who">\(viewer.name)\(role)</span>
                <form method="post" action="/console/logout" class="inline">
                  \(csrfField(viewer))
                  <button type="submit">Log out</button>
                </form>
                </nav>
                """
        }
        return """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · Rolegate</title>
            <link rel="stylesheet" href="/console/static/console.css">
            <script src="/console/static/console.js" defer></script>
            </head>
            <body>
            <header><a class="brand" href="/console">Rolegate</a>\(nav)</header>
            <main>
            \(body)
            </main>
            </body>
            </html>
            """
    }

    static func csrfField(_ viewer: ConsoleViewer) -> HTML {
        "<input type=\"hidden\" name=\"csrf\" value=\"\(viewer.csrf)\">"
    }

    /// A notice after an action (`?done=`), announced to screen readers.
    static func notice(_ text: String?) -> HTML {
        guard let text else { return "" }
        return "<p class=\"notice\" role=\"status\">Done: \(text).</p>"
    }

    /// A problem, announced to screen readers.
    static func alert(_ text: String) -> HTML {
        "<p class=\"error\" role=\"alert\">\(text)</p>"
    }

    /// A table; each cell is labelled with its column for the phone layout.
    static func table(_ headers: [String], _ rows: [[HTML]], id: String? = nil) -> HTML {
        let head = headers.map { header -> HTML in "<th scope=\"col\">\(header)</th>" }.joined()
        let body = rows.map { row -> HTML in
            "<tr>\(zip(headers, row).map { header, cell -> HTML in "<td data-label=\"\(header)\">\(cell)</td>" }.joined())</tr>"
        }.joined(separator: "\n")
        let idAttribute: HTML = id.map { " id=\"\($0)\"" } ?? ""
        return "<table\(idAttribute)><thead><tr>\(head)</tr></thead><tbody>\n\(body)\n</tbody></table>"
    }

    /// A labelled select, `selected` the current option.
    static func select(
        _ name: String, label: String, options: [(value: String, text: String)], selected: String?
    ) -> HTML {
        let items = options.map { option -> HTML in
            let mark: HTML = option.value == (selected ?? "") ? " selected" : ""
            return "<option value=\"\(option.value)\"\(mark)>\(option.text)</option>"
        }.joined()
        return "<label>\(label) <select name=\"\(name)\">\(items)</select></label>"
    }

    /// A labelled text input.
    static func input(
        _ name: String, label: String, value: String?, placeholder: String = "", size: Int = 14
    ) -> HTML {
        """
        <label>\(label) <input name="\(name)" value="\(value ?? "")" \
        placeholder="\(placeholder)" size="\(size)"></label>
        """
    }

    static func time(_ date: Date) -> HTML {
        "<time datetime=\"\(date.rfc3339)\">\(date.rfc3339)</time>"
    }

    /// `<code>text</code>`.
    static func code(_ text: String) -> HTML {
        "<code>\(text)</code>"
    }

    /// `3 s`, `4 min`, `2 h 5 min`: how long, for people.
    static func ago(_ seconds: TimeInterval) -> String {
        let s = Int(max(0, seconds))
        if s < 90 { return "\(s) s" }
        if s < 5400 { return "\(s / 60) min" }
        if s < 172_800 { return "\(s / 3600) h \(s % 3600 / 60) min" }
        return "\(s / 86400) d"
    }

    static func login(error: String?, providers: [String]) -> HTML {
        let problem = error.map(alert) ?? ""
        let buttons = providers.map { name -> HTML in
            "<a class=\"button\" href=\"/console/login/oidc/\(name)\">Log in with \(name)</a>"
        }.joined(separator: "\n")
        let sso: HTML =
            providers.isEmpty
            ? ""
            : """
            <div class="card providers">
            \(buttons)
            <p class="hint">Your organisation's login. The console keeps a session of its own, which
            ends with your login's token.</p>
            </div>
            <p class="or">or</p>
            """
        let autofocus: HTML = providers.isEmpty ? " autofocus" : ""
        return document(
            title: "Log in",
            body: """
                <h1>Log in</h1>
                \(problem)
                \(sso)
                <form method="post" action="/console/login" class="card">
                  <label for="token">Your Rolegate token</label>
                  <input id="token" name="token" type="password" autocomplete="off" required\(autofocus)>
                  <p class="hint">From <code>rolegate login</code> (<code>rolegate env</code> shows it) or an admin token.
                  It is checked once; the console then keeps a session that ends with the token.</p>
                  <button type="submit">Log in</button>
                </form>
                """)
    }

    static func message(_ text: String) -> HTML {
        document(title: "Console", body: alert(text) + "<p><a href=\"/console\">Back</a></p>")
    }

    static func access(
        _ viewer: ConsoleViewer, requests: [AccessRequest], decidable: Set<String>, history: Bool, notice: String?
    ) -> HTML {
        let who = viewer.name
        let csrf = viewer.csrf
        var body = self.notice(notice)
        let open: HTML = history ? "" : " aria-current=\"page\""
        let past: HTML = history ? " aria-current=\"page\"" : ""
        body += """
            <p class="subnav"><a href="/console/access"\(open)>Open</a> · \
            <a href="/console/access/history"\(past)>History</a></p>
            """
        if history {
            body += "<h1>History</h1>"
            let done = requests.filter { $0.state.isFinal }
            body += done.isEmpty ? "<p>No finished request yet.</p>" : table(done, decidable: [], csrf: csrf)
        } else {
            let inbox = requests.filter { decidable.contains($0.id) }
            body += "<h1>Inbox</h1>"
            body +=
                inbox.isEmpty
                ? "<p>Nothing waits for your decision.</p>" : table(inbox, decidable: decidable, csrf: csrf)
            let mine = requests.filter { $0.requester.lowercased() == who.lowercased() && !$0.state.isFinal }
            body += "<h2>Your open requests</h2>"
            body += mine.isEmpty ? "<p>None.</p>" : table(mine, decidable: [], csrf: csrf)
            let others = requests.filter {
                !decidable.contains($0.id) && $0.requester.lowercased() != who.lowercased() && !$0.state.isFinal
            }
            if !others.isEmpty {
                body += "<h2>Open requests you can see</h2>" + table(others, decidable: [], csrf: csrf)
            }
        }
        return document(
            title: history ? "History" : "Access requests", body: body, viewer: viewer, current: "/console/access")
    }

    static func table(_ requests: [AccessRequest], decidable: Set<String>, csrf: String) -> HTML {
        var rows: HTML = ""
        for request in requests {
            let approvals = request.decisions.map { decision -> HTML in
                let comment: HTML = decision.comment.map { ": “\($0)”" } ?? ""
                return "\(decision.approver) \(decision.approve ? "approved" : "denied")\(comment)"
            }.joined(separator: "<br>")
            var actions: HTML = ""
            if decidable.contains(request.id) {
                let id = request.id
                actions = """
                    <form method="post" action="/console/access/\(id)/approve" class="decide">
                      <input type="hidden" name="csrf" value="\(csrf)">
                      <label for="comment-\(id)">Comment</label>
                      <input id="comment-\(id)" name="comment" maxlength="500">
                      <button type="submit" name="decision" value="approve">Approve</button>
                      <button type="submit" formaction="/console/access/\(id)/deny" class="deny">Deny</button>
                    </form>
                    """
            }
            let flag: HTML = request.breakGlass ? " <strong class=\"flag\">break-glass</strong>" : ""
            let until: HTML = request.grantedUntil.map { "<br><small>until \($0.rfc3339)</small>" } ?? ""
            rows += """
                <tr id="request-\(request.id)">
                  <td data-label="Request"><code>\(request.id)</code>\(flag)</td>
                  <td data-label="Grant">\(request.access)<br><small>role \(request.role)</small></td>
                  <td data-label="Requester">\(request.requester)</td>
                  <td data-label="Reason">\(request.reason ?? "—")</td>
                  <td data-label="For">\(DurationText.format(request.duration))</td>
                  <td data-label="State"><span class="state \(request.state.rawValue)">\(request.state.rawValue)</span>\(until)</td>
                  <td data-label="Decisions">\(approvals.isEmpty ? "—" : approvals)</td>
                  <td data-label="Asked">\(request.createdAt.rfc3339)</td>
                  <td data-label="Actions">\(actions)</td>
                </tr>
                """
        }
        return """
            <table>
            <thead><tr><th scope="col">Request</th><th scope="col">Grant</th><th scope="col">Requester</th>
            <th scope="col">Reason</th><th scope="col">For</th><th scope="col">State</th><th scope="col">Decisions</th>
            <th scope="col">Asked</th><th scope="col">Actions</th></tr></thead>
            <tbody>
            \(rows)
            </tbody>
            </table>
            """
    }

    static let stylesheet = """
        :root { color-scheme: light dark; --fg: #1b1f24; --bg: #ffffff; --muted: #57606a; --line: #d0d7de;
          --accent: #0b57d0; --ok: #1a7f37; --bad: #cf222e; --card: #f6f8fa; }
        @media (prefers-color-scheme: dark) {
          :root { --fg: #e6edf3; --bg: #0d1117; --muted: #8d96a0; --line: #30363d; --accent: #4493f8;
            --ok: #3fb950; --bad: #f85149; --card: #161b22; }
        }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
        header { display: flex; flex-wrap: wrap; align-items: center; gap: 1rem; padding: .75rem 1.25rem;
          border-bottom: 1px solid var(--line); }
        .brand { font-weight: 700; }
        nav { display: flex; flex-wrap: wrap; align-items: center; gap: 1rem; flex: 1; }
        nav .who { margin-left: auto; color: var(--muted); }
        a { color: var(--accent); }
        a:focus-visible, button:focus-visible, input:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
        main { padding: 1.25rem; max-width: 1280px; }
        h1 { font-size: 1.5rem; margin: .25rem 0 1rem; }
        h2 { font-size: 1.15rem; margin: 1.75rem 0 .75rem; }
        .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1rem;
          max-width: 32rem; display: grid; gap: .5rem; }
        input { font: inherit; padding: .4rem .5rem; border: 1px solid var(--line); border-radius: 6px;
          background: var(--bg); color: var(--fg); }
        button { font: inherit; padding: .35rem .8rem; border-radius: 6px; border: 1px solid var(--accent);
          background: var(--accent); color: #fff; cursor: pointer; }
        button.deny { background: transparent; color: var(--bad); border-color: var(--bad); }
        form.inline { display: inline; }
        nav form.inline button { background: transparent; color: var(--accent); }
        .hint, small { color: var(--muted); }
        .error { color: var(--bad); font-weight: 600; }
        .notice { color: var(--ok); font-weight: 600; }
        .flag { color: var(--bad); text-transform: uppercase; font-size: .8rem; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; vertical-align: top; padding: .5rem; border-bottom: 1px solid var(--line); }
        th { color: var(--muted); font-weight: 600; font-size: .85rem; }
        .state { font-weight: 600; }
        .state.approved, .state.finished { color: var(--ok); }
        .state.denied, .state.revoked, .state.expired { color: var(--bad); }
        form.decide { display: grid; gap: .35rem; min-width: 12rem; }
        .brand { color: var(--fg); text-decoration: none; }
        nav a[aria-current="page"], .subnav a[aria-current="page"] { font-weight: 700; text-decoration: none;
          border-bottom: 2px solid var(--accent); }
        select { font: inherit; padding: .35rem .4rem; border: 1px solid var(--line); border-radius: 6px;
          background: var(--bg); color: var(--fg); }
        select:focus-visible, a.button:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
        form.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin-bottom: 1rem; }
        form.filters label { display: grid; gap: .15rem; color: var(--muted); font-size: .85rem; }
        .card label { color: var(--muted); font-size: .9rem; }
        .card > label { display: grid; gap: .15rem; }
        form.inline-form { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem; margin: .75rem 0; }
        a.button { display: inline-block; padding: .35rem .8rem; border-radius: 6px; border: 1px solid var(--accent);
          text-decoration: none; }
        button.danger, a.button.danger { background: transparent; color: var(--bad); border-color: var(--bad); }
        .ok { color: var(--ok); font-weight: 600; }
        .bad { color: var(--bad); font-weight: 600; }
        .muted { color: var(--muted); }
        .state.live { color: var(--ok); }
        .state.grace { color: #9a6700; }
        ul.counts { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1rem; }
        ul.counts li a { display: block; padding: .75rem 1rem; border: 1px solid var(--line); border-radius: 8px;
          background: var(--card); text-decoration: none; color: var(--fg); min-width: 10rem; }
        ul.counts strong { display: block; font-size: 1.6rem; }
        ul.privileges { margin: 0; padding-left: 1.1rem; }
        pre.sql { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75rem;
          overflow-x: auto; white-space: pre-wrap; }
        code { font-family: ui-monospace, monospace; font-size: .88em; overflow-wrap: anywhere; }
        .once input { font-family: ui-monospace, monospace; width: 100%; }
        figure.chart { margin: 0; max-width: 760px; }
        figure.chart svg { width: 100%; height: 160px; border: 1px solid var(--line); border-radius: 8px;
          background: var(--card); }
        figure.chart .statements rect { fill: var(--accent); opacity: .75; }
        figure.chart polyline.sessions { fill: none; stroke: var(--ok); stroke-width: 2; }
        figcaption { color: var(--muted); font-size: .85rem; margin-top: .35rem; }
        .providers a.button { text-align: center; }
        p.or { color: var(--muted); margin: .75rem 0; }
        .axis { display: flex; justify-content: space-between; color: var(--muted); font-size: .8rem; }
        .key { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; vertical-align: middle; }
        .key.statements { background: var(--accent); }
        .key.sessions { background: var(--ok); }
        table { display: block; overflow-x: auto; }
        @media (max-width: 700px) {
          thead { display: none; }
          table, tbody, tr, td { display: block; width: 100%; }
          tr { border: 1px solid var(--line); border-radius: 8px; margin-bottom: .75rem; padding: .25rem .5rem; }
          td { border: 0; padding: .25rem 0; }
          td::before { content: attr(data-label); display: block; color: var(--muted); font-size: .8rem; }
          table { overflow-x: visible; }
          header { gap: .5rem; }
          nav { flex-basis: 100%; gap: .4rem 1rem; }
          nav .who { margin-left: 0; }
        }
        """

    /// The console's only script: the copy button of a just-issued token (hidden without
    /// script, where the field is selected for a manual copy), and the sessions page's refresh.
    static let script = """
        "use strict";
        document.addEventListener("DOMContentLoaded", function () {
          document.querySelectorAll("[data-copy]").forEach(function (button) {
            button.hidden = false;
            button.addEventListener("click", function () {
              var field = document.getElementById(button.getAttribute("data-copy"));
              if (!field) { return; }
              field.select();
              var done = function () { button.textContent = "Copied"; };
              if (navigator.clipboard && window.isSecureContext) {
                navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
              } else {
                document.execCommand("copy");
                done();
              }
            });
          });
          var refresh = document.querySelector("[data-refresh]");
          if (refresh) {
            var seconds = parseInt(refresh.getAttribute("data-refresh"), 10) || 5;
            window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
          }
        });
        """
}
