import NIOConcurrencyHelpers
package import NIOCore

/// Server connections per role, reused across client sessions (session pooling). One
/// pool per event loop, used only on it; the per-role cap is shared by all of them.
/// A connection goes back to the pool only idle and after `DISCARD ALL`, so no setting,
/// temporary table, prepared statement, advisory lock or LISTEN outlives its client.
///
/// At the cap, sessions wait in one queue per role across all event loops, first come
/// first served (`RoleConnectionCounts`): a connection coming back goes to the first
/// waiter (directly, when it waits on the same loop for the same key; else it is closed
/// and its slot passes to that waiter), so no session can be overtaken for ever by
/// sessions on another loop or by newcomers.
package final class UpstreamPool {
    let eventLoop: any EventLoop
    let limits: RoleConnectionCounts
    let metrics: Metrics
    let lifetime: TimeAmount
    let idleTimeout: TimeAmount
    let saltedPasswords: SaltedPasswordCache
    let tlsContexts: UpstreamTLSContexts
    /// How long a server may take to answer a login or reset (``UpstreamConnection/answerTimeout``).
    let answerTimeout: TimeAmount
    /// Asks the other event loops' pools to close one idle connection of a role at its cap.
    let starved: @Sendable (_ role: String, _ from: any EventLoop) -> Void
    private var idle: [UpstreamKey: [UpstreamConnection]] = [:]

    /// How many reset connections wait in this pool for a session.
    var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }

    init(
        eventLoop: any EventLoop, limits: RoleConnectionCounts, metrics: Metrics, lifetime: TimeAmount,
        idleTimeout: TimeAmount,
        saltedPasswords: SaltedPasswordCache, tlsContexts: UpstreamTLSContexts,
        answerTimeout: TimeAmount = UpstreamConnection.answerTimeout,
        starved: @escaping @Sendable (_ role: String, _ from: any EventLoop) -> Void
    ) {
        self.tlsContexts = tlsContexts
        self.answerTimeout = answerTimeout
        self.starved = starved
        self.eventLoop = eventLoop
        self.limits = limits
        self.metrics = metrics
        self.lifetime = lifetime
        self.idleTimeout = idleTimeout
        self.saltedPasswords = saltedPasswords
        scheduleSweep()
    }

    /// A connection for `key`: an idle one, or a new one while the role is under its cap;
    /// at the cap, waits in the role's queue (up to `waitLimit`) for a connection or a slot.
    func acquire(
        key: UpstreamKey, password: String, cap: Int, waitLimit: TimeAmount = .seconds(30)
    )
        -> EventLoopFuture<UpstreamConnection>
    {
        if let connection = takeIdle(key: key) { return eventLoop.makeSucceededFuture(connection) }
        return acquireNew(key: key, password: password, cap: cap, waitLimit: waitLimit)
    }

    /// A new connection for `key` while the role is under its cap, or one handed over (or a
    /// slot freed) while waiting in the role's queue: ``acquire(key:password:cap:waitLimit:)``
    /// once no idle connection fits.
    package func acquireNew(
        key: UpstreamKey, password: String, cap: Int, waitLimit: TimeAmount
    ) -> EventLoopFuture<UpstreamConnection> {
        eventLoop.preconditionInEventLoop()
        let promise = eventLoop.makePromise(of: UpstreamConnection.self)
        let pool = NIOLoopBound(self, eventLoop: eventLoop)
        let waiter = RoleConnectionCounts.Waiter(eventLoop: eventLoop, key: key, cap: cap, promise: promise) {
            // A slot was passed on to this waiter; its loop opens the connection.
            promise.completeWith(pool.value.open(key: key, password: password))
        }
        guard let ticket = limits.reserveOrWait(role: key.role, cap: cap, waiter: waiter) else {
            promise.completeWith(open(key: key, password: password))
            return promise.futureResult
        }
        // At the cap: an idle connection of this role that cannot serve this key (another
        // event loop's, or other startup parameters) gives its slot up to the queue.
        metrics.increment("rolegate_pool_waits_total", ["role": key.role])
        if !closeOneIdle(role: key.role) { starved(key.role, eventLoop) }
        let limits = self.limits
        let timeout = eventLoop.assumeIsolated().scheduleTask(in: waitLimit) {
            guard limits.withdraw(role: key.role, ticket: ticket) else { return }
            promise.fail(
                UpstreamError(
                    .busy, "all server connections of role \(key.role) are busy (cap \(min(cap, limits.limit)))"))
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
        return promise.futureResult
    }

    /// An idle connection for `key`, if one is open and young enough (older ones are closed on the way).
    package func takeIdle(key: UpstreamKey) -> UpstreamConnection? {
        eventLoop.preconditionInEventLoop()
        let now = NIODeadline.now()
        // Popped in place: a copy of the list would be copied again to pop from it.
        while let connection = idle[key]?.popLast() {
            if idle[key]!.isEmpty { idle[key] = nil }
            if connection.isOpen, now - connection.createdAt < lifetime { return connection }
            connection.close()
        }
        return nil
    }

    /// Opens a connection on a slot already reserved; the slot is freed when it closes.
    private func open(key: UpstreamKey, password: String) -> EventLoopFuture<UpstreamConnection> {
        let limits = self.limits
        return UpstreamConnection.connect(
            key: key, password: password, on: eventLoop, saltedPasswords: saltedPasswords,
            tls: tlsContexts.context(for: key.tls), answerTimeout: answerTimeout
        ).map { connection in
            connection.channel.closeFuture.whenComplete { _ in limits.release(role: key.role) }
            return connection
        }.flatMapErrorThrowing { error in
            limits.release(role: key.role)
            throw error
        }
    }

    /// Returns a connection after its client left. Only an idle, healthy, not too old
    /// connection is reset (`DISCARD ALL`) and kept; anything else is closed. `alreadyReset`: the last thing it ran was
    /// `DISCARD ALL`, successfully (the HTTP pipeline ends with it), so no round trip is needed.
    package func release(_ connection: UpstreamConnection, alreadyReset: Bool = false) {
        eventLoop.preconditionInEventLoop()
        connection.sink = nil
        connection.observesStatements = false
        guard connection.isOpen, !connection.busy, connection.status == UInt8(ascii: "I"),
            NIODeadline.now() - connection.createdAt < lifetime
        else {
            connection.close()
            return
        }
        if alreadyReset { return park(connection) }
        connection.reset().hop(to: eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success: self.park(connection)
            case .failure: connection.close()
            }
        }
    }

    /// A clean connection: to the role's first waiter if there is one, else idle here.
    private func park(_ connection: UpstreamConnection) {
        switch limits.handOff(role: connection.key.role, key: connection.key, on: eventLoop) {
        case .keep:
            connection.idleSince = .now()
            idle[connection.key, default: []].append(connection)
        case .give(let waiter):
            waiter.promise.assumeIsolated().succeed(connection)
        case .close:
            // The first waiter is on another loop or wants other parameters: closing
            // passes the slot on to it.
            connection.close()
        }
    }

    /// Closes one idle connection of `role` (any key), freeing its slot; false if there is none.
    @discardableResult
    func closeOneIdle(role: String) -> Bool {
        eventLoop.preconditionInEventLoop()
        guard let key = idle.keys.first(where: { $0.role == role }), var list = idle[key],
            let connection = list.popLast()
        else { return false }
        idle[key] = list.isEmpty ? nil : list
        connection.close()
        return true
    }

    private func scheduleSweep() {
        eventLoop.assumeIsolated().scheduleTask(in: .seconds(5)) { [weak self] in
            guard let self else { return }
            let now = NIODeadline.now()
            for (key, list) in self.idle {
                let (keep, drop) = list.reduce(into: ([UpstreamConnection](), [UpstreamConnection]())) { acc, c in
                    if c.isOpen, now - c.idleSince < self.idleTimeout, now - c.createdAt < self.lifetime {
                        acc.0.append(c)
                    } else {
                        acc.1.append(c)
                    }
                }
                for c in drop { c.close() }
                self.idle[key] = keep.isEmpty ? nil : keep
            }
            self.scheduleSweep()
        }
    }
}

