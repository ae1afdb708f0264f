public import Foundation
public import RolegateCore

/// Everything Rolegate keeps, behind one contract that SQLite (one host) and PostgreSQL
/// (several gateway instances) both fulfil: tokens, the change feed through which every
/// process learns of revocations and rotations, and the schema version.
///
/// Every write is one transaction. The rules that need atomicity (one live token per
/// service; a rotation that issues the new token and shortens the old ones) are
/// enforced inside the store's transaction, not by the caller.
public protocol Store: Sendable {
    /// Where the store is, without secrets.
    var location: String { get }

    /// The schema version the store is at (after the migrations run on open).
    func schemaVersion() async throws(StoreError) -> Int

    /// The SCRAM salt all tokens of `service` share, creating it (as `proposed`) if the
    /// service has none yet.
    func serviceSalt(_ service: String, proposed: [UInt8]) async throws(StoreError) -> [UInt8]

    /// Stores a new token. With `exclusive`, refuses (``StoreError/serviceHasLiveToken(_:)``)
    /// when the service already has a usable token. Appends `issued` to the change feed.
    func insertToken(_ token: TokenRecord, exclusive: Bool, now: Date) async throws(StoreError)

    /// Stores `token` and lets the service's usable tokens live only until `graceUntil`
    /// (tokens already in a grace window end now). Appends `rotated` for each old token and
    /// `issued` for the new one. Returns the tokens it superseded.
    func rotate(to token: TokenRecord, graceUntil: Date, now: Date) async throws(StoreError) -> [TokenRecord]

    /// Revokes one token; nil when there is no such token. A token already revoked is
    /// returned unchanged.
    func revoke(id: String, reason: String?, now: Date) async throws(StoreError) -> TokenRecord?

    /// Revokes every usable token of a service and returns them.
    func revokeAll(service: String, reason: String?, now: Date) async throws(StoreError) -> [TokenRecord]

    /// Stores a token exchanged for `token.subject`: that subject's usable tokens of the service
    /// live only until `graceUntil` (one live token per subject), and the exchange is refused
    /// (``StoreError/tooManyLiveTokens(limit:)``) when `maxLive` other subjects already hold a
    /// live token. Appends `rotated` and `issued` like ``rotate(to:graceUntil:now:)``.
    func exchange(
        to token: TokenRecord, graceUntil: Date, maxLive: Int, now: Date
    ) async throws(StoreError)
        -> [TokenRecord]

    /// Revokes every usable token exchanged for `subject` (of one service when given).
    func revokeAll(
        subject: String, service: String?, reason: String?, now: Date
    ) async throws(StoreError)
        -> [TokenRecord]

    /// What a SCRAM login as `service` is checked against: its tokens that are usable or ended
    /// within the last day (so the login can say why it failed), newest first, at most 1,000.
    func loginCandidates(service: String, now: Date) async throws(StoreError) -> [TokenRecord]

    func token(id: String) async throws(StoreError) -> TokenRecord?

    // MARK: Access requests

    func insertAccessRequest(_ request: AccessRequest) async throws(StoreError)

    /// The request with its decisions.
    func accessRequest(id: String) async throws(StoreError) -> AccessRequest?

    /// Requests newest first, of these states when given.
    func accessRequests(states: [AccessRequest.State]?, limit: Int) async throws(StoreError) -> [AccessRequest]

    /// Records an approver's answer in one transaction: refused (``StoreError/accessConflict(_:)``)
    /// unless the request is pending (and not past its pending time) and the approver has not
    /// answered yet. A denial denies; the `minApprovals`-th distinct approval approves, granted
    /// from `now` for the request's duration. Returns the request as it is now.
    func decideAccess(
        id: String, decision: AccessRequest.Decision, minApprovals: Int, now: Date
    ) async throws(StoreError) -> AccessRequest

    /// Records the token picked up for an approved request; false when one was already picked up.
    func attachAccessToken(id: String, tokenID: String) async throws(StoreError) -> Bool

    /// Moves a request from `from` (any open state when nil) to a final `state`; nil when it was
    /// not in such a state (another instance got there first, or it was already final).
    func endAccessRequest(
        id: String, from: [AccessRequest.State]?, to state: AccessRequest.State, reason: String?, now: Date
    ) async throws(StoreError) -> AccessRequest?

