import Foundation
import RolegateCore
import RolegateStore
import RolegateTestSupport
import RolegateTokens
import Testing

/// Exchanged tokens in both stores: one live token per subject (the previous one in its
/// grace), at most `maxLive` subjects, no second exchange of an identity token whose token was
/// revoked, and revocation by subject.
@Suite(.ownThreads) struct ExchangedTokenStoreTests {
    static func grant(_ subject: String, digest: String? = nil, maxLive: Int = 2) -> IdentityGrant {
        var grant = IdentityGrant(
            login: "dash", role: "reader", subject: subject, trust: "github", source: "service dash",
            ttl: .seconds(900), grace: .seconds(60), maxLive: maxLive, scramIterations: 16)
        grant.identityDigest = digest
        return grant
    }

    @Test(arguments: Backend.allCases)
    func oneLiveTokenPerSubjectAndAtMostMaxLiveSubjects(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let tokens = service(store)
            let now = Date()
            let first = try await tokens.exchange(Self.grant("repo:a"), now: now)
            let second = try await tokens.exchange(Self.grant("repo:a"), now: now + 1)
            #expect(second.superseded.map(\.id) == [first.record.id])
            let old = try #require(try await store.token(id: first.record.id))
            #expect(old.state(at: now + 2) == .grace && old.expiresAt <= now + 62)
            // A second subject: its own live token; a third is over maxLive (2).
            let other = try await tokens.exchange(Self.grant("repo:b"), now: now + 2)
            #expect(other.superseded.isEmpty && other.record.subject == "repo:b")
            await #expect(throws: TokenService.Failure.self) {
                _ = try await tokens.exchange(Self.grant("repo:c"), now: now + 3)
            }
            // Revoking a subject ends its usable tokens (live and in grace), not the other subject's.
            let revoked = try await tokens.revokeAll(subject: "repo:a", service: nil, reason: "gone", now: now + 4)
            #expect(Set(revoked.map(\.id)) == [first.record.id, second.record.id])
            #expect(try await store.token(id: other.record.id)?.revokedAt == nil)
            // With repo:a's tokens revoked, repo:c fits.
            _ = try await tokens.exchange(Self.grant("repo:c"), now: now + 5)
            // The login candidates: the service's tokens, newest first.
            let candidates = try await store.loginCandidates(service: "dash", now: now + 6)
            #expect(candidates.count == 4 && candidates.first?.subject == "repo:c")
        }
    }

    /// A person's console login (issuer `console:…`) and their terminal's token stand side by
    /// side: neither takes the other's place, and together they are one subject of `maxLive`.
    @Test(arguments: Backend.allCases)
    func aConsoleLoginKeepsItsOwnPlaceBesideTheTerminalsToken(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let terminal = TokenService(store: store, policy: storePolicy, issuer: "exchange:http")
            let console = TokenService(
                store: store, policy: storePolicy, issuer: TokenRecord.consoleIssuerPrefix + "oidc@127.0.0.1")
            let now = Date()
            let cli = try await terminal.exchange(Self.grant("alice", maxLive: 2), now: now)
            let page = try await console.exchange(Self.grant("alice", maxLive: 2), now: now + 1)
            #expect(page.superseded.isEmpty && page.record.isConsoleLogin && !cli.record.isConsoleLogin)
            #expect(try await store.token(id: cli.record.id)?.state(at: now + 120) == .live)
            // Logging in to the console again replaces only the console's token.
            let again = try await console.exchange(Self.grant("alice", maxLive: 2), now: now + 2)
            #expect(again.superseded.map(\.id) == [page.record.id])
            // alice is one subject, with two tokens: bob fits under maxLive 2, carol does not.
            _ = try await terminal.exchange(Self.grant("bob", maxLive: 2), now: now + 3)
            await #expect(throws: TokenService.Failure.self) {
                _ = try await terminal.exchange(Self.grant("carol", maxLive: 2), now: now + 4)
            }
            // Revoking the subject ends both of alice's tokens.
            let revoked = try await terminal.revokeAll(subject: "alice", service: nil, reason: "left", now: now + 5)
            #expect(Set(revoked.map(\.id)).isSuperset(of: [cli.record.id, again.record.id]))
        }
    }

    @Test(arguments: Backend.allCases)
    func anIdentityTokenWhoseTokenWasRevokedCannotBeExchangedAgain(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let tokens = service(store)
            let issued = try await tokens.exchange(Self.grant("repo:a", digest: "d1"))
            #expect(try await store.token(id: issued.record.id)?.identityDigest == "d1")
            // Exchanging it again is allowed while its token stands (a job that retries) …
            _ = try await tokens.exchange(Self.grant("repo:a", digest: "d1"))
            _ = try await tokens.revoke(id: issued.record.id, reason: "leaked")
            // … but not once one of its tokens was revoked.
            do {
                _ = try await tokens.exchange(Self.grant("repo:a", digest: "d1"))
                Issue.record("a revoked identity token was exchanged again")
            } catch {
                guard case .identityRevoked(let message)? = error as? TokenService.Failure else {
                    Issue.record("unexpected \(error)")
                    return
                }
                #expect(message.contains("cannot be exchanged again"))
            }
            // Another identity token of the same subject still works.
            _ = try await tokens.exchange(Self.grant("repo:a", digest: "d2"))
        }
    }

    @Test func aServiceWithIdentityGetsNoTokenByHand() async throws {
        let policy = try PolicyLoader.parse(
            text: """
                version: 1
                databases: {app: {url: "postgres://admin@127.0.0.1/app"}}
                roles: {migrator: {}}
                trust: {github: {issuer: "https://token.actions.githubusercontent.com", audiences: [x]}}
                services:
                  deploy-bot: {role: migrator, identity: {trust: github, claims: {repository: acme/billing}}}
                """, file: "p.yaml", environment: [:])
        try await withStore(.sqlite) { store, _ in
            do {
                _ = try await service(store, policy: policy).issue(service: "deploy-bot", ttl: nil, note: nil)
                Issue.record("a token was issued by hand for a service with identity:")
            } catch {
                #expect("\(error)".contains("only by exchanging an identity token from trust github"))
            }
        }
    }
}
