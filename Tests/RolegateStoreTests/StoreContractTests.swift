import Foundation
import RolegateCore
import RolegateStore
import RolegateTestSupport
import RolegateTokens
import Synchronization
import Testing

let storePolicyText = """
    version: 1
    databases: {app: {url: "postgres://admin@127.0.0.1/app"}}
    roles:
      reader: {grants: []}
      writer: {grants: []}
    services:
      dash: {role: reader, token_ttl: 1h, max_token_ttl: 2h}
      api: {role: writer, token_ttl: 15m, grace: 1m, max_grace: 10m}
    """
let storePolicy = try! PolicyLoader.parse(text: storePolicyText, file: "p.yaml", environment: [:])

/// Opens a fresh store of `backend`, runs `body`, closes it.
func withStore(_ backend: Backend, _ body: (any Store, StoreLocation) async throws -> Void) async throws {
    let location = try backend.freshLocation()
    let store = try await location.open()
    do {
        try await body(store, location)
        await store.close()
    } catch {
        await store.close()
        throw error
    }
}

func service(_ store: any Store, policy: Policy = storePolicy) -> TokenService {
    TokenService(store: store, policy: policy, issuer: "test")
}

/// The contract every store fulfils, run against SQLite and PostgreSQL alike.
@Suite(.ownThreads) struct StoreContractTests {
    /// A store refuses work once closed: a task still running at shutdown (the token verifier's
    /// last write of uses) gets an error, where the PostgreSQL store used to reconnect and leave
    /// a connection nobody closed.
    @Test(arguments: Backend.allCases)
    func aClosedStoreRefusesWorkInsteadOfReconnecting(backend: Backend) async throws {
        let location = try backend.freshLocation()
        let store = try await location.open()
        let issued = try await service(store).issue(service: "dash", ttl: nil, note: nil)
        await store.close()
        // When the store was closed, by the server's clock (a connection opened after it is the bug).
        let closedAt: String? =
            if case .postgres(let url) = location {
                try Backend.cluster.get().psql(
                    "SELECT clock_timestamp()", database: Self.database(url)
                ).trimmingCharacters(in: .whitespacesAndNewlines)
            } else { nil }
        await #expect(throws: StoreError.self) { _ = try await store.token(id: issued.record.id) }
        await #expect(throws: StoreError.self) { try await store.recordUse([issued.record.id: Date()]) }
        if case .postgres(let url) = location, let closedAt {
            let opened = try Backend.cluster.get().psql(
                """
                SELECT count(*) FROM pg_stat_activity WHERE datname = '\(Self.database(url))'
                AND application_name LIKE 'rolegate-store%' AND backend_start > '\(closedAt)'
                """
            ).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(opened == "0", "store connections opened after close: \(opened)")
        }
    }