    // MARK: Webhook deliveries

    func enqueueWebhookDeliveries(_ deliveries: [WebhookDelivery]) async throws(StoreError)

    /// Pending deliveries due at `now`, each claimed for `claimFor` (another instance leaves it
    /// alone meanwhile).
    func claimDueWebhookDeliveries(
        now: Date, claimFor: Duration, limit: Int
    ) async throws(StoreError)
        -> [WebhookDelivery]

    /// The outcome of an attempt: delivered, retried at `nextAttemptAt`, or failed for good.
    func recordWebhookAttempt(_ delivery: WebhookDelivery) async throws(StoreError)

    /// Deliveries newest first.
    func webhookDeliveries(limit: Int) async throws(StoreError) -> [WebhookDelivery]

    /// Tokens, newest first; of one service when given.
    func tokens(service: String?) async throws(StoreError) -> [TokenRecord]

    /// Records when tokens were last used (batched by the verifier).
    func recordUse(_ uses: [String: Date]) async throws(StoreError)

    /// Change feed entries after `sequence`, oldest first.
    func changes(after sequence: Int64, limit: Int) async throws(StoreError) -> [ChangeEvent]

    /// The newest change feed sequence number (0 when empty).
    func latestChange() async throws(StoreError) -> Int64

    /// A signal each time any process commits a change (PostgreSQL's LISTEN/NOTIFY), or nil
    /// when the store has none (SQLite: the feed is polled).
    func changeSignals() -> AsyncStream<Void>?

    // MARK: Audit log

    /// Appends `events` to `instance`'s hash chain in one transaction, locking only that
    /// chain's head; returns them linked (sequence, previous hash, hash).
    func appendAudit(_ events: [AuditEvent], instance: String) async throws(StoreError) -> [AuditEvent]

    /// ``appendAudit(_:instance:)`` for a caller that does not need the linked events back
    /// (the audit writer): the store may skip making them.
    func recordAudit(_ events: [AuditEvent], instance: String) async throws(StoreError)

    func auditEvents(_ query: AuditQuery) async throws(StoreError) -> [AuditEvent]

    /// How many events of each of `kinds` (by action) each `bucket` (whole seconds) since `since`
    /// held, oldest first (the console's activity chart): counted by the store, never loaded.
    func auditActivity(kinds: [AuditEvent.Kind], since: Date, bucket: Int) async throws(StoreError) -> [AuditActivity]

    /// Walks every instance's chain against its head, stopping each at its first altered,
    /// missing, reordered or moved event: what `rolegate audit verify` and the console's
    /// "verify" report. `pageSize` rows of the earlier layout are read at a time.
    func verifyAuditChains(pageSize: Int) async throws(StoreError) -> [AuditChainReport]

    /// Every chain's head: the sequence and hash of its last append.
    func auditHeads() async throws(StoreError) -> [AuditChainHead]

    /// Deletes `instance`'s oldest events older than `before`, and appends a checkpoint event
    /// recording the hash at the cut, in one transaction; returns how many were deleted (0 once
    /// none is left). Events in blocks go by whole blocks: as many as hold at most `limit`
    /// events, but always one; rows of the layout before blocks, `limit` at a time.
    func pruneAudit(instance: String, before: Date, now: Date, limit: Int) async throws(StoreError) -> Int

    // MARK: Gateway instances

    /// Registers (or re-registers, keeping its cancel tag) a gateway instance and returns it.
    /// A new instance gets the smallest tag no live instance holds; tags of instances not
    /// seen for `staleAfter` are reused.
    func registerInstance(
        id: String, wireAddress: String, httpAddress: String?, now: Date, staleAfter: Duration
    ) async throws(StoreError) -> GatewayInstance

    /// Marks an instance alive now.
    func instanceHeartbeat(id: String, now: Date) async throws(StoreError)

    /// Every registered instance, by tag.
    func instances() async throws(StoreError) -> [GatewayInstance]

    /// Removes an instance (on a clean shutdown).
    func removeInstance(id: String) async throws(StoreError)

    func close() async
}

