public import Foundation
public import RolegateCore
public import RolegateStore

/// Issues, rotates and revokes tokens under the policy's rules: the service must be in
/// the policy, the lifetime within its cap, one live token per service.
public struct TokenService: Sendable {
    public let store: any Store
    public let policy: Policy
    /// Who is acting, recorded on each token (e.g. `cli:alice@build-7`).
    public let issuer: String
    /// Receives an audit event for every token issued, rotated or revoked (after it is stored).
    public let audit: (@Sendable ([AuditEvent]) async -> Void)?

    public init(
        store: any Store, policy: Policy, issuer: String, audit: (@Sendable ([AuditEvent]) async -> Void)? = nil
    ) {
        self.store = store
        self.policy = policy
        self.issuer = issuer
        self.audit = audit
    }

    private func event(_ action: String, _ token: TokenRecord, at: Date, detail: [String: String] = [:]) -> AuditEvent {
        var detail = detail
        detail["by"] = issuer
        if let subject = token.subject { detail["subject"] = subject }
        return AuditEvent(
            at: at, kind: .token, action: action, service: token.service, tokenID: token.id, role: token.role,
            detail: detail)
    }

    /// Why a request was not carried out.
    public enum Failure: Error, Sendable, CustomStringConvertible {
        /// The policy says no (unknown service, lifetime over the cap, a live token exists).
        case refused(String)
        /// No such token.
        case notFound(String)
        /// The identity token was already exchanged for a token that was revoked since.
        case identityRevoked(String)
        /// The store failed.
        case store(StoreError)

        public var description: String {
            switch self {
            case .refused(let message), .notFound(let message), .identityRevoked(let message): message
            case .store(let error): error.description
            }
        }
    }

    /// A token as handed out: the only time its secret exists outside the client.
    public struct Issued: Sendable {
        public var token: String
        public var record: TokenRecord
        /// Tokens a rotation moved into their grace window (or ended).
        public var superseded: [TokenRecord]
    }

    public func issue(
        service name: String, ttl: Duration?, note: String?, now: Date = Date()
    ) async throws(Failure)
        -> Issued
    {
        let (service, record, token) = try await prepare(service: name, ttl: ttl, note: note, now: now)
        do {
            try await store.insertToken(record, exclusive: true, now: record.issuedAt)
        } catch .serviceHasLiveToken(let id) {
            throw .refused(
                "service \(service.name) already has a live token (\(id)); use 'rolegate token rotate \(service.name)' to replace it"
            )
        } catch {
            throw .store(error)
        }
        await audit?([event("issued", record, at: record.issuedAt, detail: ["expires_at": record.expiresAt.rfc3339])])
        return Issued(token: token, record: record, superseded: [])
    }

    public func rotate(
        service name: String, grace: Duration?, ttl: Duration?, note: String?, now: Date = Date()
    )
        async throws(Failure) -> Issued
    {
        let (service, record, token) = try await prepare(service: name, ttl: ttl, note: note, now: now)
        let grace = grace ?? service.grace
        guard grace >= .zero else { throw .refused("--grace cannot be negative") }
        guard grace <= service.maxGrace else {
            throw .refused(
                "--grace \(DurationText.format(grace)) is longer than service \(service.name)'s max_grace \(DurationText.format(service.maxGrace))"
            )
        }
        do {
            let superseded = try await store.rotate(
                to: record, graceUntil: record.issuedAt.addingTimeInterval(grace.timeInterval), now: record.issuedAt)
            await audit?(
                superseded.map {
                    self.event(
                        "rotated", $0, at: record.issuedAt,
                        detail: ["superseded_by": record.id, "grace_until": $0.expiresAt.rfc3339])
                } + [event("issued", record, at: record.issuedAt, detail: ["expires_at": record.expiresAt.rfc3339])])
            return Issued(token: token, record: record, superseded: superseded)
        } catch {
            throw .store(error)
        }
    }

    /// Issues the token a verified identity is entitled to (``IdentityGrant``): bound to its
    /// subject, one live token per subject (the subject's previous token keeps working for the
    /// grace), at most `maxLive` subjects per login.
    public func exchange(_ grant: IdentityGrant, now: Date = Date()) async throws(Failure) -> Issued {
        let (salt, iterations): ([UInt8], Int)
        do {
            (salt, iterations) = try await store.newTokenSCRAM(
                login: grant.login, fallback: grant.scramIterations, now: now)
        } catch {
            throw .store(error)
        }
        let (id, token) = TokenFormat.generate()
        let issuedAt = now.wholeMilliseconds
        var record = TokenRecord(
            id: id, service: grant.login, role: grant.role, issuedAt: issuedAt,
            expiresAt: issuedAt.addingTimeInterval(grant.ttl.timeInterval).wholeMilliseconds, issuer: issuer,
            note: "exchanged via \(grant.trust) (\(grant.source))", subject: grant.subject, grant: grant.grant,
            identityDigest: grant.identityDigest, secret: TokenSecret(token: token, salt: salt, iterations: iterations))
        record.groups = grant.groups
        let superseded: [TokenRecord]
        do {
            superseded = try await store.exchange(
                to: record, graceUntil: issuedAt.addingTimeInterval(grant.grace.timeInterval), maxLive: grant.maxLive,
                now: issuedAt)
        } catch .identityRevoked(let at) {
            throw .identityRevoked(StoreError.identityRevoked(at: at).description)
        } catch .tooManyLiveTokens(let limit) {
            throw .refused(
                "\(grant.source) already has \(limit) subjects holding a live token (max_live_tokens); revoke some (rolegate token revoke --subject S) or raise the limit"
            )
        } catch {
            throw .store(error)
        }
        var detail = ["expires_at": record.expiresAt.rfc3339, "trust": grant.trust, "granted_by": grant.source]
        if let group = grant.grant { detail["grant"] = group }
        await audit?(
            superseded.map {
                self.event(
                    "rotated", $0, at: issuedAt,
                    detail: ["superseded_by": record.id, "grace_until": $0.expiresAt.rfc3339])
            } + [event("exchanged", record, at: issuedAt, detail: detail)])
        return Issued(token: token, record: record, superseded: superseded)
    }

