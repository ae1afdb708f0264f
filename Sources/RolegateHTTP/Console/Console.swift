import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import RolegateCore
import RolegateTokens

/// `/console`: the web pages where people see and act on access, on the HTTP listener of every
/// instance: an overview (drift, instances, counts, activity), services and roles, tokens, live
/// sessions, the audit log, access requests and identity providers.
///
/// Server-rendered ``HTML`` (a value interpolated into a page is escaped unless it is markup
/// the page made), one stylesheet and one small script (the copy button, the sessions page's
/// refresh) shipped in the binary. What a person may do is their console role (``ConsoleRole``,
/// the policy's `console:`): every page checks it, and so does every POST, whether or not the
/// page showed the button. Every response carries `Content-Security-Policy` (`default-src
/// 'none'`; style and script from this origin only; forms post here only; no framing),
/// `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store`. The
/// session is a signed cookie (`HttpOnly`, `SameSite=Strict`, `Secure` under TLS, ending with
/// the token); every POST carries the session's CSRF value. Every action goes through the same
/// code as the API (the admin API's handlers, ``AccessRequests``), so it is audited with who
/// did it.
extension HTTPAPI {
    func addConsoleRoutes(to router: Router<APIContext>) {
        let api = self
        router.get("/console") { request, _ in
            guard let viewer = await api.consoleViewer(request) else { return Self.redirect("/console/login") }
            return viewer.role == nil ? Self.redirect("/console/access") : await api.overviewPage(viewer)
        }
        router.get("/console/login") { _, _ in
            Self.page(ConsolePage.login(error: nil, providers: api.consoleProviders))
        }
        router.post("/console/login") { request, context in await api.consoleLogin(request, context) }
        router.post("/console/logout") { request, _ in
            guard let session = api.consoleSession(request),
                api.csrfMatches(await Self.form(request)["csrf"], session: session)
            else { return Self.redirect("/console/login") }
            var response = Self.redirect("/console/login")
            response.headers[.setCookie] = api.cookie("", maxAge: 0)
            return response
        }
        router.get("/console/access") { request, _ in await api.accessPage(request, history: false) }
        router.get("/console/access/history") { request, _ in await api.accessPage(request, history: true) }
        router.post("/console/access/:id/:action") { request, context in
            await api.decideFromConsole(request, context)
        }
        addConsoleOIDCRoutes(to: router)
        addConsoleOverviewRoutes(to: router)
        addConsoleTokenRoutes(to: router)
        addConsoleSessionRoutes(to: router)
        addConsoleAuditRoutes(to: router)
        addConsoleDirectoryRoutes(to: router)
        router.get("/console/static/console.css") { _, _ in Self.asset(ConsolePage.stylesheet, type: "text/css") }
        router.get("/console/static/console.js") { _, _ in
            Self.asset(ConsolePage.script, type: "text/javascript")
        }
    }

    /// A console page for a signed-in person whose console role is at least `needs` (nil: any
    /// signed-in person): the login page when there is no session, 403 when the role falls short.
    func consolePage(
        _ request: Request, needs: ConsoleRole?, _ body: (ConsoleViewer) async -> Response
    ) async -> Response {
        guard let viewer = await consoleViewer(request) else { return Self.redirect("/console/login") }
        if let needs, !viewer.may(needs) { return Self.forbidden(viewer, needs: needs) }
        return await body(viewer)
    }

    /// A console form's POST: the session, its CSRF value and the role are checked first, in
    /// that order (a cross-site or forged POST gets 403 before anything is done).
    func consoleAction(
        _ request: Request, needs: ConsoleRole?, _ body: (ConsoleViewer, [String: String]) async -> Response
    ) async -> Response {
        guard let viewer = await consoleViewer(request) else { return Self.redirect("/console/login") }
        let form = await Self.form(request)
        guard csrfMatches(form["csrf"], session: viewer.session) else {
            return Self.page(
                ConsolePage.message("This form has expired or came from another site; reload the page and try again."),
                status: .forbidden)
        }
        if let needs, !viewer.may(needs) { return Self.forbidden(viewer, needs: needs) }
        return await body(viewer, form)
    }

