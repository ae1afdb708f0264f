import Crypto
import Foundation
import NIOConcurrencyHelpers
public import NIOCore
package import NIOPosix
import PostgresWire
package import RolegateCore
import RolegateStore
import RolegateTokens
import Synchronization

/// What every session of one gateway shares.
package final class GatewayShared: Sendable {
    let configuration: GatewayConfiguration
    let registry: SessionRegistry
    let limits = WireLimits(maxStartupLength: 10_000, maxMessageLength: 1 << 30)
    let roleCounts: RoleConnectionCounts
    let saltedPasswords = SaltedPasswordCache()
    let metrics: Metrics
    let tlsContexts: UpstreamTLSContexts
    let loginThrottle: LoginThrottle
    /// Set when shutdown begins: a login that completes after it is refused, so no session
    /// starts that the shutdown would not end.
    let shuttingDown = Atomic<Bool>(false)
    /// Decoy SCRAM salts for unknown services derive from this per-process secret.
    private let decoySecret = SecureRandom.bytes(32)
    private let pools = NIOLockedValueBox([ObjectIdentifier: PoolBox]())
    /// Role credentials (an HMAC each) and parsed database URLs, derived once: every login
    /// and every HTTP request needs them.
    private let rolePasswords = NIOLockedValueBox([String: String]())
    package let databaseURLs: [String: ConnectionURL]

    init(configuration: GatewayConfiguration) throws {
        self.configuration = configuration
        self.metrics = configuration.metrics
        self.tlsContexts = try UpstreamTLSContexts(policy: configuration.policy)
        self.registry = SessionRegistry(
            maxClients: configuration.maxClientConnections, maxPerService: configuration.maxClientConnectionsPerService,
            cancelTag: configuration.peers?.me.cancelTag ?? 0)
        self.roleCounts = RoleConnectionCounts(limit: configuration.poolSizePerRole)
        self.loginThrottle = LoginThrottle(settings: configuration.loginThrottle)
        self.databaseURLs = configuration.policy.databases.reduce(into: [:]) { urls, database in
            urls[database.name] = try? ConnectionURL(parsing: database.url)
        }
    }

    /// The credential the gateway logs in upstream with as `role` (derived from the master key).
    package func rolePassword(_ role: String) -> String {
        if let known = rolePasswords.withLockedValue({ $0[role] }) { return known }
        let derived = configuration.masterKey.rolePassword(role: role)
        rolePasswords.withLockedValue { $0[role] = derived }
        return derived
    }

    /// The most server connections `role` may have: its `CONNECTION LIMIT` when it sets one
    /// (the pools' `pool_size` caps them too, see ``RoleConnectionCounts``).
    package func serverConnectionCap(role: String) -> Int {
        let limit = configuration.policy.role(named: role)?.connectionLimit ?? -1
        return limit > 0 ? limit : Int.max
    }

    func decoySalt(for service: String) -> [UInt8] {
        Array(SCRAMSHA256.hmac(key: decoySecret, message: Array(service.utf8)).prefix(16))
    }

    /// The pool of the calling event loop (created on first use, on that loop).
    package func pool(for eventLoop: any EventLoop) -> UpstreamPool {
        eventLoop.preconditionInEventLoop()
        let id = ObjectIdentifier(eventLoop)
        if let box = pools.withLockedValue({ $0[id] }) { return box.pool }
        let pool = UpstreamPool(
            eventLoop: eventLoop, limits: roleCounts, metrics: metrics,
            lifetime: TimeAmount(configuration.serverLifetime),
            idleTimeout: TimeAmount(configuration.serverIdleTimeout), saltedPasswords: saltedPasswords,
            tlsContexts: tlsContexts, answerTimeout: TimeAmount(configuration.serverConnectTimeout)
        ) { [weak self] role, from in self?.closeIdleElsewhere(role: role, except: from) }
        pools.withLockedValue { $0[id] = PoolBox(pool: pool) }
        return pool
    }

    /// Closes one idle connection of `role` in another event loop's pool, freeing a slot
    /// under the role's cap for a session waiting on `except`.
    func closeIdleElsewhere(role: String, except: any EventLoop) {
        let boxes = pools.withLockedValue { Array($0.values) }
        for box in boxes where box.pool.eventLoop !== except {
            box.pool.eventLoop.execute { box.pool.closeOneIdle(role: role) }
        }
    }

    /// A client's cancel request: to the local session holding the key, or forwarded to the
    /// peer instance that handed the key out (a load balancer sends each new connection
    /// anywhere). The peer treats it as its own; a forged key cancels nothing anywhere.
    func routeCancel(_ key: CancelKey, on eventLoop: any EventLoop) {
        let tag = SessionRegistry.cancelTag(of: key)
        guard let peers = configuration.peers, tag != registry.cancelTag, let peer = peers.peer(tag: tag),
            let (host, port) = HostPort.parse(peer.wireAddress)
        else {
            return registry.cancel(key)
        }
        metrics.increment("rolegate_cancel_forwarded_total", ["peer": peer.id])
        let request = Frontend.cancelRequest(processID: key.processID, secretKey: key.secret)
        ClientBootstrap(group: eventLoop).connectTimeout(.seconds(5)).connect(host: host, port: port).whenSuccess {
            channel in
            channel.writeAndFlush(request).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// Asks the server to cancel what `connection` is running, on a separate connection.
    package func cancelUpstream(_ connection: UpstreamConnection) {
        let key = connection.key
        let request = Frontend.cancelRequest(processID: connection.processID, secretKey: connection.secretKey)
        let bootstrap = ClientBootstrap(group: connection.channel.eventLoop).connectTimeout(.seconds(5))
        key.connect(with: bootstrap).whenSuccess { channel in
            channel.writeAndFlush(request).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// A pool is used only on its own event loop; the box only carries it between threads
/// to be looked up there.
private final class PoolBox: @unchecked Sendable {
    let pool: UpstreamPool
    init(pool: UpstreamPool) { self.pool = pool }
}

/// The PostgreSQL wire listener: accepts clients, authenticates their tokens, relays
/// their sessions to PostgreSQL as their roles, and ends sessions whose token is revoked
/// or expires.
public final class GatewayServer: Sendable {
    package let shared: GatewayShared
    package let group: MultiThreadedEventLoopGroup
    /// False when the group was given (``GatewayConfiguration/eventLoopGroup``): it outlives the gateway.
    private let ownsGroup: Bool
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    /// The failed-login throttle, shared with the HTTP API.
    public var loginThrottle: LoginThrottle { shared.loginThrottle }

    /// Fails when the upstream TLS settings cannot be loaded (e.g. an unreadable `sslrootcert`).
    public init(configuration: GatewayConfiguration) throws {
        shared = try GatewayShared(configuration: configuration)
        ownsGroup = configuration.eventLoopGroup == nil
        group = configuration.eventLoopGroup ?? MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
    }

    /// Starts listening; returns the bound address (useful with port 0).
    public func start() async throws -> SocketAddress {
        let shared = self.shared
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ClientSessionHandler(shared: shared))
                }
            }
        let channel = try await bootstrap.bind(host: shared.configuration.host, port: shared.configuration.port).get()
        self.channel.withLockedValue { $0 = channel }

        let verifier = shared.configuration.verifier
        let registry = shared.registry
        let metrics = shared.metrics
        verifier.onChanges { changes in
            let entries = registry.sessions(tokens: Set(changes.map(\.tokenID)))
            guard !entries.isEmpty else { return }
            // A revocation on the feed is final: end those sessions now, without a store
            // round trip (which a loaded store would delay). Other changes (a rotation
            // shortening a token's life) are checked against the token's record.
            let revoked = Set(changes.filter { $0.kind == .revoked }.map(\.tokenID))
            for entry in entries where revoked.contains(entry.record.id) {
                metrics.increment("rolegate_sessions_ended_total", ["reason": "token_revoked"])
                registry.end(entry, because: .revoked)
            }
            Task {
                for entry in entries where !revoked.contains(entry.record.id) {
                    if let failure = await verifier.isStillValid(entry.record) {
                        metrics.increment(
                            "rolegate_sessions_ended_total",
                            ["reason": failure == .expired ? "token_expired" : "token_revoked"])
                        registry.end(entry, because: failure)
                    }
                }
            }
        }
        // The token change feed itself is followed by whoever runs the verifier (`serve`'s
        // TokenFeedService); what it reads reaches the sessions through `onChanges` above.
        // Expiry and store outages are found by ``sweepSessions()`` (`serve`'s SessionSweeperService).
        return channel.localAddress!
    }

    /// Ends the sessions of tokens that expired (under `end_sessions_on_expiry`) and records each
    /// expiry once; under `store_outage_policy: end_sessions`, ends every session while the
    /// token store cannot be read. Looks four times a second until the calling task is cancelled.
    public func sweepSessions() async {
        let configuration = shared.configuration
        var sweeper = SessionSweeper(
            endOnExpiry: configuration.endSessionsOnExpiry, endOnOutage: configuration.endSessionsOnStoreOutage)
        let (verifier, registry, metrics, audit) = (
            configuration.verifier, shared.registry, shared.metrics, configuration.audit
        )
        while !Task.isCancelled {
            await LoopSleep.sleep(for: .milliseconds(250))
            let sessions = registry.all
            // A slow feed read is not an outage: three staleness bounds without one is.
            let storeCurrent = verifier.isCurrent(within: verifier.maxStaleness * 3)
            for decision in sweeper.sweep(sessions.map(\.record), now: Date(), storeCurrent: storeCurrent) {
                switch decision {
                case .recordExpiry(let record):
                    audit?.record(
                        AuditEvent(
                            at: record.expiresAt, kind: .token, action: "expired", service: record.service,
                            tokenID: record.id, role: record.role,
                            detail: ["sessions_ended": sweeper.endOnExpiry ? "yes" : "no"]))
                case .end(let index, .expired):
                    metrics.increment("rolegate_sessions_ended_total", ["reason": "token_expired"])
                    registry.end(sessions[index], because: .expired)
                case .end(let index, _):
                    metrics.increment("rolegate_sessions_ended_total", ["reason": "store_outage"])
                    sessions[index].channel.pipeline.fireUserInboundEventTriggered(SessionEvent.end(.storeOutage()))
                }
            }
        }
    }

    /// Stops accepting, gives sessions up to `grace` to finish, then closes them.
    public func shutdown(grace: Duration = .seconds(10)) async {
        shared.shuttingDown.store(true, ordering: .sequentiallyConsistent)
        let listener = channel.withLockedValue { $0 }
        try? await listener?.close()
        let deadline = ContinuousClock.now + grace
        while !shared.registry.all.isEmpty, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        for entry in shared.registry.all {
            entry.channel.pipeline.fireUserInboundEventTriggered(SessionEvent.end(.shutdown()))
        }
        try? await Task.sleep(for: .milliseconds(200))
        if ownsGroup { try? await group.shutdownGracefully() }
    }
}
