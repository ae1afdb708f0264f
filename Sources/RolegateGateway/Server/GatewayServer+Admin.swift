public import Foundation
import NIOCore
import NIOPosix
public import RolegateCore

/// A live wire session, as the admin API lists it.
public struct LiveSession: Sendable {
    public var id: String
    public var service: String
    public var role: String
    public var tokenID: String
    public var database: String
    public var client: String?
    public var startedAt: Date
    /// The statement it sent last (while statement audit is on).
    public var statement: String?
    /// Whether that statement still runs, and how long it has run (or ran).
    public var statementRunning: Bool?
    public var statementDuration: Duration?
    /// Who its token was exchanged for (a person's or workload's subject).
    public var subject: String?
}

extension GatewayServer {
    public var metrics: Metrics { shared.metrics }

    /// This instance and its peers, when it shares its store with others.
    public var peers: PeerDirectory? { shared.configuration.peers }

    public var liveSessions: [LiveSession] {
        shared.registry.all.map { entry in
            let activity = entry.status.activity
            return LiveSession(
                id: entry.status.id, service: entry.record.service, role: entry.record.role, tokenID: entry.record.id,
                database: entry.status.database, client: entry.status.client, startedAt: entry.status.startedAt,
                statement: activity?.sql, statementRunning: activity?.running, statementDuration: activity?.duration,
                subject: entry.record.subject)
        }.sorted { $0.startedAt < $1.startedAt }
    }

    /// Ends the session with this id (its statement is cancelled, its server connection
    /// closed); false when there is none.
    public func endSession(id: String, by actor: String) -> Bool {
        guard let entry = shared.registry.all.first(where: { $0.status.id == id }) else { return false }
        shared.metrics.increment("rolegate_sessions_ended_total", ["reason": "administrator"])
        entry.channel.pipeline.fireUserInboundEventTriggered(
            SessionEvent.end(.administrator(actor)))
        return true
    }

    /// Whether the server of `database` accepts connections (nil when it does, else why not).
    public func probe(_ database: DatabaseSpec) async -> String? {
        guard let url = try? ConnectionURL(parsing: database.url) else { return "invalid URL" }
        let key = UpstreamKey(url: url, role: "", parameters: [])
        do {
            let channel = try await key.connect(with: ClientBootstrap(group: group).connectTimeout(.seconds(2))).get()
            try? await channel.close()
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Gauges for `/metrics`: connections, sessions per service, server connections per role.
    public var gauges: [(String, [String: String], Double)] {
        var out: [(String, [String: String], Double)] = [
            ("rolegate_client_connections", [:], Double(shared.registry.clientCount))
        ]
        for (service, count) in shared.registry.perServiceCounts.sorted(by: { $0.key < $1.key }) {
            out.append(("rolegate_sessions", ["service": service], Double(count)))
        }
        for (role, count) in shared.roleCounts.snapshot.sorted(by: { $0.key < $1.key }) {
            out.append(("rolegate_server_connections", ["role": role], Double(count)))
        }
        for (role, count) in shared.roleCounts.waitingSnapshot.sorted(by: { $0.key < $1.key }) {
            out.append(("rolegate_pool_waiting_sessions", ["role": role], Double(count)))
        }
        if let id = shared.configuration.instanceID {
            var labels = ["instance": id]
            if let peers = shared.configuration.peers { labels["cancel_tag"] = String(peers.me.cancelTag) }
            out.append(("rolegate_instance_info", labels, 1))
            out.append(("rolegate_peer_instances", [:], Double(shared.configuration.peers?.others.count ?? 0)))
        }
        return out
    }
}

extension GatewayServer {
    /// This instance's id, when it has one.
    public var instanceID: String? { shared.configuration.instanceID }
}
