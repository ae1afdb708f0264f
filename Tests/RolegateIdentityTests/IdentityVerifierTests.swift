import Foundation
import JWTKit
import RolegateCore
import RolegateTestSupport
import Synchronization
import Testing

@testable import RolegateIdentity

/// Identity tokens from a trusted issuer, signed with this test's own keys and served as a JWKS
/// document by a counting fetcher: every refusal is its own answer, a rotated key works without
/// a restart, and unknown `kid`s do not turn into a flood of fetches.
@Suite(.ownThreads) struct IdentityVerifierTests {
    static let issuer = "https://token.actions.githubusercontent.com"

    /// An issuer with signing keys, and the JWKS document it publishes (which a test may change).
    final class Issuer: Sendable {
        let keys = Mutex<[(kid: String, key: ES256PrivateKey)]>([])
        let failing = Mutex(false)
        let fetched = Atomic<Int>(0)

        init(kids: [String]) {
            for kid in kids { rotate(in: kid) }
        }

        func rotate(in kid: String) {
            keys.withLock { $0.append((kid, ES256PrivateKey())) }
        }

        func retire(_ kid: String) {
            keys.withLock { $0.removeAll { $0.kid == kid } }
        }

        var document: Data {
            let published = keys.withLock { $0 }.map { kid, key -> [String: String] in
                let (x, y) = key.publicKey.parameters!
                return ["kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"]
            }
            return try! JSONSerialization.data(withJSONObject: ["keys": published])
        }

        var fetch: JWKSCache.Fetch {
            { _ in
                self.fetched.add(1, ordering: .relaxed)
                if self.failing.withLock({ $0 }) { throw JWKSCache.FetchError(description: "connection refused") }
                return (self.document, nil)
            }
        }

        func sign(_ claims: [String: ClaimValue], kid: String, alg: String? = nil) async throws -> String {
            guard let key = keys.withLock({ $0.first { $0.kid == kid }?.key }) else {
                // A key the issuer never published (an attacker's).
                return try await Self.sign(claims, with: ES256PrivateKey(), kid: kid)
            }
            return try await Self.sign(claims, with: key, kid: kid)
        }

        static func sign(_ claims: [String: ClaimValue], with key: ES256PrivateKey, kid: String) async throws -> String
        {
            let collection = JWTKeyCollection()
            await collection.add(ecdsa: key, kid: JWKIdentifier(string: kid))
            return try await collection.sign(AnyPayload(claims: claims), kid: JWKIdentifier(string: kid))
        }
    }

    let now = Date()

    /// A JWT part: base64url without padding.
    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    func claims(_ changes: [String: ClaimValue] = [:], age: TimeInterval = 30) -> [String: ClaimValue] {
        var claims: [String: ClaimValue] = [
            "iss": .string(Self.issuer), "aud": .string("rolegate-prod"),
            "sub": .string("repo:acme/billing:ref:refs/heads/main"), "repository": .string("acme/billing"),
            "ref": .string("refs/heads/main"), "iat": .number(now.timeIntervalSince1970 - age),
            "exp": .number(now.timeIntervalSince1970 + 300),
        ]
        for (key, value) in changes { claims[key] = value }
        return claims
    }

    func verifier(_ issuer: Issuer, maxAge: Duration? = .seconds(600)) -> IdentityVerifier {
        IdentityVerifier(
            trusts: [
                TrustedIssuer(
                    name: "github", issuer: Self.issuer, keys: .url(URL(string: "https://example.invalid/jwks")!),
                    audiences: ["rolegate-prod"], maxAge: maxAge)
            ], cache: JWKSCache(fetch: issuer.fetch))
    }

