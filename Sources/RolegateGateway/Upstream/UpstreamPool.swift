import NIOConcurrencyHelpers
import NIOCore

/// Server connections per role, reused across client sessions (session pooling). One
/// pool per event loop, used only on it; the per-role cap is shared by all of them.
/// A connection goes back to the pool only idle and after `DISCARD ALL`, so no setting,
/// temporary table, prepared statement, advisory lock or LISTEN outlives its client.
final class UpstreamPool {
    let eventLoop: any EventLoop
    let limits: RoleConnectionCounts
    let metrics: Metrics
    let lifetime: TimeAmount
    let idleTimeout: TimeAmount
    let saltedPasswords: SaltedPasswordCache
    let tlsContexts: UpstreamTLSContexts
    /// Asks the other event loops' pools to close one idle connection of a role at its cap.
    let starved: @Sendable (_ role: String, _ from: any EventLoop) -> Void
    private var idle: [UpstreamKey: [UpstreamConnection]] = [:]

    init(
        eventLoop: any EventLoop, limits: RoleConnectionCounts, metrics: Metrics, lifetime: TimeAmount,
        idleTimeout: TimeAmount,
        saltedPasswords: SaltedPasswordCache, tlsContexts: UpstreamTLSContexts,
        starved: @escaping @Sendable (_ role: String, _ from: any EventLoop) -> Void
    ) {
        self.tlsContexts = tlsContexts
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
    /// at the cap, waits (up to `waitLimit`) for one to come back.
    func acquire(
        key: UpstreamKey, password: String, cap: Int, waitLimit: TimeAmount = .seconds(30)
    )
        -> EventLoopFuture<UpstreamConnection>
    {
        acquire(key: key, password: password, cap: cap, deadline: .now() + waitLimit, first: true)
    }

    private func acquire(
        key: UpstreamKey, password: String, cap: Int, deadline: NIODeadline, first: Bool
    )
        -> EventLoopFuture<UpstreamConnection>
    {
        eventLoop.preconditionInEventLoop()
        let now = NIODeadline.now()
        while var list = idle[key], let connection = list.popLast() {
            idle[key] = list.isEmpty ? nil : list
            if connection.isOpen, now - connection.createdAt < lifetime {
                return eventLoop.makeSucceededFuture(connection)
            }
            connection.close()
        }
        guard limits.reserve(role: key.role, cap: cap) else {
            guard now < deadline else {
                return eventLoop.makeFailedFuture(
                    UpstreamError(
                        description: "all \(cap) server connections of role \(key.role) are busy", sqlState: "53300"))
            }
            // At the cap: idle connections of this role that cannot serve this key (another
            // event loop's, or other startup parameters) give their slot up; then wait for a
            // connection to be released or closed, and try again.
            if first {
                metrics.increment("rolegate_pool_waits_total", ["role": key.role])
                if !closeOneIdle(role: key.role) { starved(key.role, eventLoop) }
            }
            let retry = eventLoop.makePromise(of: UpstreamConnection.self)
            eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(10)) {
                retry.completeWith(
                    self.acquire(key: key, password: password, cap: cap, deadline: deadline, first: false))
            }
            return retry.futureResult
        }
        let limits = self.limits
        return UpstreamConnection.connect(
            key: key, password: password, on: eventLoop, saltedPasswords: saltedPasswords,
            tls: tlsContexts.context(for: key.tls)
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
    func release(_ connection: UpstreamConnection, alreadyReset: Bool = false) {
        eventLoop.preconditionInEventLoop()
        connection.sink = nil
        connection.observesStatements = false
        guard connection.isOpen, !connection.busy, connection.status == UInt8(ascii: "I"),
            NIODeadline.now() - connection.createdAt < lifetime
        else {
            connection.close()
            return
        }
        if alreadyReset {
            connection.idleSince = .now()
            idle[connection.key, default: []].append(connection)
            return
        }
        connection.reset().hop(to: eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                connection.idleSince = .now()
                self.idle[connection.key, default: []].append(connection)
            case .failure:
                connection.close()
            }
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

/// Open server connections per role, across all event loops.
final class RoleConnectionCounts: Sendable {
    let limit: Int
    private let counts = NIOLockedValueBox([String: Int]())

    init(limit: Int) { self.limit = limit }

    func reserve(role: String, cap: Int) -> Bool {
        counts.withLockedValue { counts in
            guard counts[role, default: 0] < min(limit, cap) else { return false }
            counts[role, default: 0] += 1
            return true
        }
    }

    func release(role: String) {
        counts.withLockedValue { $0[role, default: 1] -= 1 }
    }

    var snapshot: [String: Int] { counts.withLockedValue { $0 } }
}
