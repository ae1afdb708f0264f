/// `access.<name>`: a requestable grant: more privilege (a role of the policy) for a bounded
/// time, after `minApprovals` distinct approvers other than the requester say yes. With no
/// approvers it is break-glass: granted at once, flagged, everyone notified.
public struct AccessSpec: Sendable, Equatable {
    public var name: String
    /// The elevated role (a role of this policy, bound to no service).
    public var role: String
    public var requesters: [Principal]
    public var approvers: [Principal]
    public var minApprovals: Int
    public var maxDuration: Duration
    public var requireReason: Bool
    /// An unanswered request expires after this long.
    public var pendingTimeout: Duration
    public var location: SourceLocation?

    public static let defaultMaxDuration: Duration = .seconds(3600)
    public static let defaultPendingTimeout: Duration = .seconds(1800)
    public static let longestDuration: Duration = .seconds(86_400)

    public init(
        name: String, role: String, requesters: [Principal], approvers: [Principal], minApprovals: Int,
        maxDuration: Duration = AccessSpec.defaultMaxDuration, requireReason: Bool = false,
        pendingTimeout: Duration = AccessSpec.defaultPendingTimeout, location: SourceLocation? = nil
    ) {
        self.name = name
        self.role = role
        self.requesters = requesters
        self.approvers = approvers
        self.minApprovals = minApprovals
        self.maxDuration = maxDuration
        self.requireReason = requireReason
        self.pendingTimeout = pendingTimeout
        self.location = location
    }

    /// No approval needed: granted at once, flagged in the audit log, everyone notified.
    public var isBreakGlass: Bool { approvers.isEmpty }

    /// The `grant` recorded on the tokens it issues (``TokenRecord/grant``).
    public var grant: String { "access:\(name)" }
}

/// Who may request or approve: a person by name (`alice@example.com`), everyone in a group
/// (`group:oncall`), or a service (`service:deploy-bot`, also an admin service standing for a
/// person until people log in through an identity provider).
public enum Principal: Sendable, Hashable, CustomStringConvertible {
    case person(String)
    case group(String)
    case service(String)

    public init(_ text: String) {
        if text.hasPrefix("group:") {
            self = .group(String(text.dropFirst(6)))
        } else if text.hasPrefix("service:") {
            self = .service(String(text.dropFirst(8)))
        } else {
            self = .person(text)
        }
    }

    public var description: String {
        switch self {
        case .person(let name): name
        case .group(let name): "group:\(name)"
        case .service(let name): "service:\(name)"
        }
    }

    /// Whether a caller (the login their token is for, and the groups their identity carried)
    /// is this principal.
    public func includes(login: String, groups: [String], isService: Bool) -> Bool {
        switch self {
        case .person(let name): !isService && name.lowercased() == login.lowercased()
        case .service(let name): isService && name == login
        case .group(let name): groups.contains(name)
        }
    }
}

/// `webhooks.<name>`: where access request events are delivered, signed with HMAC-SHA256.
public struct WebhookSpec: Sendable, Equatable {
    public enum Format: String, Sendable, CaseIterable {
        /// Rolegate's own JSON event.
        case json
        /// A Slack-compatible message (`{"text": …}`) for an incoming webhook.
        case slack
    }

    public static let events: Set<String> = ["requested", "approved", "denied", "expired", "used", "ended"]

    public var name: String
    public var url: String
    /// The HMAC key (from the environment: `${ROLEGATE_WEBHOOK_SECRET}`); never logged.
    public var secret: String
    public var format: Format
    public var events: Set<String>
    public var location: SourceLocation?

    public init(
        name: String, url: String, secret: String, format: Format = .json, events: Set<String> = WebhookSpec.events,
        location: SourceLocation? = nil
    ) {
        self.name = name
        self.url = url
        self.secret = secret
        self.format = format
        self.events = events
        self.location = location
    }
}
