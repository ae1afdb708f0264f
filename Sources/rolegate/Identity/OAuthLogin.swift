import Crypto
import Foundation
import RolegateCore

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A person's login at their OpenID provider, as a native app does it (RFC 8252): the
/// authorization code flow with PKCE (RFC 7636) on a loopback redirect, or the device
/// authorization grant (RFC 8628) for a machine without a browser. Ends with the provider's ID
/// token, which the gateway exchanges for a Rolegate token.
struct OAuthLogin {
    var issuer: String
    var clientID: String
    /// Sent (`client_secret_post`) only to a provider that wants one from installed apps.
    var clientSecret: String?
    var scope = "openid email profile"

    /// The provider's endpoints, from its discovery document.
    struct Endpoints {
        var authorization: URL
        var token: URL
        var deviceAuthorization: URL?
    }

    func discover() async throws -> Endpoints {
        guard let url = TrustedIssuer.discoveryURL(issuer: issuer) else {
            throw CLIError("the issuer \(issuer) is not a URL")
        }
        let document = try await Self.getJSON(url, what: "the provider's discovery document")
        guard let authorization = (document["authorization_endpoint"] as? String).flatMap(URL.init(string:)),
            let token = (document["token_endpoint"] as? String).flatMap(URL.init(string:))
        else { throw CLIError("\(url) names no authorization_endpoint or token_endpoint") }
        return Endpoints(
            authorization: authorization, token: token,
            deviceAuthorization: (document["device_authorization_endpoint"] as? String).flatMap(URL.init(string:)))
    }

    /// Authorization code with PKCE: `show` is handed the URL to open in a browser; the
    /// provider sends the browser back to a listener on 127.0.0.1; `finish` turns the ID token
    /// into the person's Rolegate login and says how (shown to them in the browser, too).
    func authorizationCode(
        _ endpoints: Endpoints, timeout: Duration, show: (URL) -> Void, finish: (String) async throws -> String
    ) async throws -> String {
        let verifier = Self.randomURLSafe(32)
        let challenge = Data(SHA256.hash(data: Data(verifier.utf8))).base64URLEncoded
        let state = Self.randomURLSafe(16)
        let nonce = Self.randomURLSafe(16)
        let listener = try LoopbackListener()
        defer { listener.close() }
        let redirect = "http://127.0.0.1:\(listener.port)/callback"
        var components = URLComponents(url: endpoints.authorization, resolvingAgainstBaseURL: false)!
        components.queryItems =
            (components.queryItems ?? []) + [
                URLQueryItem(name: "response_type", value: "code"), URLQueryItem(name: "client_id", value: clientID),
                URLQueryItem(name: "redirect_uri", value: redirect), URLQueryItem(name: "scope", value: scope),
                URLQueryItem(name: "state", value: state), URLQueryItem(name: "nonce", value: nonce),
                URLQueryItem(name: "code_challenge", value: challenge),
                URLQueryItem(name: "code_challenge_method", value: "S256"),
            ]
        show(components.url!)
        let (query, page) = try await listener.callback(path: "/callback", timeout: timeout)
        do {
            if let error = query["error"] {
                throw CLIError(
                    "the provider refused the login: \(error)\(query["error_description"].map { " (\($0))" } ?? "")")
            }
            guard query["state"] == state else {
                throw CLIError("the login's state did not match the one started here (a forged redirect?)")
            }
            guard let code = query["code"] else { throw CLIError("the provider's redirect carried no code") }
            let answer = try await Self.postForm(
                endpoints.token,
                [
                    "grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "client_id": clientID,
                    "code_verifier": verifier,
                ].merging(clientSecret.map { ["client_secret": $0] } ?? [:]) { a, _ in a })
            let message = try await finish(try Self.idToken(answer, nonce: nonce))
            page.respond(ok: true, "\(message) You can close this page and return to your terminal.")
            return message
        } catch {
            page.respond(ok: false, "The login did not complete: \(error)")
            throw error
        }
    }

