import Foundation
import RolegateCore
import RolegateStore
import RolegateTestSupport
import RolegateTokens
import Testing

@Suite struct TokenVerifierTests {
    @Test(arguments: Backend.allCases)
    func verifiesAndRefusesWithTypedFailures(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let issued = try await service(store).issue(service: "dash", ttl: .seconds(60), note: nil)
            let verifier = TokenVerifier(store: store, policy: storePolicy)
            let ok = try await verifier.verify(issued.token).get()
            #expect(ok.tokenID == issued.record.id && ok.role == "reader" && ok.service == "dash")

            var chars = Array(issued.token)
            chars[40] = chars[40] == "a" ? "b" : "a"
            #expect(await verifier.verify(String(chars)) == .failure(.malformed(.badChecksum)))
            #expect(await verifier.verify("Bearer nonsense") == .failure(.malformed(.wrongPrefix)))

            // Right checksum, unknown id; right id, wrong secret: the same answer.
            let (_, stranger) = TokenFormat.generate()
            #expect(await verifier.verify(stranger) == .failure(.unknown))
            let forged = forge(id: issued.record.id)
            #expect(await verifier.verify(forged) == .failure(.unknown))

            #expect(await verifier.verify(issued.token, now: Date().addingTimeInterval(61)) == .failure(.expired))

            // The service leaves the policy: its token stops working.
            let without = try PolicyLoader.parse(
                text: """
                    version: 1
                    databases: {app: {url: "postgres://admin@127.0.0.1/app"}}
                    roles: {reader: {grants: []}}
                    services: {other: {role: reader}}
                    """, file: "p.yaml", environment: [:])
            verifier.updatePolicy(without)
            #expect(await verifier.verify(issued.token) == .failure(.serviceUnknown))
            verifier.updatePolicy(storePolicy)
            #expect((try? await verifier.verify(issued.token).get()) != nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func bothTokensWorkDuringTheGraceWindow(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let old = try await service(store).issue(service: "api", ttl: nil, note: nil)
            let new = try await service(store).rotate(service: "api", grace: nil, ttl: nil, note: nil)
            let verifier = TokenVerifier(store: store, policy: storePolicy)
            #expect((try? await verifier.verify(old.token).get()) != nil)
            #expect((try? await verifier.verify(new.token).get()) != nil)
            #expect(await verifier.verify(old.token, now: Date().addingTimeInterval(61)) == .failure(.expired))
        }
    }

    /// A revocation made through another connection (as another process would) reaches a
    /// verifier that has the token cached within its one-second bound.
    @Test(arguments: Backend.allCases)
    func revocationElsewhereIsSeenWithinOneSecond(backend: Backend) async throws {
        try await withStore(backend) { store, location in
            let issued = try await service(store).issue(service: "dash", ttl: nil, note: nil)
            let verifier = TokenVerifier(store: store, policy: storePolicy)
            let poller = Task { await verifier.run() }
            defer { poller.cancel() }
            #expect((try? await verifier.verify(issued.token).get()) != nil)  // now cached

            let other = try await location.open()
            _ = try await service(other).revoke(id: issued.record.id, reason: "elsewhere")
            let committed = ContinuousClock().now
            await other.close()
            let seen = try await awaitRevocation(of: issued.token, by: verifier, committed: committed)
            #expect(seen.violation == nil, "\(seen.violation ?? "")")
        }
    }

    @Test func failsClosedWhenTheStoreIsGone() async throws {
        let location = try Backend.sqlite.freshLocation()
        let store = try await location.open()
        let issued = try await service(store).issue(service: "dash", ttl: nil, note: nil)
        let verifier = TokenVerifier(store: store, policy: storePolicy, maxStaleness: .milliseconds(100))
        #expect((try? await verifier.verify(issued.token).get()) != nil)
        await store.close()
        try await Task.sleep(for: .milliseconds(150))
        #expect(await verifier.verify(issued.token) == .failure(.unavailable))
    }
}

/// A well-formed token (valid checksum) with `id` and a random secret.
func forge(id: String) -> String {
    let (_, random) = TokenFormat.generate()
    let secret = random.dropFirst(TokenFormat.prefix.count + TokenFormat.idLength + 1).dropLast(
        TokenFormat.checksumLength)
    let body = TokenFormat.prefix + id + "_" + secret
    return body + TokenFormat.checksumForTests(body)
}
