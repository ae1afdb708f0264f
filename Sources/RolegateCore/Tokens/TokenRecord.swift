public import Foundation

/// Everything Rolegate keeps about one token: who it is for, when it lives, and the
/// one-way derivatives of its secret.
public struct TokenRecord: Sendable, Equatable {
    public var id: String
    public var service: String
    public var role: String
    public var issuedAt: Date
    public var expiresAt: Date
    public var revokedAt: Date?
    public var revokeReason: String?
    public var lastUsedAt: Date?
    /// Who issued it, e.g. `cli:alice@build-7`.
    public var issuer: String
    /// The issuer of tokens a console login through an OpenID provider is exchanged for.
    public static let consoleIssuerPrefix = "console:"
    public var note: String?
    /// The token that replaced this one in a rotation; this one then lives until the grace ends.
    public var supersededBy: String?
    /// Who it was exchanged for: the identity token's `sub` (`repo:acme/billing:ref:refs/heads/main`,
    /// `system:serviceaccount:prod:billing`, a person's id at their provider). Nil for a token
    /// issued by hand.
    public var subject: String?
    /// The policy entry that granted it when that is not ``service`` itself: `group:<name>` for a
    /// person who holds a group's role. Nil for services and people of the policy.
    public var grant: String?
    /// The identity token it was exchanged for (``IdentityGrant/identityDigest``), so that a
    /// revoked exchange cannot be replayed with the same identity token.
    public var identityDigest: String?
    /// The groups the identity token listed (for access requests' `group:` requesters and approvers).
    public var groups: [String] = []
    /// The access request that granted it (elevated tokens only): every statement under it carries the id.
    public var accessRequest: String?
    public var secret: TokenSecret

    public init(
        id: String, service: String, role: String, issuedAt: Date, expiresAt: Date, revokedAt: Date? = nil,
        revokeReason: String? = nil, lastUsedAt: Date? = nil, issuer: String, note: String? = nil,
        supersededBy: String? = nil, subject: String? = nil, grant: String? = nil, identityDigest: String? = nil,
        secret: TokenSecret
    ) {
        self.identityDigest = identityDigest
        self.subject = subject
        self.grant = grant
        self.id = id
        self.service = service
        self.role = role
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.revokeReason = revokeReason
        self.lastUsedAt = lastUsedAt
        self.issuer = issuer
        self.note = note
        self.supersededBy = supersededBy
        self.secret = secret
    }

    /// What the policy must still bind to ``role`` for the token to work (``Policy/bindings``):
    /// the group that granted it, else its service or person.
    public var bindingKey: String { grant ?? service }

    public func state(at now: Date) -> TokenState {
        if revokedAt != nil { return .revoked }
        if expiresAt <= now { return .expired }
        return supersededBy == nil ? .live : .grace
    }

    /// Live or in a rotation's grace window: accepted for authentication.
    public func isUsable(at now: Date) -> Bool {
        let state = state(at: now)
        return state == .live || state == .grace
    }
}

public enum TokenState: String, Sendable, Codable, CaseIterable {
    case live
    /// Replaced by a rotation; still accepted until its (shortened) expiry.
    case grace
    case expired
    case revoked
}

extension Date {
    /// This instant truncated to whole milliseconds, the precision the stores keep.
    public var wholeMilliseconds: Date {
        Date(milliseconds: millisecondsSince1970)
    }

    /// Whole milliseconds since 1970, truncated.
    ///
    /// Rounded to the microsecond first: a `Date` made from a count of milliseconds holds the
    /// nearest `Double`, which may lie just below it, and truncating that straight away gave
    /// one millisecond less for ~0.6% of the instants from 2037 on (and in 2004–2006), so a time
    /// read from a store and written back drifted.
    ///
    /// Instants beyond ±292,000 years (a filter such as `since=700000000d`) are clamped to the
    /// range instead of trapping: nothing is stored that far away.
    public var millisecondsSince1970: Int64 {
        let scaled = (timeIntervalSince1970 * 1_000_000).rounded()
        guard scaled.isFinite, abs(scaled) < 9.2e18 else { return scaled > 0 ? .max / 1000 : .min / 1000 }
        let micros = Int64(scaled)
        return micros >= 0 ? micros / 1000 : -((-micros + 999) / 1000)
    }

    public init(milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// RFC 3339 in UTC with seconds, e.g. `2026-11-29T01:15:00Z`.
    public var rfc3339: String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: self)
    }
}

extension Duration {
    public var timeInterval: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

extension TokenRecord {
    /// A token the console exchanged a person's identity for at login: it never leaves the
    /// server, and it does not take the place of the person's other token (`rolegate login`'s),
    /// nor that one its place.
    public var isConsoleLogin: Bool { issuer.hasPrefix(Self.consoleIssuerPrefix) }
}