    static func forbidden(_ viewer: ConsoleViewer, needs: ConsoleRole) -> Response {
        page(
            ConsolePage.message(
                "This needs the console role \(needs.rawValue); yours is \(viewer.role?.rawValue ?? "none") (set in the policy's console: section)."
            ), status: .forbidden)
    }

    /// Runs an admin API operation as the console's person: the same handler, checks and audit
    /// events as `/admin/v1`, with the person named as who acted.
    func asAdmin<T: Sendable>(
        _ viewer: ConsoleViewer, _ operation: (ContractHandlers) async throws -> T
    ) async throws -> T {
        try await Caller.$current.withValue(Caller(admin: viewer.record, actor: viewer.actor)) {
            try await operation(ContractHandlers(api: self))
        }
    }

    /// Access requests under this policy, audited to this instance's log: the API, the console
    /// and the MCP tools all act through it.
    var accessRequests: AccessRequests {
        let audit = self.audit
        return AccessRequests(store: store, policy: policy) { events in
            for event in events { audit?.record(event) }
        }
    }

    /// The session its cookie holds, when it verifies and has not ended.
    func consoleSession(_ request: Request) -> ConsoleSession? {
        guard let cookie = Self.cookie(named: ConsoleSession.cookieName, in: request) else { return nil }
        return ConsoleSession.parse(cookie, key: masterKey.consoleKey)
    }

    /// Who the session's token is for, as it is now (revoked or expired: no session), with
    /// their console role under the policy.
    func consoleViewer(_ request: Request) async -> ConsoleViewer? {
        guard let session = consoleSession(request),
            let record = try? await store.token(id: session.tokenID),
            case .success(let verified) = await verifier.admitCurrent(record)
        else { return nil }
        let caller = AccessRequests.Caller(verified.record, policy: policy)
        let role = policy.console.role(
            login: caller.login, groups: caller.groups, isService: caller.isService, isAdminService: caller.isAdmin)
        return ConsoleViewer(
            session: session, record: verified.record, caller: caller, role: role,
            csrf: session.csrf(key: masterKey.consoleKey))
    }

    func consoleLogin(_ request: Request, _ context: APIContext) async -> Response {
        let form = await Self.form(request)
        guard let token = form["token"]?.trimmingCharacters(in: .whitespacesAndNewlines), !token.isEmpty else {
            return Self.page(
                ConsolePage.login(error: "Paste a Rolegate token to log in.", providers: consoleProviders),
                status: .badRequest)
        }
        let verification = await verifier.verify(token)
        guard case .success(let verified) = verification else {
            if case .failure(let failure) = verification {
                recordRefusal(
                    Problem(status: .unauthorized, code: "token_invalid", message: "console login: \(failure)"),
                    requestID: context.requestID, clientAddress: context.clientAddress)
                // Guessing through the login form is slowed like guessing anywhere else.
                if let address = context.clientAddress,
                    let failures = await gateway.loginThrottle.failedAndWait(address: address)
                {
                    audit?.record(
                        gateway.loginThrottle.crossedLimitEvent(
                            address: address, failures: failures, channel: "console"))
                }
            }
            return Self.page(
                ConsolePage.login(
                    error: "That token is not valid (unknown, expired or revoked).", providers: consoleProviders),
                status: .unauthorized
            )
        }
        let record = verified.record
        let session = ConsoleSession.start(tokenID: record.id, expires: min(record.expiresAt, Date() + 12 * 3600))
        audit?.record(
            AuditEvent(
                kind: .auth, action: "allowed", service: record.service, tokenID: record.id, role: record.role,
                sessionID: context.requestID, client: context.clientAddress, detail: ["channel": "console"]))
        var response = Self.redirect("/console")
        response.headers[.setCookie] = cookie(
            session.cookieValue(key: masterKey.consoleKey), maxAge: Int(session.expires.timeIntervalSinceNow))
        return response
    }