    /// The device authorization grant: `show` is handed the code and where to enter it; polls the
    /// token endpoint at the provider's interval until the person approves, denies, or the code expires.
    func deviceCode(_ endpoints: Endpoints, show: (String, URL) -> Void) async throws -> String {
        guard let endpoint = endpoints.deviceAuthorization else {
            throw CLIError(
                "the provider \(issuer) offers no device authorization (no device_authorization_endpoint): log in without --device"
            )
        }
        let started = try await Self.postForm(endpoint, ["client_id": clientID, "scope": scope])
        guard let deviceCode = started["device_code"] as? String, let userCode = started["user_code"] as? String,
            let page = ((started["verification_uri_complete"] ?? started["verification_uri"]) as? String).flatMap(
                URL.init(string:))
        else {
            throw CLIError(
                "the provider's device authorization answer lacks device_code, user_code or verification_uri")
        }
        show(userCode, page)
        var interval = max(1, started["interval"] as? Int ?? 5)
        let deadline = Date().addingTimeInterval(TimeInterval(started["expires_in"] as? Int ?? 600))
        while Date() < deadline {
            try await Task.sleep(for: .seconds(interval))
            let answer = try await Self.postForm(
                endpoints.token,
                [
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": deviceCode,
                    "client_id": clientID,
                ].merging(clientSecret.map { ["client_secret": $0] } ?? [:]) { a, _ in a }, acceptErrors: true)
            switch answer["error"] as? String {
            case nil: return try Self.idToken(answer, nonce: nil)
            case "authorization_pending": continue
            case "slow_down": interval += 5
            case let error?:
                throw CLIError(
                    "the device login ended: \(error)\((answer["error_description"] as? String).map { " (\($0))" } ?? "")"
                )
            }
        }
        throw CLIError("the device code expired before the login was approved")
    }

    /// The ID token of a token endpoint's answer, after checking it answers this login (`nonce`).
    static func idToken(_ answer: [String: Any], nonce: String?) throws -> String {
        guard let token = answer["id_token"] as? String else {
            throw CLIError("the provider answered without an ID token (is 'openid' in the client's scopes?)")
        }
        if let nonce {
            let parts = token.split(separator: ".")
            let payload = parts.count == 3 ? Data(base64URLEncoded: String(parts[1])) : nil
            let claims = payload.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            guard let claims else { throw CLIError("the provider's ID token is not a JWT") }
            if let got = claims["nonce"] as? String, got != nonce {
                throw CLIError("the ID token's nonce does not match this login (a replayed token?)")
            }
        }
        return token
    }

    static func randomURLSafe(_ bytes: Int) -> String {
        Data(SecureRandom.bytes(bytes)).base64URLEncoded
    }

    static func getJSON(_ url: URL, what: String) async throws -> [String: Any] {
        let (data, status) = try await send(URLRequest(url: url), cannotReach: "\(what) at \(url)")
        guard status == 200,
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw CLIError(
                "\(what) at \(url) is not a JSON object (\(status))")
        }
        return object
    }

    static func postForm(
        _ url: URL, _ fields: [String: String], acceptErrors: Bool = false
    ) async throws -> [String: Any] {
        var request = URLRequest(url: url, timeoutInterval: 30)
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.httpBody = Data(ExchangeClient.form(fields).utf8)
        let (data, status) = try await send(request, cannotReach: url.absoluteString)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        if status == 200, let object { return object }
        if acceptErrors, status == 400, let object, object["error"] != nil { return object }
        let error = object?["error"] as? String ?? "HTTP \(status)"
        let description = object?["error_description"] as? String
        throw CLIError("\(url) refused the request: \(error)\(description.map { " (\($0))" } ?? "")")
    }
}

extension Data {
    var base64URLEncoded: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    init?(base64URLEncoded text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        self.init(base64Encoded: base64)
    }
}
