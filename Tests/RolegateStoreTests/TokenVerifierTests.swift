import Foundation
import RolegateCore
import RolegateStore
import RolegateTestSupport
import RolegateTokens
import Testing

@Suite(.ownThreads) struct TokenVerifierTests {
    /// A SCRAM login reads its candidates at client-first and proves one at client-final, maybe
    /// seconds later: admission checks the token as it is then, not the copy read at the start.
    @Test(arguments: Backend.allCases)
    func admissionChecksTheTokenAsItIsNowNotTheCopyReadWhenTheLoginBegan(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let issued = try await service(store).issue(service: "dash", ttl: .seconds(600), note: nil)
            // A staleness bound no loaded machine reaches: memory stays current between the steps.
            let verifier = TokenVerifier(store: store, policy: storePolicy, maxStaleness: .seconds(120))
            try await verifier.refresh()
            try await verifier.refresh()
            let candidates = try #require(try await verifier.scramCandidates(service: "dash").get())
            let copy = try #require(candidates.first { $0.id == issued.record.id })
            #expect((try? verifier.admitFromMemory(copy)?.get()) != nil, "memory holds the token: answered there")

            _ = try await service(store).revoke(id: issued.record.id, reason: "test")
            // Before the feed is read, memory may still answer from what it knew; once it is read
            // (at most maxStaleness later), the copy is refused, from memory or from the store.
            try await verifier.refresh()
            let fromMemory = verifier.admitFromMemory(copy)
            #expect(fromMemory == nil || fromMemory == .failure(.revoked), "\(String(describing: fromMemory))")
            #expect(await verifier.admitCurrent(copy) == .failure(.revoked))

            // Expired at admission time, whatever the copy says.
            let short = try await service(store).issue(service: "dash", ttl: .seconds(60), note: nil)
            #expect(
                await verifier.admitCurrent(short.record, now: short.record.expiresAt.addingTimeInterval(1))
                    == .failure(.expired))
            // A token the store does not have is refused, not admitted from the copy.
            var unknown = short.record
            unknown.id = String(repeating: "z", count: unknown.id.count)
            #expect(await verifier.admitCurrent(unknown) == .failure(.unknown))
        }
    }

    @Test(arguments: Backend.allCases)
    func verifiesAndRefusesWithTypedFailures(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let issued = try await service(store).issue(service: "dash", ttl: .seconds(60), note: nil)
            let verifier = TokenVerifier(store: store, policy: storePolicy)
            // Checked at a given instant within the token's minute: a loaded CI machine can take longer.
            let during = issued.record.issuedAt.addingTimeInterval(1)
            let ok = try await verifier.verify(issued.token, now: during).get()
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

            #expect(
                await verifier.verify(issued.token, now: issued.record.issuedAt.addingTimeInterval(61))
                    == .failure(.expired))

            // The service leaves the policy: its token stops working.
            let without = try PolicyLoader.parse(
                text: """
                    version: 1
                    databases: {app: {url: "postgres://admin@127.0.0.1/app"}}
                    roles: {reader: {grants: []}}
                    services: {other: {role: reader}}
                    """, file: "p.yaml", environment: [:])
            verifier.updatePolicy(without)
            #expect(await verifier.verify(issued.token, now: during) == .failure(.serviceUnknown))
            verifier.updatePolicy(storePolicy)
            let back = await verifier.verify(issued.token, now: during)
            #expect((try? back.get()) != nil, "\(back)")
        }
    }

    @Test(arguments: Backend.allCases)
    func bothTokensWorkDuringTheGraceWindow(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            // Named instants, as above: the service's grace is one minute.
            let start = Date().wholeMilliseconds
            let old = try await service(store).issue(service: "api", ttl: nil, note: nil, now: start)
            let new = try await service(store).rotate(service: "api", grace: nil, ttl: nil, note: nil, now: start)
            let verifier = TokenVerifier(store: store, policy: storePolicy)
            let during = start.addingTimeInterval(59)
            #expect((try? await verifier.verify(old.token, now: during).get()) != nil)
            #expect((try? await verifier.verify(new.token, now: during).get()) != nil)
            #expect(await verifier.verify(old.token, now: start.addingTimeInterval(61)) == .failure(.expired))
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

    /// A token issued before the format shrank from 80 to 64 characters keeps working (as a
    /// bearer token and as a rotation's outgoing token beside a new one) until it expires.
    @Test(arguments: Backend.allCases)
    func aTokenOfTheEarlierFormatStillVerifies(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let id = TokenFormat.generate().id
            let body = TokenFormat.prefix + id + "_" + String(repeating: "k7", count: 26)
            let earlier = body + TokenFormat.checksumForTests(body)
            #expect(earlier.count == TokenFormat.earlierLength && earlier.count == 80)
            let salt = try await store.serviceSalt("api", proposed: Array(repeating: 9, count: 16))
            let now = Date().wholeMilliseconds
            let record = TokenRecord(
                id: id, service: "api", role: "writer", issuedAt: now, expiresAt: now.addingTimeInterval(600),
                issuer: "test", note: nil, secret: TokenSecret(token: earlier, salt: salt))
            try await store.insertToken(record, exclusive: true, now: now)
            let verifier = TokenVerifier(store: store, policy: storePolicy)
            #expect(try await verifier.verify(earlier, now: now).get().tokenID == id)

            // The rotation and the checks name their instants: a loaded machine can take longer
            // than the grace window between two steps of this test.
            let rotatedAt = now.addingTimeInterval(1)
            let new = try await service(store).rotate(
                service: "api", grace: .seconds(30), ttl: nil, note: nil, now: rotatedAt)
            try await verifier.refresh()  // reads the rotation (the cache still has the 600 s expiry)
            let duringGrace = rotatedAt.addingTimeInterval(29)
            #expect(new.token.count == TokenFormat.length)
            #expect(try await verifier.verify(new.token, now: duringGrace).get().tokenID == new.record.id)
            #expect(try await verifier.verify(earlier, now: duringGrace).get().tokenID == id)
            #expect(await verifier.verify(earlier, now: rotatedAt.addingTimeInterval(31)) == .failure(.expired))
            // Both answer the service's one SCRAM challenge (one salt, one round count).
            let candidates = try #require(try await verifier.scramCandidates(service: "api", fresh: true).get())
            #expect(Set(candidates.map(\.id)) == [id, new.record.id])
            #expect(Set(candidates.map(\.secret.scram.salt)).count == 1)
        }
    }

    /// Every successful check is a use; the next ``TokenVerifier/writeUses()`` writes each token's
    /// latest one to the store (bearer checks from the cache and SCRAM logins' `admit` alike). Failed checks are not uses.
    @Test(arguments: Backend.allCases)
    func theLatestUseOfEachTokenReachesTheStore(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let dash = try await service(store).issue(service: "dash", ttl: nil, note: nil)
            let api = try await service(store).issue(service: "api", ttl: nil, note: nil)
            let verifier = TokenVerifier(store: store, policy: storePolicy)
            let start = Date().wholeMilliseconds
            #expect((try? await verifier.verify(dash.token, now: start).get()) != nil)  // read from the store
            #expect((try? await verifier.verify(dash.token, now: start.addingTimeInterval(2)).get()) != nil)
            #expect(
                await verifier.verify(forge(id: dash.record.id), now: start.addingTimeInterval(3)) == .failure(.unknown)
            )
            #expect((try? await verifier.admitCurrent(api.record, now: start.addingTimeInterval(4)).get()) != nil)
            // Reading the feed writes nothing; writing the uses does.
            try await verifier.refresh()
            #expect(try await store.token(id: dash.record.id)?.lastUsedAt == nil)
            await verifier.writeUses()
            #expect(try await store.token(id: dash.record.id)?.lastUsedAt == start.addingTimeInterval(2))
            #expect(try await store.token(id: api.record.id)?.lastUsedAt == start.addingTimeInterval(4))

            // Uses after a write are written by the next one, and only they.
            #expect((try? await verifier.verify(dash.token, now: start.addingTimeInterval(5)).get()) != nil)
            await verifier.writeUses()
            #expect(try await store.token(id: dash.record.id)?.lastUsedAt == start.addingTimeInterval(5))
            #expect(try await store.token(id: api.record.id)?.lastUsedAt == start.addingTimeInterval(4))
        }
    }

    /// Wire logins ask memory first (on the event loop): it answers only while the cache is
    /// current and holds the service, and never for a service it has not loaded.
    @Test func scramCandidatesComeFromMemoryOnlyWhileCurrent() async throws {
        try await withStore(.sqlite) { store, _ in
            let issued = try await service(store).issue(service: "dash", ttl: nil, note: nil)
            let verifier = TokenVerifier(store: store, policy: storePolicy, maxStaleness: .seconds(60))
            #expect(verifier.scramCandidatesFromMemory(service: "dash") == nil)  // nothing read yet
            let loaded = try #require(try await verifier.scramCandidates(service: "dash").get())
            #expect(loaded.map(\.id) == [issued.record.id])
            #expect(verifier.scramCandidatesFromMemory(service: "dash") == .success(loaded))
            #expect(verifier.scramCandidatesFromMemory(service: "api") == nil)  // not loaded
            #expect(verifier.scramCandidatesFromMemory(service: "nobody") == .success(nil))  // not in the policy

            // Once the cache is older than the staleness bound, the store decides.
            let strict = TokenVerifier(store: store, policy: storePolicy, maxStaleness: .milliseconds(50))
            #expect(try await strict.scramCandidates(service: "dash").get()?.count == 1)
            try await Task.sleep(for: .milliseconds(100))
            #expect(strict.scramCandidatesFromMemory(service: "dash") == nil)
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
