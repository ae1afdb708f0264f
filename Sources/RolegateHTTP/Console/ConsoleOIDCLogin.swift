import Foundation
import HTTPTypes
import Hummingbird
import RolegateCore
import RolegateIdentity
import RolegateTokens

/// Logging in to the console through the organisation's OpenID provider (a `trust:` with a
/// `client_id`): the authorization code flow with PKCE, `state` and `nonce`, redirecting back to
/// `/console/login/oidc/callback` on the instance the browser reached. The attempt's secrets
/// travel in a cookie sealed under a key from the master key (so the callback may land on any
/// instance) that lives ten minutes and is scoped to the callback. The ID token is exchanged like
/// `POST /v1/auth/exchange` does, for a token of the console's own that never leaves the server
/// and does not replace the person's `rolegate login` token; the session ends with it, and with
/// `rolegate token revoke --subject`.
extension HTTPAPI {
    static let oidcCookie = "rolegate_oidc"

    func addConsoleOIDCRoutes(to router: Router<APIContext>) {
        let api = self
        router.get("/console/login/oidc/callback") { request, context in
            await api.finishOIDCLogin(request, context)
        }
        router.get("/console/login/oidc/:trust") { request, context in
            await api.startOIDCLogin(request, trust: context.parameters.get("trust") ?? "")
        }
    }

    /// The providers people may log in to the console with.
    var consoleProviders: [String] {
        identity == nil ? [] : policy.trusts.filter { $0.clientID != nil }.map(\.name)
    }

    /// Where the provider sends the browser back: this instance, as the browser reached it.
    func oidcRedirect(_ request: Request) -> String {
        let host = request.head.authority ?? "\(settings.host):\(settings.port)"
        return "\(settings.tls != nil ? "https" : "http")://\(host)/console/login/oidc/callback"
    }

    func startOIDCLogin(_ request: Request, trust name: String) async -> Response {
        guard consoleProviders.contains(name), let trust = policy.trust(named: name), let client = OIDCClient(trust)
        else {
            return Self.page(
                ConsolePage.login(error: "No provider \(name) for people's logins.", providers: consoleProviders),
                status: .notFound)
        }
        let endpoints: OIDCClient.Endpoints
        do {
            endpoints = try await client.discover()
        } catch {
            return Self.page(
                ConsolePage.login(error: "The provider cannot be reached: \(error)", providers: consoleProviders),
                status: .serviceUnavailable)
        }
        let attempt = OIDCClient.Attempt.fresh()
        let redirect = oidcRedirect(request)
        var response = Self.redirect(
            client.authorizationURL(endpoints, redirect: redirect, attempt: attempt).absoluteString)
        let sealed = SealedText.seal(
            [name, attempt.verifier, attempt.state, attempt.nonce].joined(separator: "\n"),
            key: masterKey.consoleSealKey, expires: Date() + 600)
        response.headers[.setCookie] = oidcCookie(sealed, maxAge: 600)
        return response
    }

    func finishOIDCLogin(_ request: Request, _ context: APIContext) async -> Response {
        func refuse(_ message: String, status: HTTPResponse.Status, code: String) -> Response {
            recordRefusal(
                Problem(status: status, code: code, message: "console login: \(message)"),
                requestID: context.requestID, clientAddress: context.clientAddress)
            var response = Self.page(ConsolePage.login(error: message, providers: consoleProviders), status: status)
            response.headers[.setCookie] = oidcCookie("", maxAge: 0)
            return response
        }
        let parts =
            Self.cookie(named: Self.oidcCookie, in: request).flatMap {
                SealedText.open($0, key: masterKey.consoleSealKey)
            }?.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) ?? []
        guard parts.count == 4, let exchange = identity, let trust = policy.trust(named: parts[0]),
            let client = OIDCClient(trust)
        else {
            return refuse(
                "This login expired or was started in another browser: start it again.", status: .badRequest,
                code: "login_expired")
        }
        let attempt = OIDCClient.Attempt(verifier: parts[1], state: parts[2], nonce: parts[3])
        let idToken: String
        do {
            let endpoints = try await client.discover()
            idToken = try await client.finish(
                Self.query(request), endpoints, redirect: oidcRedirect(request), attempt: attempt)
        } catch {
            return refuse(error.description, status: .unauthorized, code: "login_failed")
        }
        let issued: TokenService.Issued
        do {
            issued = try await exchange.exchange(
                idToken,
                issuer: TokenRecord.consoleIssuerPrefix + "oidc" + (context.clientAddress.map { "@\($0)" } ?? ""))
        } catch {
            let problem = ContractHandlers.problem(error)
            return refuse(problem.message, status: problem.status, code: problem.code)
        }
        let record = issued.record
        let session = ConsoleSession.start(tokenID: record.id, expires: min(record.expiresAt, Date() + 12 * 3600))
        audit?.record(
            AuditEvent(
                kind: .auth, action: "allowed", service: record.service, tokenID: record.id, role: record.role,
                sessionID: context.requestID, client: context.clientAddress,
                detail: ["channel": "console", "method": "oidc", "subject": record.subject ?? ""]))
        var response = Self.redirect("/console")
        response.headers[.setCookie] = cookie(
            session.cookieValue(key: masterKey.consoleKey), maxAge: Int(session.expires.timeIntervalSinceNow))
        response.headers.append(HTTPField(name: .setCookie, value: oidcCookie("", maxAge: 0)))
        return response
    }

    /// `Lax`, not `Strict`: the provider's redirect back is a navigation from another site, and
    /// must carry it.
    func oidcCookie(_ value: String, maxAge: Int) -> String {
        setCookie(Self.oidcCookie, value, path: "/console/login/oidc", maxAge: maxAge, sameSite: "Lax")
    }
}
