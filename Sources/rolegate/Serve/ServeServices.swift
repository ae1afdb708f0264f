import Foundation
import Logging
import RolegateAudit
import RolegateCore
import RolegateGateway
import RolegateHTTP
import RolegateStore
import RolegateTokens
import ServiceLifecycle

// What `rolegate serve` runs, as swift-service-lifecycle services in one ServiceGroup. The group
// starts them in order and, on SIGTERM or SIGINT (or the parent's exit with --exit-with-parent),
// shuts them down in reverse: the front doors first (sessions and requests finish within the
// grace), then the session sweeper, the retention pruner, the peer directory (the instance leaves the peer table)
// and the token change feed (its last token uses are written), and the audit writer last, once
// nothing can record anything more (its queue is flushed).

/// The wire gateway and the HTTP API: both already serve when the group starts; on graceful
/// shutdown they stop accepting and let work in progress finish, side by side, within `grace`.
struct FrontDoorsService: Service, CustomStringConvertible {
    let gateway: GatewayServer
    let http: HTTPServing?
    let grace: Duration
    let note: @Sendable (String) -> Void
    var description: String { "front doors (wire gateway, HTTP API)" }

    func run() async throws {
        try? await gracefulShutdown()
        note("rolegate: shutting down (sessions have \(DurationText.format(grace)) to finish)")
        async let httpStopped: Void? = http?.shutdown(grace: grace)
        await gateway.shutdown(grace: grace)
        _ = await httpStopped
    }
}

/// The session sweeper: ends sessions whose token expired (or every session while the token store
/// cannot be read, under `store_outage_policy: end_sessions`) until the front doors have
/// stopped, so sessions finishing within the shutdown grace still end on time.
struct SessionSweeperService: Service, CustomStringConvertible {
    let gateway: GatewayServer
    var description: String { "session sweeper (token expiry, store outage)" }

    func run() async throws {
        let sweeping = Task { await gateway.sweepSessions() }
        try? await gracefulShutdown()
        sweeping.cancel()
        _ = await sweeping.value
    }
}

/// The audit writer: writes until graceful shutdown, then flushes what is queued.
struct AuditWriterService: Service, CustomStringConvertible {
    let writer: AuditWriter
    let note: @Sendable (String) -> Void
    var description: String { "audit writer (chain \(writer.instance))" }

    func run() async throws {
        let writing = Task { await writer.run() }
        try? await gracefulShutdown()
        let unwritten = await writer.shutdown()
        if unwritten > 0 { note("rolegate: \(unwritten) audit events could not be written") }
        _ = await writing.value
    }
}

/// The token change feed: follows it (revocations from any process reach this one's sessions)
/// until graceful shutdown, then writes the last uses of tokens it recorded.
struct TokenFeedService: Service, CustomStringConvertible {
    let verifier: TokenVerifier
    let logger: Logger
    var description: String { "token change feed" }

    func run() async throws {
        let logger = self.logger
        let following = Task { await verifier.run { logger.warning("\($0)", metadata: ["component": "token-feed"]) } }
        try? await gracefulShutdown()
        following.cancel()
        _ = await following.value
    }
}

/// This instance's row in the peer table: heartbeats until graceful shutdown, then leaves.
struct PeerDirectoryService: Service, CustomStringConvertible {
    let peers: PeerDirectory
    let store: any Store
    let note: @Sendable (String) -> Void
    var description: String { "peer directory (\(peers.me.id))" }

    func run() async throws {
        let heartbeat = Task { await peers.run(store: store, problem: note) }
        try? await gracefulShutdown()
        heartbeat.cancel()
        _ = await heartbeat.value
    }
}

/// Audit retention: prunes every chain hourly, in slices (each its own short transaction with
/// its own checkpoint, so no single DELETE holds the store's write lock for long).
struct RetentionService: Service, CustomStringConvertible {
    let store: any Store
    let retention: Duration
    let slice: Int
    let note: @Sendable (String) -> Void
    var description: String { "audit retention (\(DurationText.format(retention)))" }

    func run() async throws {
        let pruning = Task {
            while !Task.isCancelled {
                do {
                    for head in try await store.auditHeads() {
                        let cutoff = Date().addingTimeInterval(-retention.timeInterval)
                        // Slice after slice until nothing older is left (a slice is whole blocks, so
                        // it may hold fewer than `slice` events with more to come).
                        while !Task.isCancelled,
                            try await store.pruneAudit(
                                instance: head.instance, before: cutoff, now: Date(), limit: slice) > 0
                        {
                            try? await Task.sleep(for: .milliseconds(50))
                        }
                    }
                } catch {
                    note("rolegate: audit retention: \(error)")
                }
                try? await Task.sleep(for: .seconds(3600))
            }
        }
        try? await gracefulShutdown()
        pruning.cancel()
        _ = await pruning.value
    }
}

/// With --exit-with-parent: returns when the process that started `serve` is gone, which shuts
/// the group down as a signal would.
struct ParentWatchService: Service, CustomStringConvertible {
    let parent = getppid()
    var description: String { "parent watch (pid \(parent))" }

    func run() async throws {
        while getppid() == parent, !Task.isShuttingDownGracefully, !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(500)) }
        }
    }
}

/// Access requests' clock and mail: expires unanswered requests and finishes granted ones
/// (every second; a transition happens once whichever instance makes it), and delivers queued
/// webhook events.
struct AccessService: Service, CustomStringConvertible {
    let requests: AccessRequests
    let webhooks: WebhookDispatcher
    var description: String { "access requests" }

    func run() async throws {
        let ticking = Task {
            while !Task.isCancelled {
                await requests.sweep()
                await webhooks.deliverDue()
                try? await Task.sleep(for: .seconds(1))
            }
        }
        try? await gracefulShutdown()
        ticking.cancel()
        _ = await ticking.value
    }
}
