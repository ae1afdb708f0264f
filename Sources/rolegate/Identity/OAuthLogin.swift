import Foundation
import RolegateCore
import RolegateIdentity

/// A person's login at their OpenID provider, as a native app does it (RFC 8252): the
/// authorization code flow with PKCE (RFC 7636) on a loopback redirect, or the device
/// authorization grant (RFC 8628) for a machine without a browser. Ends with the provider's ID
/// token, which the gateway exchanges for a Rolegate token. The protocol is ``OIDCClient``'s
/// (the console's login uses it too); this adds the loopback listener and the CLI's errors.
struct OAuthLogin {
    var client: OIDCClient

    init(issuer: String, clientID: String, clientSecret: String?) {
        client = OIDCClient(issuer: issuer, clientID: clientID, clientSecret: clientSecret)
    }

    func discover() async throws -> OIDCClient.Endpoints {
        do { return try await client.discover() } catch { throw CLIError(error.description) }
    }

    /// Authorization code with PKCE: `show` is handed the URL to open in a browser; the
    /// provider sends the browser back to a listener on 127.0.0.1; `finish` turns the ID token
    /// into the person's Rolegate login and says how (shown to them in the browser, too).
    func authorizationCode(
        _ endpoints: OIDCClient.Endpoints, timeout: Duration, show: (URL) -> Void,
        finish: (String) async throws -> String
    ) async throws -> String {
        let attempt = OIDCClient.Attempt.fresh()
        let listener = try LoopbackListener()
        defer { listener.close() }
        let redirect = "http://127.0.0.1:\(listener.port)/callback"
        show(client.authorizationURL(endpoints, redirect: redirect, attempt: attempt))
        let (query, page) = try await listener.callback(path: "/callback", timeout: timeout)
        do {
            let idToken: String
            do {
                idToken = try await client.finish(query, endpoints, redirect: redirect, attempt: attempt)
            } catch {
                throw CLIError(error.description)
            }
            let message = try await finish(idToken)
            page.respond(ok: true, "\(message) You can close this page and return to your terminal.")
            return message
        } catch {
            page.respond(ok: false, "The login did not complete: \(error)")
            throw error
        }
    }

    /// The device authorization grant (RFC 8628): `show` is handed the code and where to enter it.
    func deviceCode(_ endpoints: OIDCClient.Endpoints, show: (String, URL) -> Void) async throws -> String {
        do { return try await client.deviceCode(endpoints, show: show) } catch { throw CLIError(error.description) }
    }
}