    /// A store connection the server ends (a DBA's pg_terminate_backend, a failover) fails the
    /// operation using it, and the next operation reconnects: nothing waits for ever.
    @Test func aConnectionTheServerEndsFailsItsOperationAndTheNextReconnects() async throws {
        let location = try Backend.postgres.freshLocation()
        guard case .postgres(let url) = location else { return }
        let store = try await location.open()
        defer { Task { await store.close() } }
        let cluster = try Backend.cluster.get()
        let database = Self.database(url)
        _ = try await service(store).issue(service: "dash", ttl: nil, note: nil)
        for round in 0..<5 {
            _ = try cluster.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'rolegate-store%'",
                database: database)
            // Each kind of work: the first use of a dead connection may fail, never hang. (Polled,
            // not awaited: a hung operation must fail this test, not hang it.)
            let done = Atomic<Bool>(false)
            Task {
                for _ in 0..<3 {
                    _ = try? await store.tokens(service: "dash")
                    _ = try? await store.appendAudit(
                        [AuditEvent(kind: .session, action: "start", service: "dash")], instance: "killed")
                    _ = try? await store.revoke(id: "nosuchtoken", reason: nil, now: Date())
                }
                done.store(true, ordering: .sequentiallyConsistent)
            }
            var outcome = false
            for _ in 0..<200 where !outcome {
                try await Task.sleep(for: .milliseconds(100))
                outcome = done.load(ordering: .sequentiallyConsistent)
            }
            #expect(outcome, "round \(round): a store operation hung after its connection was ended")
            // And afterwards every kind works again.
            #expect(try await store.tokens(service: "dash").count == 1)
        }
        // Ended while operations are in flight (mid-transaction, between a check and a write).
        let done = Atomic<Bool>(false)
        Task {
            for _ in 0..<150 {
                _ = try? await store.revoke(id: "nosuchtoken", reason: nil, now: Date())
                _ = try? await store.appendAudit(
                    [AuditEvent(kind: .session, action: "start", service: "dash")], instance: "killed")
                _ = try? await store.tokens(service: "dash")
            }
            done.store(true, ordering: .sequentiallyConsistent)
        }
        for _ in 0..<10 {
            _ = try? cluster.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'rolegate-store%'",
                database: database)
            try await Task.sleep(for: .milliseconds(30))
        }
        var finished = false
        for _ in 0..<600 where !finished {
            try await Task.sleep(for: .milliseconds(100))
            finished = done.load(ordering: .sequentiallyConsistent)
        }
        #expect(finished, "store operations hung after their connections were ended mid-flight")
        #expect(try await store.tokens(service: "dash").count == 1)
    }

    /// The PostgreSQL store gives reads and audit appends connections of their own: a write
    /// transaction waiting for the store-wide writer lock (held here by another session, as
    /// another instance's slow write would) holds up neither a token read nor an audit append.
    @Test func readsAndAuditAppendsDoNotQueueBehindAWaitingWrite() async throws {
        let location = try Backend.postgres.freshLocation()
        guard case .postgres(let url) = location else { return }
        let store = try await location.open()
        defer { Task { await store.close() } }
        let issued = try await service(store).issue(service: "dash", ttl: nil, note: nil)
        let cluster = try Backend.cluster.get()
        let database = Self.database(url)
        // Another session holds the writers' advisory lock until this test ends it (a fixed hold
        // ran out on a loaded machine before the read below, which then saw the committed write).
        let holderName = "lock-holder-" + database
        let holder = Task {
            try await cluster.psqlDetached(
                """
                SET application_name TO '\(holderName)';
                SELECT pg_advisory_lock(\(0x726F_6C65_6761_7465)); SELECT pg_sleep(60);
                """, database: database)
        }
        defer { holder.cancel() }
        for _ in 0..<100 {
            let held = try cluster.psql(
                """
                SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = '\(holderName)'
                """, database: database)
            if held.trimmingCharacters(in: .whitespacesAndNewlines) != "0" { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let revocation = Task { try await store.revoke(id: issued.record.id, reason: "test", now: Date()) }
        try await Task.sleep(for: .milliseconds(200))  // the revocation now waits for the lock
        let read = try await store.token(id: issued.record.id)
        #expect(read?.revokedAt == nil, "the read saw the revocation: it waited for the write")
        let appended = try await store.appendAudit(
            [AuditEvent(kind: .session, action: "start", service: "dash")], instance: "lanes")
        #expect(appended.count == 1)
        // Only once the lock is released does the revocation commit.
        // Only this test's holder: other tests' stores share the cluster (and hold the same lock in
        // their own databases).
        _ = try cluster.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(holderName)'",
            database: database)
        #expect(try await revocation.value?.revokedAt != nil)
        _ = try? await holder.value
    }

    /// The database name in a PostgreSQL store's URL.
    static func database(_ url: String) -> String {
        String(url.split(separator: "/").last!.split(separator: "?").first!)
    }

    @Test(arguments: Backend.allCases)
    func migratesAndReopens(backend: Backend) async throws {
        let location = try backend.freshLocation()
        let store = try await location.open()
        #expect(try await store.schemaVersion() == 5)
        let issued = try await service(store).issue(service: "dash", ttl: nil, note: "first")
        await store.close()
        let again = try await location.open()
        #expect(try await again.schemaVersion() == 5)
        #expect(try await again.token(id: issued.record.id) == issued.record)
        await again.close()
    }

    @Test(arguments: Backend.allCases)
    func gatewayInstancesGetDistinctCancelTagsKeptAcrossRestarts(backend: Backend) async throws {
        let location = try backend.freshLocation()
        let store = try await location.open()
        defer { Task { await store.close() } }
        let now = Date()
        let a = try await store.registerInstance(
            id: "gw-a", wireAddress: "10.0.0.1:6432", httpAddress: "10.0.0.1:8080", now: now, staleAfter: .seconds(60))
        let b = try await store.registerInstance(
            id: "gw-b", wireAddress: "10.0.0.2:6432", httpAddress: nil, now: now, staleAfter: .seconds(60))
        #expect(a.cancelTag == 1 && b.cancelTag == 2)
        // A restart keeps the tag (cancel keys handed out before it stay routable).
        let again = try await store.registerInstance(
            id: "gw-a", wireAddress: "10.0.0.1:6433", httpAddress: nil, now: now, staleAfter: .seconds(60))
        #expect(again.cancelTag == 1)
        #expect(try await store.instances().map(\.wireAddress) == ["10.0.0.1:6433", "10.0.0.2:6432"])
        // A gone instance's tag is reused only once it is stale.
        try await store.removeInstance(id: "gw-a")
        let c = try await store.registerInstance(
            id: "gw-c", wireAddress: "10.0.0.3:6432", httpAddress: nil, now: now, staleAfter: .seconds(60))
        #expect(c.cancelTag == 1)
        let later = now.addingTimeInterval(120)
        try await store.instanceHeartbeat(id: "gw-c", now: later)
        let d = try await store.registerInstance(
            id: "gw-d", wireAddress: "10.0.0.4:6432", httpAddress: nil, now: later, staleAfter: .seconds(60))
        #expect(d.cancelTag == 2, "gw-b was not seen for two minutes: its tag is free")
        #expect(try await store.instances().map(\.id) == ["gw-c", "gw-d"])
    }

    /// PostgreSQL stores signal committed changes (LISTEN/NOTIFY) so verifiers need not wait
    /// for their next poll; SQLite stores have no signal (they are polled).
    @Test(arguments: Backend.allCases)
    func changesCommittedElsewhereAreSignalled(backend: Backend) async throws {
        let location = try backend.freshLocation()
        let listener = try await location.open()
        let writer = try await location.open()
        defer {
            Task {
                await listener.close()
                await writer.close()
            }
        }
        guard let signals = listener.changeSignals() else {
            #expect(backend == .sqlite)
            return
        }
        var iterator = signals.makeAsyncIterator()
        _ = await iterator.next()  // the catch-up signal once listening
        let revoke = Task {
            try await Task.sleep(for: .milliseconds(200))
            _ = try await service(writer).issue(service: "dash", ttl: nil, note: nil)
        }
        let signalled: Void? = await iterator.next()
        #expect(signalled != nil)
        try await revoke.value
    }

    @Test(arguments: Backend.allCases)
    func storeFromANewerVersionIsRefusedUntouched(backend: Backend) async throws {
        let location = try backend.freshLocation()
        let store = try await location.open()
        let issued = try await service(store).issue(service: "dash", ttl: nil, note: nil)
        await store.close()
        try backend.tamper(location, "UPDATE rolegate_meta SET value = '99' WHERE key = 'schema_version';")
        await #expect(throws: StoreError.tooNew(found: 99, supported: 5)) { _ = try await location.open() }
        try backend.tamper(location, "UPDATE rolegate_meta SET value = '5' WHERE key = 'schema_version';")
        let reopened = try await location.open()
        #expect(try await reopened.token(id: issued.record.id) == issued.record)
        await reopened.close()
        // A version 1 store (before the audit log and exchanged tokens) is migrated on open, its tokens kept.
        try backend.tamper(
            location,
            "DROP INDEX rolegate_tokens_by_subject; DROP INDEX rolegate_tokens_by_identity; "
                + "ALTER TABLE rolegate_tokens DROP COLUMN subject; ALTER TABLE rolegate_tokens DROP COLUMN grant_name; "
                + "ALTER TABLE rolegate_tokens DROP COLUMN identity_digest; ALTER TABLE rolegate_tokens DROP COLUMN groups_json; "
                + "ALTER TABLE rolegate_tokens DROP COLUMN access_request; DROP TABLE rolegate_access_requests; "
                + "DROP TABLE rolegate_access_decisions; DROP TABLE rolegate_webhook_deliveries; "
                + "DROP TABLE rolegate_instances; DROP TABLE rolegate_audit; DROP TABLE rolegate_audit_chains; "
                + "DROP TABLE rolegate_audit_blocks; DROP TABLE rolegate_audit_keys; "
                + (backend == .postgres ? "DROP SEQUENCE rolegate_audit_block_ids; " : "")
                + "UPDATE rolegate_meta SET value = '1' WHERE key = 'schema_version';"
        )
        let upgraded = try await location.open()
        #expect(try await upgraded.schemaVersion() == 5)
        #expect(try await upgraded.token(id: issued.record.id) == issued.record)
        #expect(try await upgraded.appendAudit([AuditEvent(kind: .auth, action: "allowed")], instance: "x").count == 1)
        #expect(try await upgraded.instances().isEmpty)
        await upgraded.close()
    }

    @Test(arguments: Backend.allCases)
    func oneLiveTokenPerService(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let tokens = service(store)
            let first = try await tokens.issue(service: "dash", ttl: nil, note: nil)
            await #expect {
                _ = try await tokens.issue(service: "dash", ttl: nil, note: nil)
            } throws: { error in
                "\(error)".contains("already has a live token (\(first.record.id))") && "\(error)".contains("rotate")
            }
            // Another service is independent.
            _ = try await tokens.issue(service: "api", ttl: nil, note: nil)
            // Once revoked, a new one may be issued.
            _ = try await tokens.revoke(id: first.record.id, reason: "test")
            let second = try await tokens.issue(service: "dash", ttl: nil, note: nil)
            #expect(second.record.id != first.record.id)
        }
    }

    @Test(arguments: Backend.allCases)
    func concurrentIssuesYieldOneToken(backend: Backend) async throws {
        let location = try backend.freshLocation()
        let stores = try await [location.open(), location.open(), location.open(), location.open()]
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for store in stores {
                group.addTask { (try? await service(store).issue(service: "dash", ttl: nil, note: nil)) != nil }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1)
        #expect(try await stores[0].tokens(service: "dash").count == 1)
        for store in stores { await store.close() }
    }

    @Test(arguments: Backend.allCases)
    func lifetimesFollowThePolicy(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let tokens = service(store)
            let now = Date()
            let issued = try await tokens.issue(service: "api", ttl: nil, note: nil, now: now)
            #expect(issued.record.expiresAt == now.wholeMilliseconds.addingTimeInterval(900).wholeMilliseconds)
            await #expect { _ = try await tokens.issue(service: "dash", ttl: .seconds(3 * 3600), note: nil) } throws: {
                "\($0)".contains("longer than service dash's max_token_ttl 2h")
            }
            await #expect { _ = try await tokens.issue(service: "nope", ttl: nil, note: nil) } throws: {
                "\($0)".contains("service nope is not in the policy")
            }
            await #expect {
                _ = try await tokens.rotate(service: "api", grace: .seconds(3600), ttl: nil, note: nil)
            } throws: {
                "\($0)".contains("max_grace")
            }
        }
    }

    @Test(arguments: Backend.allCases)
    func rotationKeepsTwoLiveTokensForTheGraceOnly(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let tokens = service(store)
            let start = Date().wholeMilliseconds
            let old = try await tokens.issue(service: "api", ttl: nil, note: nil, now: start)
            let cursor = try await store.latestChange()
            let new = try await tokens.rotate(
                service: "api", grace: nil, ttl: nil, note: nil, now: start.addingTimeInterval(10))
            #expect(new.superseded.map(\.id) == [old.record.id])
            let during = start.addingTimeInterval(30)
            let records = try await store.tokens(service: "api")
            #expect(records.filter { $0.isUsable(at: during) }.count == 2)
            let oldNow = try #require(try await store.token(id: old.record.id))
            #expect(oldNow.state(at: during) == .grace)
            #expect(oldNow.supersededBy == new.record.id)
            #expect(oldNow.expiresAt == start.addingTimeInterval(70))  // the service's grace is 1m
            let after = start.addingTimeInterval(71)
            #expect(
                try await store.tokens(service: "api").filter { $0.isUsable(at: after) }.map(\.id) == [new.record.id])
            let feed = try await store.changes(after: cursor, limit: 10)
            #expect(feed.map(\.kind) == [.rotated, .issued])
            #expect(feed.map(\.tokenID) == [old.record.id, new.record.id])

            // Rotating again ends the token already in grace: never more than two usable.
            let third = try await tokens.rotate(
                service: "api", grace: nil, ttl: nil, note: nil, now: start.addingTimeInterval(20))
            let at = start.addingTimeInterval(21)
            let usable = try await store.tokens(service: "api").filter { $0.isUsable(at: at) }.map(\.id)
            #expect(Set(usable) == [new.record.id, third.record.id])
        }
    }

    @Test(arguments: Backend.allCases)
    func revocationIsImmediateRecordedAndOnTheFeed(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let tokens = service(store)
            let issued = try await tokens.issue(service: "dash", ttl: nil, note: nil)
            let cursor = try await store.latestChange()
            let revoked = try await tokens.revoke(id: issued.record.id, reason: "leaked")
            #expect(revoked.revokeReason == "leaked")
            #expect(revoked.state(at: Date()) == .revoked)
            #expect(try await store.token(id: issued.record.id)?.revokedAt != nil)
            // Revoking again changes nothing and adds nothing to the feed.
            let again = try await tokens.revoke(id: issued.record.id, reason: "other")
            #expect(again.revokeReason == "leaked")
            let feed = try await store.changes(after: cursor, limit: 10)
            #expect(feed.map(\.kind) == [.revoked])
            #expect(feed.first?.service == "dash")
            await #expect { _ = try await tokens.revoke(id: "aaaaaaaaaaaaaaaa", reason: nil) } throws: {
                "\($0)".contains("no token with id")
            }
            // Revoke every live token of a service.
            let a = try await tokens.issue(service: "api", ttl: nil, note: nil)
            let b = try await tokens.rotate(service: "api", grace: nil, ttl: nil, note: nil)
            let all = try await tokens.revokeAll(service: "api", reason: "incident")
            #expect(Set(all.map(\.id)) == [a.record.id, b.record.id])
            #expect(try await store.tokens(service: "api").allSatisfy { $0.state(at: Date()) == .revoked })
        }
    }

    @Test(arguments: Backend.allCases)
    func onlyOneWayDerivativesAreStored(backend: Backend) async throws {
        let location = try backend.freshLocation()
        let store = try await location.open()
        var tokens: [String] = []
        tokens.append(try await service(store).issue(service: "dash", ttl: nil, note: "n").token)
        tokens.append(try await service(store).rotate(service: "dash", grace: nil, ttl: nil, note: nil).token)
        tokens.append(try await service(store).issue(service: "api", ttl: nil, note: nil).token)
        await store.close()
        let dump = try backend.dump(location)
        #expect(dump.contains("rolegate") || dump.contains("dash"))  // the dump really has the store's content
        for token in tokens {
            let secret = Array(token.dropFirst(TokenFormat.prefix.count + TokenFormat.idLength + 1))
            // No 12-character window of any secret appears anywhere.
            for start in stride(from: 0, through: secret.count - 12, by: 1) {
                let window = String(secret[start..<start + 12])
                #expect(!dump.contains(window))
            }
        }
    }

    @Test(arguments: Backend.allCases)
    func serviceSaltIsSharedAndLastUseRecorded(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let first = try await store.serviceSalt("dash", proposed: [1, 2, 3])
            let second = try await store.serviceSalt("dash", proposed: [9, 9, 9])
            #expect(first == [1, 2, 3] && second == [1, 2, 3])
            let tokens = service(store)
            let a = try await tokens.issue(service: "dash", ttl: nil, note: nil)
            let b = try await tokens.rotate(service: "dash", grace: nil, ttl: nil, note: nil)
            #expect(a.record.secret.scram.salt == b.record.secret.scram.salt)
            let t1 = Date(milliseconds: 1_800_000_000_000)
            try await store.recordUse([a.record.id: t1])
            try await store.recordUse([a.record.id: t1.addingTimeInterval(-5)])  // never moves backwards
            #expect(try await store.token(id: a.record.id)?.lastUsedAt == t1)
        }
    }
}