/// Open server connections per role across all event loops, and the sessions waiting at
/// a role's cap, in arrival order. A slot freed while sessions wait passes straight to the
/// first of them (the count does not drop), so a newcomer cannot take it first.
final class RoleConnectionCounts: Sendable {
    /// A session waiting for a server connection of its role.
    struct Waiter: Sendable {
        let eventLoop: any EventLoop
        let key: UpstreamKey
        let cap: Int
        /// Completed with a connection handed over on `eventLoop`, or by `slotGranted`.
        let promise: EventLoopPromise<UpstreamConnection>
        /// Run on `eventLoop` once a slot is the waiter's: opens its connection.
        let slotGranted: @Sendable () -> Void
    }

    /// What to do with a clean connection coming back.
    enum HandOff {
        /// Nobody waits for the role: keep it idle.
        case keep
        /// The first waiter waits on this loop for this key: give it the connection.
        case give(Waiter)
        /// The first waiter needs another loop or key: close it, its slot goes to that waiter.
        case close
    }

    private struct State {
        var counts: [String: Int] = [:]
        var waiting: [String: [(ticket: UInt64, waiter: Waiter)]] = [:]
        var nextTicket: UInt64 = 0

        /// Takes a waiter out of `role`'s queue, dropping the queue once it is empty.
        @discardableResult
        mutating func removeWaiter(of role: String, at index: Int) -> Waiter {
            let removed = waiting[role]!.remove(at: index).waiter
            if waiting[role]!.isEmpty { waiting[role] = nil }
            return removed
        }
    }

