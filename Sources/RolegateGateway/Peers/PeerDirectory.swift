import Foundation
import NIOConcurrencyHelpers
public import RolegateStore

/// This gateway instance and the others sharing its store. Every instance registers itself
/// (its id, a cancel tag, the address peers reach it on) and re-reads the list on each
/// heartbeat. The cancel tag is the high half of every cancel key the instance hands out,
/// so a `CancelRequest` that a load balancer sends to another instance is forwarded to the
/// one holding the session (what pgbouncer's `peer_id` does).
public final class PeerDirectory: Sendable {
    public let me: GatewayInstance
    private let peers = NIOLockedValueBox([Int: GatewayInstance]())

    /// How often the instance marks itself alive and re-reads its peers.
    public static let heartbeat: Duration = .seconds(5)
    /// An instance not seen for this long gives up its tag to a newcomer.
    public static let staleAfter: Duration = .seconds(60)

    public init(me: GatewayInstance) {
        self.me = me
    }

    /// Registers this instance in `store` and returns its directory.
    public static func register(
        store: any Store, id: String, wireAddress: String, httpAddress: String?
    ) async throws(StoreError) -> PeerDirectory {
        let me = try await store.registerInstance(
            id: id, wireAddress: wireAddress, httpAddress: httpAddress, now: Date(), staleAfter: staleAfter)
        let directory = PeerDirectory(me: me)
        directory.update(try await store.instances())
        return directory
    }

    func update(_ instances: [GatewayInstance]) {
        let live = Date().addingTimeInterval(-Self.staleAfter.timeInterval)
        let others = instances.filter { $0.id != me.id && $0.seenAt >= live }
        peers.withLockedValue { $0 = Dictionary(others.map { ($0.cancelTag, $0) }, uniquingKeysWith: { a, _ in a }) }
    }

    /// The live peer holding cancel tag `tag`, if it is not this instance.
    func peer(tag: Int) -> GatewayInstance? {
        tag == me.cancelTag ? nil : peers.withLockedValue { $0[tag] }
    }

    /// The other live instances.
    public var others: [GatewayInstance] {
        peers.withLockedValue { Array($0.values) }.sorted { $0.cancelTag < $1.cancelTag }
    }

    /// Heartbeats until cancelled, then removes this instance from the store.
    /// `problem` is told when the store cannot be reached and when it can again.
    public func run(store: any Store, problem: @escaping @Sendable (String) -> Void) async {
        var failing = false
        while !Task.isCancelled {
            await LoopSleep.sleep(for: Self.heartbeat)
            if Task.isCancelled { break }
            do {
                try await store.instanceHeartbeat(id: me.id, now: Date())
                update(try await store.instances())
                if failing { problem("peer directory: the store is reachable again") }
                failing = false
            } catch {
                if !failing { problem("peer directory: cannot reach the store (\(error)); peers may be out of date") }
                failing = true
            }
        }
        try? await store.removeInstance(id: me.id)
    }
}