    @Test func aValidTokenIsAcceptedWithItsSubjectAndClaims() async throws {
        let issuer = Issuer(kids: ["k1"])
        let identity = try await verifier(issuer).verify(try await issuer.sign(claims(), kid: "k1"), now: now)
        #expect(identity.trust == "github" && identity.subject == "repo:acme/billing:ref:refs/heads/main")
        #expect(identity.claims["repository"] == .string("acme/billing"))
        // An audience list works as well as a single audience.
        let listed = try await issuer.sign(
            claims(["aud": .array([.string("other"), .string("rolegate-prod")])]), kid: "k1")
        #expect(try await verifier(issuer).verify(listed, now: now).subject.hasPrefix("repo:"))
    }

    func refusal(_ verifier: IdentityVerifier, _ token: String) async -> IdentityRefusal? {
        do {
            _ = try await verifier.verify(token, now: now)
            return nil
        } catch {
            return error
        }
    }

    @Test func eachBadTokenGetsItsOwnRefusal() async throws {
        let issuer = Issuer(kids: ["k1"])
        let v = verifier(issuer)
        #expect(
            await refusal(v, "not-a-jwt")
                == .malformed("expected three base64url parts separated by dots, the last a signature"))
        let expired = try await issuer.sign(claims(["exp": .number(now.timeIntervalSince1970 - 120)]), kid: "k1")
        guard case .expired? = await refusal(v, expired) else { Issue.record("expired accepted"); return }
        let early = try await issuer.sign(claims(["nbf": .number(now.timeIntervalSince1970 + 600)]), kid: "k1")
        guard case .notYetValid? = await refusal(v, early) else { Issue.record("nbf ignored"); return }
        let old = try await issuer.sign(claims(age: 3600), kid: "k1")
        guard case .tooOld? = await refusal(v, old) else { Issue.record("max_age ignored"); return }
        let audience = try await issuer.sign(claims(["aud": .string("someone-else")]), kid: "k1")
        #expect(await refusal(v, audience) == .wrongAudience(got: ["someone-else"], expected: ["rolegate-prod"]))
        let stranger = try await issuer.sign(claims(["iss": .string("https://evil.example")]), kid: "k1")
        #expect(await refusal(v, stranger) == .unknownIssuer("https://evil.example"))
        let noSubject = try await issuer.sign(claims(["sub": .null]), kid: "k1")
        #expect(await refusal(v, noSubject) == .missingClaim("sub"))
        // Signed by a key the issuer never published, under a kid it does publish: the signature fails.
        let forged = try await Issuer.sign(claims(), with: ES256PrivateKey(), kid: "k1")
        #expect(await refusal(v, forged) == .badSignature(issuer: Self.issuer))
        // A payload changed after signing.
        let valid = try await issuer.sign(claims(), kid: "k1")
        let parts = valid.split(separator: ".")
        let altered = Self.base64URL(
            try JSONEncoder().encode(claims(["sub": .string("repo:acme/other:ref:refs/heads/main")])))
        #expect(await refusal(v, "\(parts[0]).\(altered).\(parts[2])") == .badSignature(issuer: Self.issuer))
    }

    @Test func noneAndHMACAreRefusedBeforeAnyKeyIsLookedAt() async throws {
        let issuer = Issuer(kids: ["k1"])
        let v = verifier(issuer)
        func unsigned(alg: String) -> String {
            func encode(_ object: Any) -> String {
                Self.base64URL(try! JSONSerialization.data(withJSONObject: object))
            }
            let payload = try! JSONSerialization.jsonObject(with: JSONEncoder().encode(claims()))
            return encode(["alg": alg, "kid": "k1", "typ": "JWT"]) + "." + encode(payload) + ".c2lnbmF0dXJl"
        }
        for alg in ["none", "HS256", "HS512", "RSA-OAEP"] {
            #expect(await refusal(v, unsigned(alg: alg)) == .algorithmNotAllowed(alg))
        }
        #expect(issuer.fetched.load(ordering: .relaxed) == 0, "keys were fetched for an unsigned token")
    }

    @Test func aRotatedKeyWorksWithoutARestartAndUnknownKidsCauseAtMostOneFetchPer30s() async throws {
        let issuer = Issuer(kids: ["k1"])
        let v = verifier(issuer)
        _ = try await v.verify(try await issuer.sign(claims(), kid: "k1"), now: now)
        #expect(issuer.fetched.load(ordering: .relaxed) == 1)
        // The issuer rotates: a token with the new key is accepted (one fetch more).
        issuer.rotate(in: "k2")
        _ = try await v.verify(try await issuer.sign(claims(), kid: "k2"), now: now)
        #expect(issuer.fetched.load(ordering: .relaxed) == 2)
        // A thousand tokens with made-up kids: refused, and no more fetches within 30 s.
        for index in 0..<1000 {
            let token = try await Issuer.sign(claims(), with: ES256PrivateKey(), kid: "random-\(index)")
            #expect(await refusal(v, token) == .unknownKey(issuer: Self.issuer, kid: "random-\(index)"))
        }
        #expect(issuer.fetched.load(ordering: .relaxed) <= 3, "\(issuer.fetched.load(ordering: .relaxed)) fetches")
        // Known keys keep working meanwhile.
        _ = try await v.verify(try await issuer.sign(claims(), kid: "k1"), now: now)
    }

    @Test func anUnreachableIssuerRefusesWithAClearErrorButKnownKeysStayUsable() async throws {
        let issuer = Issuer(kids: ["k1"])
        issuer.failing.withLock { $0 = true }
        let cold = verifier(issuer)
        guard
            case .issuerUnreachable(let name, let reason)? = await refusal(
                cold, try await issuer.sign(claims(), kid: "k1"))
        else { Issue.record("an unreachable issuer was not said"); return }
        #expect(name == Self.issuer && reason.contains("connection refused"))
        // Keys fetched before an outage stay usable through it.
        issuer.failing.withLock { $0 = false }
        let warm = verifier(issuer)
        _ = try await warm.verify(try await issuer.sign(claims(), kid: "k1"), now: now)
        issuer.failing.withLock { $0 = true }
        issuer.rotate(in: "k2")
        _ = try await warm.verify(try await issuer.sign(claims(), kid: "k1"), now: now)
    }

    @Test func claimRulesMatchExactlyOrByGlob() {
        let claims: [String: ClaimValue] = [
            "repository": .string("acme/billing"), "ref": .string("refs/heads/release-2.1"),
            "groups": .array([.string("data-team"), .string("oncall")]), "run_attempt": .number(2),
            "fork": .bool(false),
        ]
        #expect(ClaimRule(claim: "repository", pattern: "acme/billing").matches(claims))
        #expect(!ClaimRule(claim: "repository", pattern: "acme/billing-x").matches(claims))
        #expect(ClaimRule(claim: "ref", pattern: "refs/heads/release-*").matches(claims))
        #expect(!ClaimRule(claim: "ref", pattern: "refs/heads/main").matches(claims))
        #expect(ClaimRule(claim: "ref", pattern: "refs/*/release-*").matches(claims))
        #expect(!ClaimRule(claim: "ref", pattern: "*main").matches(claims))
        #expect(ClaimRule(claim: "groups", pattern: "oncall").matches(claims))
        #expect(ClaimRule(claim: "run_attempt", pattern: "2").matches(claims))
        #expect(ClaimRule(claim: "fork", pattern: "false").matches(claims))
        #expect(!ClaimRule(claim: "missing", pattern: "*").matches(claims))
        #expect(ClaimRule.glob("a*b*c", matches: "abc") && ClaimRule.glob("a*b*c", matches: "a-b-b-c"))
        #expect(!ClaimRule.glob("a*b*c", matches: "acb") && ClaimRule.glob("*", matches: ""))
        #expect(ClaimRule.glob("ab*ab", matches: "abab") && !ClaimRule.glob("ab*ab", matches: "aba"))
    }
}
