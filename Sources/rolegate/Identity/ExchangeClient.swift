import Foundation
import RolegateIdentity

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Calls a gateway's `POST /v1/auth/exchange` (RFC 8693, form-encoded): what `rolegate token
/// exchange` and `rolegate login` do with an identity token. Never prints the tokens it carries.
struct ExchangeClient {
    /// The gateway's HTTP API, e.g. `http://127.0.0.1:8080`.
    var api: URL

    /// The answer: the Rolegate token and what it is bound to.
    struct Exchanged: Codable {
        var access_token: String
        var token_id: String
        var service: String
        var role: String
        var subject: String
        var grant: String?
        var database: String?
        var expires_at: String
        var expires_in: Int
    }

    /// `--api`, else `$ROLEGATE_API`, else the local default.
    static func apiURL(_ explicit: String?) throws -> URL {
        let text = explicit ?? ProcessInfo.processInfo.environment["ROLEGATE_API"] ?? "http://127.0.0.1:8080"
        guard let url = URL(string: text), let scheme = url.scheme, ["http", "https"].contains(scheme.lowercased()),
            url.host != nil
        else { throw CLIError("--api '\(text)' is not an http(s) URL (e.g. https://rolegate.example.com)") }
        return url
    }

    /// `GET /v1/auth/providers`: where people log in, and the wire address.
    struct Providers: Codable {
        struct Provider: Codable {
            var name: String
            var issuer: String
            var client_id: String
            var client_secret: String?
        }
        var providers: [Provider]
        var wire_address: String
    }

    func providers() async throws -> Providers {
        let url = api.appendingPathComponent("v1/auth/providers")
        let (data, status) = try await send(URLRequest(url: url), cannotReach: "the gateway at \(api)")
        guard status == 200,
            let providers = try? JSONDecoder().decode(Providers.self, from: data)
        else {
            throw CLIError(
                "\(url) did not list identity providers (\(status)); is it a Rolegate gateway?"
            )
        }
        return providers
    }

    func exchange(jwt: String, type: String = "urn:ietf:params:oauth:token-type:jwt") async throws -> Exchanged {
        var request = URLRequest(url: api.appendingPathComponent("v1/auth/exchange"), timeoutInterval: 30)
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.httpBody = Data(
            Self.form([
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": jwt,
                "subject_token_type": type,
            ]).utf8)
        let (data, status) = try await send(request, cannotReach: "the gateway at \(api)")
        guard status == 200 else {
            let problem = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            let code = problem?["code"] as? String ?? "http_\(status)"
            let detail = problem?["detail"] as? String ?? String(decoding: data.prefix(300), as: UTF8.self)
            throw CLIError("the exchange was refused (\(status) \(code)): \(detail)")
        }
        do {
            return try JSONDecoder().decode(Exchanged.self, from: data)
        } catch {
            throw CLIError("the gateway's answer is not a token exchange response: \(error)")
        }
    }

    /// `application/x-www-form-urlencoded`, RFC 6749 appendix B.
    static func form(_ fields: [String: String]) -> String {
        OIDCClient.form(fields)
    }
}

/// One HTTP request of the CLI's (to the gateway, or a person's identity provider): the body and
/// the status, or an error naming what could not be reached (`cannotReach`) and why.
func send(_ request: URLRequest, cannotReach what: String) async throws -> (data: Data, status: Int) {
    do {
        let (data, response) = try await URLSession.shared.data(for: request)
        return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
    } catch {
        throw CLIError("cannot reach \(what): \(error.localizedDescription)")
    }
}
