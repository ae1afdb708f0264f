public import Foundation
import RolegateCore

/// Why an identity token (a JWT from a trusted issuer) was not accepted. Each case is its own
/// answer, so a CI job's owner can tell a wrong audience from an expired token from a key the
/// issuer no longer publishes; none of them carries the token.
public enum IdentityRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// A short, stable name of the refusal for APIs and the audit log (`wrong_audience`).
    public var code: String {
        switch self {
        case .malformed: "identity_malformed"
        case .algorithmNotAllowed: "algorithm_not_allowed"
        case .unknownIssuer: "unknown_issuer"
        case .unknownKey: "unknown_key"
        case .badSignature: "bad_signature"
        case .issuerUnreachable: "issuer_unreachable"
        case .expired: "identity_expired"
        case .notYetValid: "identity_not_yet_valid"
        case .tooOld: "identity_too_old"
        case .wrongAudience: "wrong_audience"
        case .missingClaim: "missing_claim"
        case .noMatch: "no_matching_rule"
        case .ambiguous: "ambiguous_match"
        }
    }

    /// Not a JWT (three base64url parts of JSON), or a claim of the wrong type.
    case malformed(String)
    /// `alg` is `none`, an HMAC (a public key must never verify those), or one not supported.
    case algorithmNotAllowed(String)
    /// No `trust:` entry has this `iss`.
    case unknownIssuer(String)
    /// The issuer publishes no key with this `kid` (even after fetching its keys again).
    case unknownKey(issuer: String, kid: String?)
    /// The signature does not verify with the issuer's key.
    case badSignature(issuer: String)
    /// The issuer's keys cannot be read right now (tokens already issued are not affected).
    case issuerUnreachable(issuer: String, reason: String)
    case expired(at: Date)
    case notYetValid(until: Date)
    /// Issued longer ago than the trust's `max_age`.
    case tooOld(issuedAt: Date, maxAge: Duration)
    /// `aud` names none of the trust's audiences.
    case wrongAudience(got: [String], expected: [String])
    /// A claim the checks need is missing (`exp`, `sub`; `iat` under `max_age`).
    case missingClaim(String)
    /// The identity is valid, but no service, person or group of the policy accepts it: why,
    /// rule by rule (which claim did not match), without any claim's value beyond the subject.
    case noMatch(subject: String, trust: String, reasons: [String])
    /// Several services, people or groups accept it: one token, one role, so none is chosen.
    case ambiguous(subject: String, matches: [String])

    public var description: String {
        switch self {
        case .malformed(let reason): "the identity token is malformed: \(reason)"
        case .algorithmNotAllowed(let alg):
            "the identity token's algorithm \"\(alg)\" is not accepted (RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA only)"
        case .unknownIssuer(let issuer): "no trusted issuer is \"\(issuer)\" (see trust: in the policy)"
        case .unknownKey(let issuer, let kid):
            "the identity token is signed by a key \(issuer) does not publish (kid \(kid.map { "\"\($0)\"" } ?? "missing"))"
        case .badSignature(let issuer): "the identity token's signature does not verify with \(issuer)'s key"
        case .issuerUnreachable(let issuer, let reason): "the keys of \(issuer) cannot be read right now: \(reason)"
        case .expired(let at): "the identity token expired at \(at.rfc3339)"
        case .notYetValid(let until): "the identity token is not valid before \(until.rfc3339)"
        case .tooOld(let issuedAt, let maxAge):
            "the identity token was issued at \(issuedAt.rfc3339), longer ago than the trust's max_age (\(maxAge))"
        case .wrongAudience(let got, let expected):
            "the identity token's audience \(got) names none of \(expected)"
        case .missingClaim(let name): "the identity token has no \"\(name)\" claim"
        case .noMatch(let subject, let trust, let reasons):
            "no service, person or group of the policy accepts \(subject) from trust \(trust)"
                + (reasons.isEmpty
                    ? " (nothing in the policy trusts \(trust))" : ": " + reasons.joined(separator: "; "))
        case .ambiguous(let subject, let matches):
            "\(subject) matches several entries of the policy (\(matches.joined(separator: ", "))); one token is bound to one role, so narrow their claims"
        }
    }
}