    let limit: Int
    private let state = NIOLockedValueBox(State())

    init(limit: Int) { self.limit = limit }

    /// Takes a slot for `role` if it is under the cap and nobody waits; else queues `waiter`
    /// and returns its ticket (for `withdraw`).
    func reserveOrWait(role: String, cap: Int, waiter: Waiter) -> UInt64? {
        state.withLockedValue { state in
            if state.waiting[role, default: []].isEmpty, state.counts[role, default: 0] < min(limit, cap) {
                state.counts[role, default: 0] += 1
                return nil
            }
            state.nextTicket += 1
            state.waiting[role, default: []].append((state.nextTicket, waiter))
            return state.nextTicket
        }
    }

    /// A connection of `role` closed (or failed to open): its slot goes to the first waiter
    /// that the cap admits, or is freed.
    func release(role: String) {
        let granted: Waiter? = state.withLockedValue { state in
            let open = state.counts[role, default: 1] - 1
            if let first = state.waiting[role]?.first, open < min(limit, first.waiter.cap) {
                return state.removeWaiter(of: role, at: 0)
            }
            state.counts[role] = open
            return nil
        }
        if let granted { granted.eventLoop.execute(granted.slotGranted) }
    }

    /// Where a clean connection of `role` for `key`, on `eventLoop`, goes.
    func handOff(role: String, key: UpstreamKey, on eventLoop: any EventLoop) -> HandOff {
        state.withLockedValue { state in
            guard let first = state.waiting[role]?.first else { return .keep }
            guard first.waiter.eventLoop === eventLoop, first.waiter.key == key else { return .close }
            return .give(state.removeWaiter(of: role, at: 0))
        }
    }

    /// Takes a waiter out of the queue (its wait timed out); false if it was served meanwhile.
    func withdraw(role: String, ticket: UInt64) -> Bool {
        state.withLockedValue { state in
            guard let index = state.waiting[role]?.firstIndex(where: { $0.ticket == ticket }) else { return false }
            state.removeWaiter(of: role, at: index)
            return true
        }
    }

    /// Open server connections per role.
    var snapshot: [String: Int] { state.withLockedValue { $0.counts } }

    /// Sessions waiting per role.
    var waitingSnapshot: [String: Int] { state.withLockedValue { $0.waiting.mapValues(\.count) } }
}
