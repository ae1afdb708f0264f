public import Foundation
public import RolegateCore

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The OpenID Connect client side of a person's login, shared by `rolegate login` (a native
/// app on a loopback redirect, RFC 8252) and the console (a web app redirecting back to
/// itself): discovery, the authorization URL with PKCE S256 (RFC 7636), `state` and `nonce`,
/// redeeming the code, the device authorization grant (RFC 8628), and the ID token's `nonce`.
public struct OIDCClient: Sendable {
    public var issuer: String
    public var clientID: String
    /// Sent (`client_secret_post`) only to a provider that wants one (see
    /// ``TrustedIssuer/clientSecret``).
    public var clientSecret: String?
    public var scope = "openid email profile"

    public init(issuer: String, clientID: String, clientSecret: String?) {
        self.issuer = issuer
        self.clientID = clientID
        self.clientSecret = clientSecret
    }

    public init?(_ trust: TrustedIssuer) {
        guard let clientID = trust.clientID else { return nil }
        self.init(issuer: trust.issuer, clientID: clientID, clientSecret: trust.clientSecret)
    }

    /// What went wrong, in words for the person logging in.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The provider's endpoints, from its discovery document.
    public struct Endpoints: Sendable {
        public var authorization: URL
        public var token: URL
        public var deviceAuthorization: URL?
    }

    /// One login's secrets: the PKCE verifier, `state` and `nonce`.
    public struct Attempt: Sendable, Equatable {
        public var verifier: String
        public var state: String
        public var nonce: String

        public init(verifier: String, state: String, nonce: String) {
            self.verifier = verifier
            self.state = state
            self.nonce = nonce
        }

        public static func fresh() -> Attempt {
            Attempt(verifier: randomURLSafe(32), state: randomURLSafe(16), nonce: randomURLSafe(16))
        }

        /// `BASE64URL(SHA256(verifier))`.
        public var challenge: String { base64url(SCRAMSHA256.sha256(Array(verifier.utf8))) }
    }

    public func discover() async throws(Failure) -> Endpoints {
        guard let url = TrustedIssuer.discoveryURL(issuer: issuer) else {
            throw Failure("the issuer \(issuer) is not a URL")
        }
        let document = try await Self.getJSON(url, what: "the provider's discovery document")
        guard let authorization = (document["authorization_endpoint"] as? String).flatMap(URL.init(string:)),
            let token = (document["token_endpoint"] as? String).flatMap(URL.init(string:))
        else { throw Failure("\(url) names no authorization_endpoint or token_endpoint") }
        return Endpoints(
            authorization: authorization, token: token,
            deviceAuthorization: (document["device_authorization_endpoint"] as? String).flatMap(URL.init(string:)))
    }

    /// Where to send the browser: the authorization endpoint with this attempt's parameters.
    public func authorizationURL(_ endpoints: Endpoints, redirect: String, attempt: Attempt) -> URL {
        var components = URLComponents(url: endpoints.authorization, resolvingAgainstBaseURL: false)!
        components.queryItems =
            (components.queryItems ?? []) + [
                URLQueryItem(name: "response_type", value: "code"), URLQueryItem(name: "client_id", value: clientID),
                URLQueryItem(name: "redirect_uri", value: redirect), URLQueryItem(name: "scope", value: scope),
                URLQueryItem(name: "state", value: attempt.state), URLQueryItem(name: "nonce", value: attempt.nonce),
                URLQueryItem(name: "code_challenge", value: attempt.challenge),
                URLQueryItem(name: "code_challenge_method", value: "S256"),
            ]
        return components.url!
    }

    /// The provider's redirect back (its query) checked against the attempt, the code redeemed,
    /// and the ID token returned once its `nonce` is the attempt's.
    public func finish(
        _ query: [String: String], _ endpoints: Endpoints, redirect: String, attempt: Attempt
    ) async throws(Failure) -> String {
        if let error = query["error"] {
            throw Failure(
                "the provider refused the login: \(error)\(query["error_description"].map { " (\($0))" } ?? "")")
        }
        guard let state = query["state"], ConstantTime.equals(Array(state.utf8), Array(attempt.state.utf8)) else {
            throw Failure("the login's state did not match the one started here (a forged redirect?)")
        }
        guard let code = query["code"] else { throw Failure("the provider's redirect carried no code") }
        let answer = try await Self.postForm(
            endpoints.token,
            withSecret([
                "grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "client_id": clientID,
                "code_verifier": attempt.verifier,
            ]))
        return try Self.idToken(answer, nonce: attempt.nonce)
    }

