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
        /// The `jwks_uri` of the issuer's discovery document
        /// (`<issuer>/.well-known/openid-configuration`), the default.
        case discovery(URL)
    }

    /// The policy's name for it (`github`, `corp-sso`).
    public var name: String
    /// The `iss` its tokens carry, exactly.
    public var issuer: String
    public var keys: KeySource
    /// A token's `aud` must name one of these (the `client_id` counts as one: a person's ID
    /// token names the client it was issued to).
    public var audiences: [String]
    /// Tokens issued longer ago than this are refused (a Kubernetes token can live a year).
    public var maxAge: Duration?
    /// Clock difference tolerated on `exp`, `nbf` and `iat`.
    public var leeway: Duration
    /// The OAuth client people log in with (`rolegate login`): authorization code with PKCE, or
    /// the device authorization grant. Nil: the issuer serves workloads only.
    public var clientID: String?
    /// For a provider that insists on a secret from installed apps (Google's "Desktop" clients):
    /// handed to every `rolegate login`, so it is public by nature (RFC 8252 §8.5); PKCE is
    /// what protects the login.
    public var clientSecret: String?
    public var location: SourceLocation?

    public static let defaultLeeway: Duration = .seconds(60)

    public init(
        name: String, issuer: String, keys: KeySource, audiences: [String], maxAge: Duration? = nil,
        leeway: Duration = TrustedIssuer.defaultLeeway, clientID: String? = nil, location: SourceLocation? = nil
    ) {
        self.name = name
        self.issuer = issuer
        self.keys = keys
        self.audiences = audiences
        self.maxAge = maxAge
        self.leeway = leeway
        self.clientID = clientID
        self.location = location
    }

    /// Every audience a token may name: `audiences` and the `client_id`.
    public var acceptedAudiences: [String] {
        audiences + (clientID.map { audiences.contains($0) ? [] : [$0] } ?? [])
    }

    /// `<issuer>/.well-known/openid-configuration`.
    public static func discoveryURL(issuer: String) -> URL? {
        let base = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
        return URL(string: base + "/.well-known/openid-configuration")
    }
}

/// `services.<name>.identity`: which verified identities may exchange their token for this
/// service's: those from `trust` whose claims satisfy every rule.
public struct IdentityRule: Sendable, Equatable {
    public var trust: String
    public var claims: [ClaimRule]
    public var location: SourceLocation?

    public init(trust: String, claims: [ClaimRule], location: SourceLocation? = nil) {
        self.trust = trust
        self.claims = claims
        self.location = location
    }
}

/// `people.<name>`: one person, bound to one role, who logs in through `trust` and connects as
/// `user=<name>`. Their ID token's `email` (or, for a name without `@`, `preferred_username`)
/// must be `name`.
public struct PersonSpec: Sendable, Equatable {
    /// How long a person's exchanged token lives (a working session; `rolegate login` again after).
    public static let tokenTTL: Duration = .seconds(3600)

    public var name: String
    public var role: String
    public var trust: String
    public var location: SourceLocation?

    public init(name: String, role: String, trust: String, location: SourceLocation? = nil) {
        self.name = name
        self.role = role
        self.trust = trust
        self.location = location
    }
}

/// `groups.<name>`: everyone whose ID token from `trust` lists `name` in its `claim` (`groups`
/// by default) is bound to `role`, and connects as their own email.
public struct GroupSpec: Sendable, Equatable {
    public var name: String
    public var role: String
    public var trust: String
    public var claim: String
    public var location: SourceLocation?

    public init(name: String, role: String, trust: String, claim: String = "groups", location: SourceLocation? = nil) {
        self.name = name
        self.role = role
        self.trust = trust
        self.claim = claim
        self.location = location
    }

    /// The `grant` recorded on tokens issued through this group.
    public var grant: String { "group:\(name)" }
}

/// What a verified identity is entitled to under the policy: one login (a service, a person,
/// or a group's member by their email), one role, and the rules its tokens follow. Made by the
/// identity matcher, carried out by the token service.
public struct IdentityGrant: Sendable, Equatable {
    /// The `user=` its tokens log in as (a service's or person's name, a group member's email).
    public var login: String
    public var role: String
    /// The identity token's `sub`.
    public var subject: String
    /// The `trust:` entry that vouched for it.
    public var trust: String
    /// `group:<name>` when a group granted it (``TokenRecord/grant``).
    public var grant: String?
    /// What granted it, for messages and the audit log: `service deploy-bot`, `person alice@…`, `group data-team`.
    public var source: String
    public var ttl: Duration
    /// How long the subject's previous token keeps working after this exchange.
    public var grace: Duration
    /// How many subjects may hold a live token of `login` at once.
    public var maxLive: Int
    public var scramIterations: Int
    /// Names the identity token itself (SHA-256 of its issuer and `jti`, else of the whole
    /// token): once a token exchanged for it is revoked, it cannot be exchanged again.
    public var identityDigest: String?
    /// The groups the identity token listed (its `groups` claim): who it is for access requests.
    public var groups: [String] = []

    public init(
        login: String, role: String, subject: String, trust: String, grant: String? = nil, source: String,
        ttl: Duration, grace: Duration, maxLive: Int, scramIterations: Int
    ) {
        self.login = login
        self.role = role
        self.subject = subject
        self.trust = trust
        self.grant = grant
        self.source = source
        self.ttl = ttl
        self.grace = grace
        self.maxLive = maxLive
        self.scramIterations = scramIterations
    }
}

/// Why an identity token sent as a password did not log in: the client sees `message` with `sqlState`.
public struct IdentityLoginRefusal: Error, Sendable, Equatable {
    public var sqlState: String
    public var message: String

    public init(sqlState: String = "28000", message: String) {
        self.sqlState = sqlState
        self.message = message
    }
}