@Suite(.ownThreads) struct TokenSCRAMIterationTests {
    /// New tokens take the policy's round count (a lowered one here); a rotation keeps the live token's, since one
    /// SCRAM exchange announces one count for every token the service may present.
    @Test func newTokensTakeThePolicysCountAndRotationsKeepTheLiveOne() async throws {
        try await withStore(.sqlite) { store, _ in
            let first = try await service(store).issue(service: "dash", ttl: nil, note: nil)
            #expect(first.record.secret.scram.iterations == ServiceSpec.defaultSCRAMIterations)
            let lowered = try PolicyLoader.parse(
                text: storePolicyText.replacingOccurrences(of: "h}", with: "h, scram_iterations: 16}")
                    .replacingOccurrences(of: "10m}", with: "10m, scram_iterations: 16}"),
                file: "p.yaml", environment: [:])
            let rotated = try await service(store, policy: lowered).rotate(
                service: "dash", grace: .seconds(60), ttl: nil, note: nil)
            #expect(rotated.record.secret.scram.iterations == first.record.secret.scram.iterations)
            #expect(rotated.record.secret.scram.salt == first.record.secret.scram.salt)
            let fresh = try await service(store, policy: lowered).issue(service: "api", ttl: nil, note: nil)
            #expect(fresh.record.secret.scram.iterations == 16)
        }
    }
}
