public import Foundation
import JWTKit
public import RolegateCore

/// What a verified identity token says: who (`sub`), for which trusted issuer, and every claim.
public struct VerifiedIdentity: Sendable, Equatable {
    /// The policy's name of the issuer (`trust:` key).
    public var trust: String
    public var issuer: String
    /// The token's `sub` (`repo:acme/billing:ref:refs/heads/main`, `system:serviceaccount:prod:billing`).
    public var subject: String
    public var claims: [String: ClaimValue]
    public var issuedAt: Date?
    public var expiresAt: Date
}

/// Checks identity tokens (JWTs) from the policy's trusted issuers, with jwt-kit doing the
/// cryptography: the algorithm (asymmetric only: `none` and HMAC are refused before any key is
/// looked at, so a public key can never be used as an HMAC secret), the issuer, the signature
/// against the issuer's published key (``JWKSCache``), then `exp`, `nbf`, `iat` (within the
/// trust's leeway), the trust's `max_age` and audiences, and a subject. Every refusal is its
/// own ``IdentityRefusal``.
public struct IdentityVerifier: Sendable {
    public let trusts: [TrustedIssuer]
    public let cache: JWKSCache

    /// The signature algorithms accepted.
    public static let algorithms: Set<String> = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    ]

    public init(trusts: [TrustedIssuer], cache: JWKSCache = JWKSCache()) {
        self.trusts = trusts
        self.cache = cache
    }

    public func verify(_ token: String, now: Date = Date()) async throws(IdentityRefusal) -> VerifiedIdentity {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[2].isEmpty else {
            throw .malformed("expected three base64url parts separated by dots, the last a signature")
        }
        guard let headerData = Self.base64URL(parts[0]),
            let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any]
        else { throw .malformed("the header is not base64url-encoded JSON") }
        guard let alg = header["alg"] as? String else { throw .malformed("the header has no \"alg\"") }
        guard Self.algorithms.contains(alg) else { throw .algorithmNotAllowed(alg) }
        let kid = header["kid"] as? String
        guard let payloadData = Self.base64URL(parts[1]),
            let claims = try? JSONDecoder().decode([String: ClaimValue].self, from: payloadData)
        else { throw .malformed("the payload is not base64url-encoded JSON object") }
        guard case .string(let issuer)? = claims["iss"] else { throw .missingClaim("iss") }
        guard let trust = trusts.first(where: { $0.issuer == issuer }) else { throw .unknownIssuer(issuer) }

        let key = try await cache.key(kid: kid, of: trust)
        if let keyAlgorithm = key.algorithm?.rawValue, keyAlgorithm != alg {
            throw .algorithmNotAllowed("\(alg) (the issuer's key \(kid ?? "") is for \(keyAlgorithm))")
        }
        let keys = JWTKeyCollection()
        do {
            try await keys.add(jwk: key, isDefault: true)
        } catch {
            throw .issuerUnreachable(issuer: issuer, reason: "its key \(kid ?? "") cannot be used: \(error)")
        }
        do {
            _ = try await keys.verify(token, as: AnyPayload.self)
        } catch {
            throw .badSignature(issuer: issuer)
        }

        let leeway = trust.leeway.timeInterval
        guard let expiresAt = try Self.time(claims, "exp") else { throw .missingClaim("exp") }
        guard now.timeIntervalSince(expiresAt) <= leeway else { throw .expired(at: expiresAt) }
        if let notBefore = try Self.time(claims, "nbf"), notBefore.timeIntervalSince(now) > leeway {
            throw .notYetValid(until: notBefore)
        }
        let issuedAt = try Self.time(claims, "iat")
        if let maxAge = trust.maxAge {
            guard let issuedAt else { throw .missingClaim("iat") }
            guard now.timeIntervalSince(issuedAt) <= maxAge.timeInterval + leeway else {
                throw .tooOld(issuedAt: issuedAt, maxAge: maxAge)
            }
        }
        let audiences = claims["aud"]?.strings ?? []
        guard audiences.contains(where: trust.acceptedAudiences.contains) else {
            throw .wrongAudience(got: audiences, expected: trust.acceptedAudiences)
        }
        guard case .string(let subject)? = claims["sub"], !subject.isEmpty else { throw .missingClaim("sub") }
        return VerifiedIdentity(
            trust: trust.name, issuer: issuer, subject: subject, claims: claims, issuedAt: issuedAt,
            expiresAt: expiresAt)
    }

    /// A NumericDate claim (seconds since 1970).
    static func time(_ claims: [String: ClaimValue], _ name: String) throws(IdentityRefusal) -> Date? {
        switch claims[name] {
        case nil, .null?: return nil
        case .number(let seconds)? where seconds.isFinite: return Date(timeIntervalSince1970: seconds)
        default: throw .malformed("\"\(name)\" is not a number of seconds")
        }
    }

    static func base64URL(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}

/// Any payload: jwt-kit checks the signature; ``IdentityVerifier`` checks the claims itself.
struct AnyPayload: JWTPayload {
    var claims: [String: ClaimValue]

    init(claims: [String: ClaimValue]) {
        self.claims = claims
    }

    init(from decoder: any Decoder) throws {
        claims = try [String: ClaimValue](from: decoder)
    }

    func encode(to encoder: any Encoder) throws {
        try claims.encode(to: encoder)
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