    /// The device authorization grant: `show` is handed the code and where to enter it; polls the
    /// token endpoint at the provider's interval until the person approves, denies, or the code expires.
    public func deviceCode(_ endpoints: Endpoints, show: (String, URL) -> Void) async throws(Failure) -> String {
        guard let endpoint = endpoints.deviceAuthorization else {
            throw Failure(
                "the provider \(issuer) offers no device authorization (no device_authorization_endpoint): log in without --device"
            )
        }
        let started = try await Self.postForm(endpoint, ["client_id": clientID, "scope": scope])
        guard let deviceCode = started["device_code"] as? String, let userCode = started["user_code"] as? String,
            let page = ((started["verification_uri_complete"] ?? started["verification_uri"]) as? String).flatMap(
                URL.init(string:))
        else {
            throw Failure("the provider's device authorization answer lacks device_code, user_code or verification_uri")
        }
        show(userCode, page)
        var interval = max(1, started["interval"] as? Int ?? 5)
        let deadline = Date().addingTimeInterval(TimeInterval(started["expires_in"] as? Int ?? 600))
        while Date() < deadline {
            do { try await Task.sleep(for: .seconds(interval)) } catch { throw Failure("the login was cancelled") }
            let answer = try await Self.postForm(
                endpoints.token,
                withSecret([
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": deviceCode,
                    "client_id": clientID,
                ]), acceptErrors: true)
            switch answer["error"] as? String {
            case nil: return try Self.idToken(answer, nonce: nil)
            case "authorization_pending": continue
            case "slow_down": interval += 5
            case let error?:
                throw Failure(
                    "the device login ended: \(error)\((answer["error_description"] as? String).map { " (\($0))" } ?? "")"
                )
            }
        }
        throw Failure("the device code expired before the login was approved")
    }

    private func withSecret(_ fields: [String: String]) -> [String: String] {
        fields.merging(clientSecret.map { ["client_secret": $0] } ?? [:]) { a, _ in a }
    }

    /// The ID token of a token endpoint's answer, after checking it answers this login (`nonce`).
    public static func idToken(_ answer: [String: Any], nonce: String?) throws(Failure) -> String {
        guard let token = answer["id_token"] as? String else {
            throw Failure("the provider answered without an ID token (is 'openid' in the client's scopes?)")
        }
        if let nonce {
            let parts = token.split(separator: ".")
            let payload = parts.count == 3 ? unbase64url(String(parts[1])) : nil
            let claims = payload.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            guard let claims else { throw Failure("the provider's ID token is not a JWT") }
            if let got = claims["nonce"] as? String, got != nonce {
                throw Failure("the ID token's nonce does not match this login (a replayed token?)")
            }
        }
        return token
    }

    public static func randomURLSafe(_ bytes: Int) -> String {
        base64url(SecureRandom.bytes(bytes))
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func unbase64url(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }

    /// `application/x-www-form-urlencoded`, RFC 6749 appendix B (sorted, so requests are
    /// reproducible).
    public static func form(_ fields: [String: String]) -> String {
        // RFC 3986's unreserved characters, ASCII only (CharacterSet.alphanumerics has every script's letters).
        let allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return fields.sorted { $0.key < $1.key }.map {
            "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")"
        }.joined(separator: "&")
    }

    static func send(_ request: URLRequest, cannotReach what: String) async throws(Failure) -> (Data, Int) {
        do {
            let (data, response) = try await URLSession.shared.data(for: request)
            return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
        } catch {
            throw Failure("cannot reach \(what): \(error.localizedDescription)")
        }
    }

    static func getJSON(_ url: URL, what: String) async throws(Failure) -> [String: Any] {
        let (data, status) = try await send(URLRequest(url: url, timeoutInterval: 30), cannotReach: "\(what) at \(url)")
        guard status == 200, let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Failure("\(what) at \(url) is not a JSON object (\(status))")
        }
        return object
    }

    static func postForm(
        _ url: URL, _ fields: [String: String], acceptErrors: Bool = false
    ) async throws(Failure) -> [String: Any] {
        var request = URLRequest(url: url, timeoutInterval: 30)
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.httpBody = Data(form(fields).utf8)
        let (data, status) = try await send(request, cannotReach: url.absoluteString)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        if status == 200, let object { return object }
        if acceptErrors, status == 400, let object, object["error"] != nil { return object }
        let error = object?["error"] as? String ?? "HTTP \(status)"
        let description = object?["error_description"] as? String
        throw Failure("\(url) refused the request: \(error)\(description.map { " (\($0))" } ?? "")")
    }
}
