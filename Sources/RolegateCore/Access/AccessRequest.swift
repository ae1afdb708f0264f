public import Foundation

/// One request for a requestable grant (``AccessSpec``), from pending to a final state.
public struct AccessRequest: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable {
        case pending
        /// Granted: the requester may pick up a token until ``AccessRequest/grantedUntil``.
        case approved
        case denied
        /// Nobody answered within the grant's `pending_timeout`.
        case expired
        /// Ended early by a person: its token is revoked, its sessions end.
        case revoked
        /// The granted time is up: its token expired, its sessions ended.
        case finished

        /// Nothing reopens a request in a final state.
        public var isFinal: Bool { self != .pending && self != .approved }
    }

    /// An approver's answer.
    public struct Decision: Sendable, Equatable {
        public var approver: String
        public var approve: Bool
        public var comment: String?
        public var at: Date

        public init(approver: String, approve: Bool, comment: String?, at: Date) {
            self.approver = approver
            self.approve = approve
            self.comment = comment
            self.at = at
        }
    }

    public var id: String
    /// The `access:` entry's name.
    public var access: String
    public var role: String
    /// The login that asked (a person's name or a service).
    public var requester: String
    public var reason: String?
    public var duration: Duration
    public var state: State
    /// Granted without approval (no approvers): flagged everywhere.
    public var breakGlass: Bool
    public var createdAt: Date
    public var pendingUntil: Date
    public var decidedAt: Date?
    public var grantedUntil: Date?
    /// The token picked up for it, once.
    public var tokenID: String?
    public var endedAt: Date?
    public var endReason: String?
    public var decisions: [Decision] = []

    public init(
        id: String, access: String, role: String, requester: String, reason: String?, duration: Duration,
        state: State, breakGlass: Bool, createdAt: Date, pendingUntil: Date, decidedAt: Date? = nil,
        grantedUntil: Date? = nil, tokenID: String? = nil, endedAt: Date? = nil, endReason: String? = nil
    ) {
        self.id = id
        self.access = access
        self.role = role
        self.requester = requester
        self.reason = reason
        self.duration = duration
        self.state = state
        self.breakGlass = breakGlass
        self.createdAt = createdAt
        self.pendingUntil = pendingUntil
        self.decidedAt = decidedAt
        self.grantedUntil = grantedUntil
        self.tokenID = tokenID
        self.endedAt = endedAt
        self.endReason = endReason
    }

    public var approvals: [Decision] { decisions.filter(\.approve) }
}

/// One signed delivery of an access event to a webhook, retried until it is accepted.
public struct WebhookDelivery: Sendable, Equatable {
    public enum State: String, Sendable {
        case pending, delivered, failed
    }

    public var id: Int64
    public var webhook: String
    public var event: String
    public var requestID: String?
    public var body: String
    public var createdAt: Date
    public var attempts: Int
    public var nextAttemptAt: Date
    public var state: State
    public var lastStatus: Int?
    public var lastError: String?
    public var deliveredAt: Date?

    public init(
        id: Int64 = 0, webhook: String, event: String, requestID: String?, body: String, createdAt: Date,
        attempts: Int = 0, nextAttemptAt: Date, state: State = .pending, lastStatus: Int? = nil,
        lastError: String? = nil, deliveredAt: Date? = nil
    ) {
        self.id = id
        self.webhook = webhook
        self.event = event
        self.requestID = requestID
        self.body = body
        self.createdAt = createdAt
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.state = state
        self.lastStatus = lastStatus
        self.lastError = lastError
        self.deliveredAt = deliveredAt
    }
}