    /// Revokes every usable token exchanged for `subject` (of one service or person when given).
    public func revokeAll(
        subject: String, service: String?, reason: String?, now: Date = Date()
    ) async throws(Failure)
        -> [TokenRecord]
    {
        let revoked: [TokenRecord]
        do {
            revoked = try await store.revokeAll(
                subject: subject, service: service, reason: reason, now: now.wholeMilliseconds)
        } catch {
            throw .store(error)
        }
        await audit?(revoked.map { event("revoked", $0, at: now, detail: ["reason": reason ?? ""]) })
        return revoked
    }

    public func revoke(id: String, reason: String?, now: Date = Date()) async throws(Failure) -> TokenRecord {
        let found: TokenRecord?
        do {
            found = try await store.revoke(id: id, reason: reason, now: now.wholeMilliseconds)
        } catch {
            throw .store(error)
        }
        guard let found else { throw .notFound("no token with id \(id)") }
        await audit?([event("revoked", found, at: now, detail: ["reason": reason ?? ""])])
        return found
    }

    public func revokeAll(service: String, reason: String?, now: Date = Date()) async throws(Failure) -> [TokenRecord] {
        let revoked: [TokenRecord]
        do {
            revoked = try await store.revokeAll(service: service, reason: reason, now: now.wholeMilliseconds)
        } catch {
            throw .store(error)
        }
        await audit?(revoked.map { event("revoked", $0, at: now, detail: ["reason": reason ?? ""]) })
        return revoked
    }

    /// Checks the request against the policy and derives the new token and its record.
    private func prepare(
        service name: String, ttl: Duration?, note: String?, now: Date
    ) async throws(Failure) -> (
        ServiceSpec, TokenRecord, String
    ) {
        guard let service = policy.service(named: name) else {
            let known = policy.services.map(\.name).joined(separator: ", ")
            throw .refused("service \(name) is not in the policy (services: \(known.isEmpty ? "none" : known))")
        }
        if let identity = service.identity {
            throw .refused(
                "service \(name) gets its tokens only by exchanging an identity token from trust \(identity.trust) (POST /v1/auth/exchange, rolegate token exchange); none is issued by hand"
            )
        }
        let ttl = ttl ?? service.tokenTTL
        guard ttl > .zero else { throw .refused("--ttl must be longer than zero: every token expires") }
        guard ttl <= service.maxTokenTTL else {
            throw .refused(
                "--ttl \(DurationText.format(ttl)) is longer than service \(name)'s max_token_ttl \(DurationText.format(service.maxTokenTTL))"
            )
        }
        let (salt, iterations): ([UInt8], Int)
        do {
            (salt, iterations) = try await store.newTokenSCRAM(login: name, fallback: service.scramIterations, now: now)
        } catch {
            throw .store(error)
        }
        let (id, token) = TokenFormat.generate()
        let issuedAt = now.wholeMilliseconds
        let record = TokenRecord(
            id: id, service: name, role: service.role, issuedAt: issuedAt,
            expiresAt: issuedAt.addingTimeInterval(ttl.timeInterval).wholeMilliseconds, issuer: issuer, note: note,
            secret: TokenSecret(token: token, salt: salt, iterations: iterations))
        return (service, record, token)
    }
}

extension Store {
    /// The SCRAM salt a new token of `login` takes (the one all its tokens share, made on first
    /// use) and its round count: a SCRAM exchange announces one count for all of a login's usable
    /// tokens (a grace keeps two; a person may hold an elevated one beside their own), so a new
    /// token takes theirs, `fallback` (the policy's) when there are none.
    func newTokenSCRAM(login: String, fallback: Int, now: Date) async throws(StoreError) -> ([UInt8], Int) {
        let salt = try await serviceSalt(login, proposed: TokenFormat.randomSalt())
        let usable = try await loginCandidates(service: login, now: now).first { $0.isUsable(at: now) }
        return (salt, usable?.secret.scram.iterations ?? fallback)
    }
}

extension TokenFormat {
    /// 16 random bytes for a service's SCRAM salt.
    static func randomSalt() -> [UInt8] {
        SecureRandom.bytes(16)
    }
}
