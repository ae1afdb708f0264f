public import RolegateCore

/// Follows the audit log as events are committed, every instance's chain (`rolegate audit
/// --follow`): each poll returns the events committed since the last one that match the query.
///
/// It keeps a place per chain (the last sequence number seen) rather than one place by event id.
/// PostgreSQL hands out block ids from a sequence before the block's transaction commits, so of
/// two instances appending at once, the one with the lower id can commit second; a follower past
/// the higher id would never see the lower one. A chain's own events commit in sequence order
/// (one writer per instance, the chain's head row locked), so a place per chain misses nothing.
public struct AuditFollower: Sendable {
    /// The filters (kinds, service, token, session, actions, times); its order, instance,
    /// sequence and limit are the follower's own.
    public var query: AuditQuery
    /// Events per chain read at a time.
    public var pageSize = 1000
    /// Each chain's last sequence number seen.
    public private(set) var places: [String: Int64]

    /// Starts after `heads`, the chains' heads as they were (events after them are new).
    public init(query: AuditQuery, after heads: [AuditChainHead]) {
        self.query = query
        places = Dictionary(heads.map { ($0.instance, $0.sequence) }, uniquingKeysWith: { max($0, $1) })
    }

    /// Marks `events` (e.g. the page shown before following) as seen.
    public mutating func saw(_ events: [AuditEvent]) {
        for event in events where event.sequence > places[event.instance, default: 0] {
            places[event.instance] = event.sequence
        }
    }

    /// The matching events committed since the last poll: each chain's in sequence order, the
    /// chains' merged by time. A chain that appears later (a new instance) is read from its start.
    public mutating func poll(_ store: any Store) async throws(StoreError) -> [AuditEvent] {
        var found: [AuditEvent] = []
        for head in try await store.auditHeads().sorted(by: { $0.instance < $1.instance }) {
            var place = places[head.instance, default: 0]
            guard head.sequence > place else { continue }
            var page = query
            page.instance = head.instance
            page.order = .chain
            page.limit = pageSize
            page.afterID = nil
            while true {
                page.afterSequence = place
                let events = try await store.auditEvents(page)
                found += events
                place = events.last?.sequence ?? place
                // Everything up to the head read before this page was committed, matching or not.
                guard events.count == pageSize else {
                    place = max(place, head.sequence)
                    break
                }
            }
            places[head.instance] = place
        }
        return found.sorted { ($0.at, $0.instance, $0.sequence) < ($1.at, $1.instance, $1.sequence) }
    }
}