/// One `rolegate serve` sharing the store: how its peers reach it.
public struct GatewayInstance: Sendable, Equatable {
    public var id: String
    /// 1...32767: the high bits of every cancel key this instance hands out.
    public var cancelTag: Int
    /// host:port where peers forward cancel requests.
    public var wireAddress: String
    /// host:port of its HTTP API (for the admin API's cross-instance views), if it serves one.
    public var httpAddress: String?
    public var startedAt: Date
    public var seenAt: Date

    public init(
        id: String, cancelTag: Int, wireAddress: String, httpAddress: String?, startedAt: Date, seenAt: Date
    ) {
        self.id = id
        self.cancelTag = cancelTag
        self.wireAddress = wireAddress
        self.httpAddress = httpAddress
        self.startedAt = startedAt
        self.seenAt = seenAt
    }
}

/// Which audit events to read.
public struct AuditQuery: Sendable {
    public enum Order: Sendable {
        /// By store id, newest first (`rolegate audit` shows the latest, then reverses).
        case newestFirst
        /// By store id, oldest first (`--follow`).
        case oldestFirst
        /// By sequence within one instance's chain (`audit verify`).
        case chain
    }

    public var kinds: [AuditEvent.Kind] = []
    public var service: String?
    public var tokenID: String?
    /// One session's (or HTTP request's) events. Like `tokenID` and `service`, it picks the
    /// blocks to read by their keys.
    public var sessionID: String?
    /// Only these actions (`ok`, `error`, `refused`…); empty for all.
    public var actions: [String] = []
    public var since: Date?
    public var until: Date?
    public var afterID: Int64?
    public var instance: String?
    public var afterSequence: Int64?
    public var limit: Int = 100
    public var order: Order = .newestFirst

    public init() {}
}

/// Part of one bar of the activity chart: `count` events of `kind` and `action` in the bucket
/// starting `start`.
public struct AuditActivity: Sendable, Equatable {
    public var start: Date
    public var kind: AuditEvent.Kind
    public var action: String
    public var count: Int

    public init(start: Date, kind: AuditEvent.Kind, action: String, count: Int) {
        self.start = start
        self.kind = kind
        self.action = action
        self.count = count
    }
}

/// The last append to one audit chain, as the store recorded it.
public struct AuditChainHead: Sendable, Equatable {
    public var instance: String
    public var sequence: Int64
    public var hash: String
    public var updatedAt: Date

    public init(instance: String, sequence: Int64, hash: String, updatedAt: Date) {
        self.instance = instance
        self.sequence = sequence
        self.hash = hash
        self.updatedAt = updatedAt
    }
}

/// One entry of the change feed.
public struct ChangeEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case issued, rotated, revoked
    }

    public var sequence: Int64
    public var at: Date
    public var kind: Kind
    public var tokenID: String
    public var service: String

    public init(sequence: Int64, at: Date, kind: Kind, tokenID: String, service: String) {
        self.sequence = sequence
        self.at = at
        self.kind = kind
        self.tokenID = tokenID
        self.service = service
    }
}

public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The store could not be opened or reached.
    case unavailable(String)
    /// The store was written by a newer Rolegate.
    case tooNew(found: Int, supported: Int)
    /// The service already holds a usable token (its id).
    case serviceHasLiveToken(String)
    /// As many subjects as the service's `max_live_tokens` already hold a live token.
    case tooManyLiveTokens(limit: Int)
    /// A token exchanged for this identity token was revoked (when): it cannot be exchanged again.
    case identityRevoked(at: Date)
    /// An access request cannot take this decision (why).
    case accessConflict(String)
    /// A query failed.
    case failed(String)

    public var description: String {
        switch self {
        case .unavailable(let message): "store unavailable: \(message)"
        case .tooNew(let found, let supported):
            "the store is at schema version \(found), newer than this Rolegate supports (\(supported)); upgrade Rolegate before using this store (nothing was changed)"
        case .serviceHasLiveToken(let id): "the service already has a live token (\(id))"
        case .accessConflict(let message): message
        case .identityRevoked(let at):
            "a token exchanged for this identity token was revoked at \(at.rfc3339); it cannot be exchanged again (get a new identity token)"
        case .tooManyLiveTokens(let limit):
            "\(limit) subjects already hold a live token of this service (its max_live_tokens); revoke some, or raise the limit"
        case .failed(let message): "store error: \(message)"
        }
    }
}
