import Crypto
public import Foundation
public import RolegateCore
public import RolegateStore
public import RolegateTokens

/// Where an identity token becomes a Rolegate token: verified (``IdentityVerifier``), matched to
/// the one service, person or group the policy grants it (``IdentityMatcher``), then issued
/// bound to its subject (``TokenService/exchange(_:now:)``). The HTTP API's
/// `POST /v1/auth/exchange` and a JWT sent as the password on the wire both come here.
public actor IdentityExchange {
    public let verifier: IdentityVerifier
    public let policy: Policy
    let store: any Store
    let audit: (@Sendable ([AuditEvent]) async -> Void)?
    /// Wire logins with the same JWT share the token it was exchanged for (a pool of 20
    /// connections is one exchange, not 20 that would end each other's sessions), by the JWT's
    /// SHA-256, until that token or the JWT expires.
    private var wireTokens: [Data: (record: TokenRecord, until: Date)] = [:]
    static let wireTokenLimit = 10_000

    /// Why an exchange was refused.
    public enum Refusal: Error, Sendable {
        case identity(IdentityRefusal)
        case tokens(TokenService.Failure)
    }

    public init(
        verifier: IdentityVerifier, policy: Policy, store: any Store,
        audit: (@Sendable ([AuditEvent]) async -> Void)?
    ) {
        self.verifier = verifier
        self.policy = policy
        self.store = store
        self.audit = audit
    }

    /// Verifies, matches and issues. `issuer` is recorded on the token (`exchange:github@10.0.0.5`).
    public func exchange(_ jwt: String, issuer: String, now: Date = Date()) async throws(Refusal) -> TokenService.Issued
    {
        try await exchangeVerified(jwt, issuer: issuer, now: now).issued
    }

    private func exchangeVerified(
        _ jwt: String, issuer: String, now: Date
    ) async throws(Refusal) -> (issued: TokenService.Issued, identity: VerifiedIdentity) {
        let identity: VerifiedIdentity
        var grant: IdentityGrant
        do {
            identity = try await verifier.verify(jwt, now: now)
            grant = try IdentityMatcher.grant(for: identity, in: policy)
        } catch {
            throw .identity(error)
        }
        grant.identityDigest = Self.digest(jwt, identity)
        do {
            let issued = try await TokenService(store: store, policy: policy, issuer: issuer, audit: audit).exchange(
                grant, now: now)
            return (issued, identity)
        } catch {
            throw .tokens(error)
        }
    }

    /// Names an identity token: its issuer and `jti` when it has one (the same token re-encoded
    /// is the same token), else all of its bytes.
    static func digest(_ jwt: String, _ identity: VerifiedIdentity) -> String {
        let material =
            if case .string(let jti)? = identity.claims["jti"], !jti.isEmpty {
                "jti\u{0}\(identity.issuer)\u{0}\(jti)"
            } else {
                "jwt\u{0}\(jwt)"
            }
        return SHA256.hash(data: Data(material.utf8)).hexString
    }

    /// A JWT sent as the password by `user` on the wire: the token it is exchanged for (shared by
    /// every connection with the same JWT while both live), or why not.
    public func wireLogin(
        jwt: String, user: String, now: Date = Date()
    ) async -> Result<
        TokenRecord, IdentityLoginRefusal
    > {
        let digest = Data(SHA256.hash(data: Data(jwt.utf8)))
        if let known = wireTokens[digest], known.until > now, known.record.service == user {
            // Shared while it is still usable; once another exchange by the same subject has
            // replaced it and its grace is over, exchange again (a revoked one is refused there).
            if let current = try? await store.token(id: known.record.id), current.isUsable(at: now) {
                return .success(current)
            }
            wireTokens[digest] = nil
        }
        let issued: TokenService.Issued
        let identity: VerifiedIdentity
        do {
            (issued, identity) = try await exchangeVerified(jwt, issuer: "exchange:wire", now: now)
        } catch {
            return .failure(refused(error))
        }
        if wireTokens.count >= Self.wireTokenLimit { wireTokens = wireTokens.filter { $0.value.until > now } }
        if wireTokens.count < Self.wireTokenLimit {
            // Until the JWT itself expires (within the token's life): a login after is checked again.
            wireTokens[digest] = (issued.record, min(identity.expiresAt, issued.record.expiresAt))
        }
        return .success(issued.record)
    }

    /// What the wire client is told (the session handler records the refusal with its client).
    private func refused(_ refusal: Refusal) -> IdentityLoginRefusal {
        switch refusal {
        case .identity(.issuerUnreachable(let issuer, let reason)):
            return IdentityLoginRefusal(
                sqlState: "08006",
                message: IdentityRefusal.issuerUnreachable(issuer: issuer, reason: reason).description)
        case .identity(let refusal):
            return IdentityLoginRefusal(message: refusal.description)
        case .tokens(.store):
            return IdentityLoginRefusal(sqlState: "08006", message: "token store unavailable")
        case .tokens(let failure):
            return IdentityLoginRefusal(message: failure.description)
        }
    }
}