    func accessPage(_ request: Request, history: Bool) async -> Response {
        await consolePage(request, needs: nil) { viewer in
            let service = accessRequests
            let visible = (try? await service.visible(to: viewer.caller, states: nil)) ?? []
            let decidable = Set(visible.filter { service.mayDecide($0, caller: viewer.caller) }.map(\.id))
            let notice = Self.query(request)["done"]
            return Self.page(
                ConsolePage.access(
                    viewer, requests: visible, decidable: decidable, history: history, notice: notice))
        }
    }

    func decideFromConsole(_ request: Request, _ context: APIContext) async -> Response {
        await consoleAction(request, needs: nil) { viewer, form in
            await decide(
                viewer, form, id: context.parameters.get("id") ?? "", action: context.parameters.get("action") ?? "")
        }
    }

    private func decide(_ viewer: ConsoleViewer, _ form: [String: String], id: String, action: String) async -> Response
    {
        let service = accessRequests
        let caller = viewer.caller
        let comment = form["comment"].flatMap { $0.isEmpty ? nil : String($0.prefix(500)) }
        do {
            switch action {
            case "approve", "deny":
                _ = try await service.decide(id: id, approve: action == "approve", comment: comment, caller: caller)
            case "revoke":
                _ = try await service.revoke(id: id, reason: comment, caller: caller)
            default:
                return Self.page(ConsolePage.message("Unknown action."), status: .notFound)
            }
        } catch {
            return Self.page(ConsolePage.message("Not done: \(error.description)"), status: .conflict)
        }
        let done = "\(action == "approve" ? "approved" : action == "deny" ? "denied" : "revoked") \(id)"
        return Self.redirect(
            "/console/access?done=" + (done.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))
    }

    // MARK: - HTTP pieces

    func csrfMatches(_ sent: String?, session: ConsoleSession) -> Bool {
        guard let sent else { return false }
        return ConstantTime.equals(Array(sent.utf8), Array(session.csrf(key: masterKey.consoleKey).utf8))
    }

    /// The console session's cookie (`value` empty and `maxAge` 0 to end it).
    func cookie(_ value: String, maxAge: Int) -> String {
        setCookie(ConsoleSession.cookieName, value, path: "/console", maxAge: maxAge)
    }

    /// A `Set-Cookie` value the console sends: never readable by script, `Secure` under TLS,
    /// scoped to `path`; `SameSite=Strict` unless the cookie must survive a navigation from
    /// another site (the identity provider's redirect back).
    func setCookie(
        _ name: String, _ value: String, path: String, maxAge: Int, sameSite: String = "Strict"
    )
        -> String
    {
        var cookie = "\(name)=\(value); Path=\(path); HttpOnly; SameSite=\(sameSite); Max-Age=\(max(0, maxAge))"
        if settings.tls != nil { cookie += "; Secure" }
        return cookie
    }

    static func cookie(named name: String, in request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0] == name { return String(parts[1]) }
            }
        }
        return nil
    }

    static func query(_ request: Request) -> [String: String] {
        var values: [String: String] = [:]
        for item in URLComponents(string: request.uri.description)?.queryItems ?? [] {
            values[item.name] = item.value ?? ""
        }
        return values
    }

    /// A url-encoded form body (already read whole by BodyMiddleware).
    static func form(_ request: Request) async -> [String: String] {
        let body = request.body
        guard let buffer = try? await body.collect(upTo: 64 << 10) else { return [:] }
        var components = URLComponents()
        components.percentEncodedQuery = String(buffer: buffer).replacingOccurrences(of: "+", with: "%20")
        var values: [String: String] = [:]
        for item in components.queryItems ?? [] { values[item.name] = item.value ?? "" }
        return values
    }

    static func asset(_ text: String, type: String) -> Response {
        var response = Response(
            status: .ok, headers: [.contentType: "\(type); charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
        secure(&response)
        return response
    }

    static func page(_ html: HTML, status: HTTPResponse.Status = .ok) -> Response {
        var response = Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: html.text)))
        secure(&response)
        return response
    }

    static func redirect(_ location: String) -> Response {
        var response = Response(status: .seeOther, headers: [.location: location])
        secure(&response)
        return response
    }

    static func secure(_ response: inout Response) {
        response.headers[.contentSecurityPolicy] =
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        response.headers[.cacheControl] = "no-store"
        response.headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
    }
}
