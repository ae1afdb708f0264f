public import Foundation
public import RolegateCore
public import RolegateStore
import Synchronization

/// Where every token is checked, for the wire gateway and the HTTP API alike:
/// parse → checksum → look up → constant-time compare → policy → revocation → expiry.
///
/// Lookups are served from memory. A poller follows the store's change feed and evicts
/// what another process revoked or rotated, so a revocation made anywhere takes effect
/// here within ``maxStaleness`` (1 s by default). If the feed cannot be read for that long,
/// verification fails closed with ``Failure/unavailable`` rather than trust a stale cache.
public final class TokenVerifier: Sendable {
    /// Why a token was refused. Never carries the token or any part of its secret.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// Not a well-formed token (wrong prefix, length, characters or checksum).
        case malformed(TokenFormat.ParseError)
        /// No such token, or the secret does not match: deliberately indistinguishable.
        case unknown
        case expired
        case revoked
        /// The token's service is no longer in the policy (or is bound to another role now).
        case serviceUnknown
        /// The store cannot be read, so revocations cannot be trusted to be current.
        case unavailable

        public var description: String {
            switch self {
            case .malformed(let error): "malformed token: \(error)"
            case .unknown: "unknown token"
            case .expired: "token expired"
            case .revoked: "token revoked"
            case .serviceUnknown: "the token's service is not in the policy"
            case .unavailable: "token store unavailable"
            }
        }
    }

    public struct Verified: Sendable, Equatable {
        /// The record, shared with the cache entry it was checked against: a verification
        /// from memory hands on one reference, not a copy of the record (a dozen retains and
        /// a few hundred bytes moved through each layer of results).
        private let box: RecordBox

        init(_ box: RecordBox) { self.box = box }
        init(record: TokenRecord) { self.box = RecordBox(record) }

        public var record: TokenRecord { box.record }
        public var service: String { box.record.service }
        public var role: String { box.record.role }
        public var tokenID: String { box.record.id }

        public static func == (a: Verified, b: Verified) -> Bool { a.box === b.box || a.box.record == b.box.record }
    }

    final class RecordBox: Sendable {
        let record: TokenRecord
        init(_ record: TokenRecord) { self.record = record }
    }

    /// A cached record and what the checks of it leave behind, changed only under the lock.
    private final class CachedToken {
        let box: RecordBox
        var record: TokenRecord { box.record }
        /// Its last successful check since the last ``refresh()`` wrote uses out.
        var lastUse: Date?
        /// The policy generation whose service → role binding this record was found to match.
        var boundIn = -1

        init(_ record: TokenRecord) { self.box = RecordBox(record) }
    }

    private struct State {
        var policy: Policy {
            didSet {
                bindings = Self.bindings(policy)
                policyGeneration += 1
            }
        }
        /// Service → role, from the policy: checked on every verification (once per cached
        /// record and policy generation on the cache's path).
        var bindings: [String: String]
        var policyGeneration = 0
        /// Records by packed id (``TokenKey``): a lookup neither allocates nor hashes a string.
        var cache: [TokenKey: CachedToken] = [:]
        /// Cached records checked since the last refresh (their ``CachedToken/lastUse`` is set).
        var used: [CachedToken] = []
        /// Ids the store does not have, remembered briefly so a flood of made-up ids
        /// does not become a flood of store queries.
        var missing: [TokenKey: ContinuousClock.Instant] = [:]
        var lastSequence: Int64?
        var lastRefresh: ContinuousClock.Instant?
        /// Last successful check of tokens outside the cache (SCRAM logins, ``admit(_:now:)``),
        /// written to the store by ``refresh()`` with the cache's.
        var uses: [String: Date] = [:]
        /// Every token of a service (any state), for SCRAM logins, by service.
        var byService: [String: [TokenRecord]] = [:]
        var changeHandler: (@Sendable ([ChangeEvent]) -> Void)?

        /// Admin services bind no role (their tokens never reach a database): bound to "".
        static func bindings(_ policy: Policy) -> [String: String] {
            policy.bindings
        }

    }

    public let store: any Store
    public let maxStaleness: Duration
    /// How often ``run(problem:)`` reads the change feed; nil: every 200 ms as the safety
    /// net beside a store's change signals (PostgreSQL's LISTEN/NOTIFY), every 100 ms when
    /// polling is all there is (SQLite: a local indexed read), which is what bounds how long a
    /// revocation made by another process takes to end sessions.
    public let pollInterval: Duration?
    private let state: Mutex<State>
    private let clock = ContinuousClock()
    static let missingTTL: Duration = .seconds(1)
    static let missingLimit = 10_000

    public init(
        store: any Store, policy: Policy, maxStaleness: Duration = .seconds(1),
        pollInterval: Duration? = nil
    ) {
        self.store = store
        self.maxStaleness = maxStaleness
        self.pollInterval = pollInterval
        self.state = Mutex(State(policy: policy, bindings: State.bindings(policy)))
    }

    /// Called with every batch of change feed entries (revocations, rotations, issues) that
    /// a refresh reads: the gateway ends the sessions of revoked tokens from here.
    public func onChanges(_ handler: @escaping @Sendable ([ChangeEvent]) -> Void) {
        state.withLock { $0.changeHandler = handler }
    }

    public func updatePolicy(_ policy: Policy) {
        state.withLock { $0.policy = policy }
    }

    public func verify(_ token: String, now: Date = Date()) async -> Result<Verified, Failure> {
        let instant = clock.now
        var step = fromMemory(token, now: now, at: instant, checkingStaleness: true)
        if case .refresh = step {
            guard await refreshIfStale(at: instant) else { return .failure(.unavailable) }
            step = fromMemory(token, now: now, at: instant, checkingStaleness: false)
        }
        guard case .lookUp(let key, let digest) = step else {
            if case .done(let result) = step { return result }
            return .failure(.unavailable)
        }
        // If the feed moves on while we read, what we read may already be outdated: use it
        // for this one check (it was current when read) but do not cache it.
        let generation = state.withLock { $0.lastSequence }
        let record: TokenRecord?
        do {
            record = try await store.token(id: key.id)
        } catch {
            return .failure(.unavailable)
        }
        return state.withLock { s in
            // Made under the lock: a cached entry is state the lock owns.
            let entry = record.map(CachedToken.init)
            if s.lastSequence == generation {
                if let entry {
                    s.cache[key] = entry
                } else {
                    if s.missing.count >= Self.missingLimit {
                        s.missing = s.missing.filter { instant - $0.value < Self.missingTTL }
                    }
                    if s.missing.count < Self.missingLimit { s.missing[key] = instant }
                }
            }
            return Self.finish(entry, digest: digest, now: now, &s)
        }
    }

    /// ``verify(_:now:)`` when memory can answer (the cache is current and knows the token,
    /// or knows it is missing), without suspending; nil when the answer needs the store. For
    /// callers on an event loop, which then fall back to `verify`.
    public func verifyFromMemory(_ token: String, now: Date = Date()) -> Result<Verified, Failure>? {
        if case .done(let result) = fromMemory(token, now: now, at: clock.now, checkingStaleness: true) {
            return result
        }
        return nil
    }

    private enum Step {
        case done(Result<Verified, Failure>)
        /// The cache is older than `maxStaleness`: read the change feed first.
        case refresh
        /// Neither cached nor known to be missing: read the store.
        case lookUp(TokenKey, TokenDigest)
    }

    /// What a verification can answer from memory, without suspending (this runs on every
    /// login and HTTP request): the token is parsed and hashed first, then one lock covers
    /// "is the cache current", the lookup, the comparison, the policy checks and the use record.
    private func fromMemory(
        _ token: String, now: Date, at instant: ContinuousClock.Instant, checkingStaleness: Bool
    ) -> Step {
        let key: TokenKey
        do {
            key = try TokenFormat.parse(token).key
        } catch {
            return .done(.failure(.malformed(error)))
        }
        // Every well-formed token is hashed, known or not: an unknown id costs what a wrong secret does.
        let digest = TokenDigest(token)
        let maxStaleness = self.maxStaleness
        return state.withLock { s -> Step in
            if checkingStaleness, s.lastRefresh.map({ instant - $0 > maxStaleness }) ?? true {
                return .refresh
            }
            if let entry = s.cache[key] { return .done(Self.finish(entry, digest: digest, now: now, &s)) }
            if let seen = s.missing[key], instant - seen < Self.missingTTL {
                return .done(Self.finish(nil, digest: digest, now: now, &s))
            }
            return .lookUp(key, digest)
        }
    }

    /// The secret comparison, the policy checks and the use record, once the record (or its
    /// absence) is known. Called with the lock held.
    private static func finish(
        _ entry: CachedToken?, digest: TokenDigest, now: Date, _ s: inout State
    ) -> Result<Verified, Failure> {
        guard let entry else {
            // Same comparison as a wrong secret, so "no such id" and "wrong secret" look alike.
            _ = decoy.matches(digest)
            return .failure(.unknown)
        }
        let box = entry.box
        guard box.record.secret.matches(digest) else { return .failure(.unknown) }
        if entry.boundIn != s.policyGeneration {
            guard s.bindings[box.record.bindingKey] == box.record.role else { return .failure(.serviceUnknown) }
            entry.boundIn = s.policyGeneration
        }
        if let failure = checkState(box.record, now: now) { return .failure(failure) }
        if entry.lastUse == nil { s.used.append(entry) }
        entry.lastUse = now
        return .success(Verified(box))
    }

    /// What an unknown id's token is compared against: no token hashes to all zeros.
    static let decoy = TokenSecret(
        sha256: [UInt8](repeating: 0, count: 32),
        scram: SCRAMSHA256.Verifier(salt: [], iterations: 1, storedKey: [], serverKey: []))

    /// Reads the change feed first when the last read is older than ``maxStaleness``;
    /// false when that read fails (callers then fail closed).
    private func refreshIfStale(at instant: ContinuousClock.Instant) async -> Bool {
        let stale = state.withLock { s in s.lastRefresh.map { instant - $0 > maxStaleness } ?? true }
        guard stale else { return true }
        do {
            try await refresh()
            return true
        } catch {
            return false
        }
    }

    /// What a SCRAM login as `service` is checked against: the service's SCRAM salt and
    /// the verifiers of its tokens (revoked and expired ones too, so the login can say
    /// why it failed). Nil when the service has no tokens or is not in the policy.
    public func scramCandidates(service: String, fresh: Bool = false) async -> Result<[TokenRecord]?, Failure> {
        let instant = clock.now
        guard await refreshIfStale(at: instant) else { return .failure(.unavailable) }
        let policy = state.withLock { $0.policy }
        guard policy.mayHoldTokens(service) else { return .success(nil) }
        if !fresh, let cached = state.withLock({ $0.byService[service] }) {
            return .success(cached.isEmpty ? nil : cached)
        }
        let generation = state.withLock { $0.lastSequence }
        let records: [TokenRecord]
        do {
            records = try await store.loginCandidates(service: service, now: Date())
        } catch {
            return .failure(.unavailable)
        }
        state.withLock { s in
            // A name outside the policy (a group's member, or anything a client typed) is kept
            // only when it holds tokens: made-up names must not grow the cache.
            if s.lastSequence == generation, !records.isEmpty || s.bindings[service] != nil {
                s.byService[service] = records
            }
        }
        return .success(records.isEmpty ? nil : records)
    }

    /// ``scramCandidates(service:fresh:)`` answered from memory, without suspending: nil when
    /// that needs the store (the cache is stale or does not hold the service yet). This runs
    /// on every wire login, on the event loop.
    public func scramCandidatesFromMemory(service: String) -> Result<[TokenRecord]?, Failure>? {
        let instant = clock.now
        let maxStaleness = self.maxStaleness
        return state.withLock { s -> Result<[TokenRecord]?, Failure>? in
            guard let last = s.lastRefresh, instant - last <= maxStaleness else { return nil }
            // A name not in the bindings is looked up when outsiders may hold tokens (Policy).
            guard s.bindings[service] != nil || s.policy.outsidersMayHoldTokens else { return .success(nil) }
            guard let cached = s.byService[service] else { return nil }
            return .success(cached.isEmpty ? nil : cached)
        }
    }

    /// Admits a session whose proof was checked against `record`, a copy read earlier (a SCRAM
    /// login reads its candidates at client-first, which may be seconds before client-final):
    /// the token's *current* state decides — the policy still binds its service to its role, it is
    /// not revoked, it has not expired. Answered from memory when memory is current and still holds
    /// the token (the change feed evicts whatever changed); nil when that needs the store: then
    /// call ``admitCurrent(_:now:)``. A success is a use of the token.
    public func admitFromMemory(_ record: TokenRecord, now: Date = Date()) -> Result<Verified, Failure>? {
        let instant = clock.now
        let maxStaleness = self.maxStaleness
        return state.withLock { s -> Result<Verified, Failure>? in
            guard let last = s.lastRefresh, instant - last <= maxStaleness else { return nil }
            let current: TokenRecord
            if let key = TokenKey(id: record.id), let entry = s.cache[key] {
                current = entry.record
            } else if let found = s.byService[record.service]?.first(where: { $0.id == record.id }) {
                current = found
            } else {
                return nil
            }
            return Self.admission(current, now: now, &s)
        }
    }

    /// ``admitFromMemory(_:now:)``, reading the change feed and then the token's record from the
    /// store when memory cannot answer. Fails closed (``Failure/unavailable``) when the store
    /// cannot be read.
    public func admitCurrent(_ record: TokenRecord, now: Date = Date()) async -> Result<Verified, Failure> {
        if let known = admitFromMemory(record, now: now) { return known }
        guard await refreshIfStale(at: clock.now) else { return .failure(.unavailable) }
        if let known = admitFromMemory(record, now: now) { return known }
        let fresh: TokenRecord?
        do {
            fresh = try await store.token(id: record.id)
        } catch {
            return .failure(.unavailable)
        }
        guard let fresh else { return .failure(.unknown) }
        return state.withLock { s in Self.admission(fresh, now: now, &s) }
    }

    /// The checks of an admission and its use record. Called with the lock held.
    private static func admission(_ current: TokenRecord, now: Date, _ s: inout State) -> Result<Verified, Failure> {
        if let failure = check(current, bindings: s.bindings, now: now) { return .failure(failure) }
        s.uses[current.id] = now
        return .success(Verified(record: current))
    }

    /// Whether the token with this id is still usable (for sessions that follow their token).
    public func isStillValid(_ record: TokenRecord, now: Date = Date()) async -> Failure? {
        let key = TokenKey(id: record.id)
        if let cached = state.withLock({ s in key.flatMap { s.cache[$0]?.record } }) {
            if case .failure(let failure) = admitWithoutUse(cached, now: now) { return failure }
            return nil
        }
        do {
            guard let fresh = try await store.token(id: record.id) else { return .unknown }
            if let key { state.withLock { $0.cache[key] = CachedToken(fresh) } }
            if case .failure(let failure) = admitWithoutUse(fresh, now: now) { return failure }
            return nil
        } catch {
            return nil  // the store being briefly unreachable does not end live sessions
        }
    }

    private func admitWithoutUse(_ record: TokenRecord, now: Date) -> Result<Void, Failure> {
        let failure = state.withLock { Self.check(record, bindings: $0.bindings, now: now) }
        return failure.map { .failure($0) } ?? .success(())
    }

    /// The policy still binds the token's service to its role; not revoked; not expired.
    private static func check(_ record: TokenRecord, bindings: [String: String], now: Date) -> Failure? {
        guard bindings[record.bindingKey] == record.role else { return .serviceUnknown }
        return checkState(record, now: now)
    }

    /// Not revoked; not expired.
    private static func checkState(_ record: TokenRecord, now: Date) -> Failure? {
        if record.revokedAt != nil { return .revoked }
        if record.expiresAt <= now { return .expired }
        return nil
    }

    /// Reads the change feed once: evicts what changed and records when it last succeeded.
    /// Only reads: last-used times are written by ``writeUses()``, so that a store whose
    /// writers wait (another process holding SQLite's write lock, a PostgreSQL row lock)
    /// never delays a revocation or holds up a verification that needs the feed.
    public func refresh() async throws(StoreError) {
        let started = clock.now
        let since = state.withLock { $0.lastSequence }
        if let since {
            var cursor = since
            while true {
                let changes = try await store.changes(after: cursor, limit: 500)
                guard let last = changes.last else { break }
                state.withLock { s in
                    for change in changes {
                        if let key = TokenKey(id: change.tokenID) {
                            s.cache.removeValue(forKey: key)
                            s.missing.removeValue(forKey: key)
                        }
                        s.byService.removeValue(forKey: change.service)
                    }
                    s.lastSequence = last.sequence
                }
                cursor = last.sequence
                state.withLock { $0.changeHandler }?(changes)
                if changes.count < 500 { break }
            }
        } else {
            // Nothing is cached yet: start following the feed from its current end.
            let latest = try await store.latestChange()
            state.withLock { $0.lastSequence = latest }
        }
        state.withLock { $0.lastRefresh = started }
    }

    /// Writes each token's latest successful check since the last call to the store. Uses that
    /// cannot be written are kept for the next call.
    public func writeUses() async {
        let uses = state.withLock { s -> [String: Date] in
            var uses = s.uses
            for entry in s.used {
                if let last = entry.lastUse { uses[entry.record.id] = max(last, uses[entry.record.id] ?? last) }
                entry.lastUse = nil
            }
            s.uses = [:]
            s.used = []
            return uses
        }
        guard !uses.isEmpty else { return }
        do {
            try await store.recordUse(uses)
        } catch {
            state.withLock { s in
                for (id, use) in uses { s.uses[id] = max(use, s.uses[id] ?? use) }
            }
        }
    }

    /// Follows the change feed until the task is cancelled.
    /// - Parameter problem: told once when the store cannot be read (new logins then fail
    ///   closed) and once when it can again.
    public func run(problem: @escaping @Sendable (String) -> Void = { _ in }) async {
        // LISTEN/NOTIFY (PostgreSQL store): read the feed the moment another process commits
        // a change, instead of at the next poll.
        let listener = store.changeSignals().map { signals in
            Task {
                for await _ in signals { try? await self.refresh() }
            }
        }
        let interval = pollInterval ?? (listener == nil ? .milliseconds(100) : .milliseconds(200))
        // Last-used times on a loop of their own: a write that waits must not stop the feed.
        let usesWriter = Task {
            while !Task.isCancelled {
                await LoopSleep.sleep(for: interval)
                await self.writeUses()
            }
        }
        defer {
            listener?.cancel()
            usesWriter.cancel()
        }
        var failingSince: ContinuousClock.Instant?
        while !Task.isCancelled {
            do {
                try await refresh()
                if let since = failingSince {
                    failingSince = nil
                    problem(
                        "the token store is reachable again after \(DurationText.format(clock.now - since)); caught up on revocations, logins accepted"
                    )
                }
            } catch {
                if failingSince == nil {
                    failingSince = clock.now
                    problem(
                        "cannot read the token store (\(error)); new logins are refused until it is back, open sessions continue"
                    )
                }
            }
            await LoopSleep.sleep(for: interval)
        }
        // Stopping: the uses since the last write, too.
        await writeUses()
    }

    /// Whether the change feed was read within ``maxStaleness`` (logins are accepted).
    public var isCurrent: Bool { isCurrent(within: maxStaleness) }

    /// Whether the change feed was read within `bound`.
    public func isCurrent(within bound: Duration) -> Bool {
        let instant = clock.now
        return state.withLock { s in s.lastRefresh.map { instant - $0 <= bound } ?? false }
    }
}
