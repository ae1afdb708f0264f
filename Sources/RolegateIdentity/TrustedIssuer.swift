public import Foundation

/// An OpenID Connect issuer whose tokens Rolegate accepts in exchange for its own (a `trust:`
/// entry of the policy): who signs them, where its keys are, and what a token must say.
public struct TrustedIssuer: Sendable, Equatable {
    /// Where the issuer's signing keys are published.
    public enum KeySource: Sendable, Equatable {
        /// A JWKS document over HTTP(S) (`jwks_url`), fetched and cached.
        case url(URL)
        /// A JWKS document on disk (`jwks_file`), read and cached the same way.
        case file(String)
    }

    /// The policy's name for it (`github`, `corp-sso`).
    public var name: String
    /// The `iss` its tokens carry, exactly.
    public var issuer: String
    public var keys: KeySource
    /// A token's `aud` must name one of these.
    public var audiences: [String]
    /// Tokens issued longer ago than this are refused (a Kubernetes token can live a year).
    public var maxAge: Duration?
    /// Clock difference tolerated on `exp`, `nbf` and `iat`.
    public var leeway: Duration

    public init(
        name: String, issuer: String, keys: KeySource, audiences: [String], maxAge: Duration? = nil,
        leeway: Duration = .seconds(60)
    ) {
        self.name = name
        self.issuer = issuer
        self.keys = keys
        self.audiences = audiences
        self.maxAge = maxAge
        self.leeway = leeway
    }
}
