/// `audit:` in the policy: what the audit log records and how it behaves when the store
/// cannot keep up.
public struct AuditSettings: Sendable, Equatable {
    public enum OnFailure: String, Sendable, CaseIterable {
        /// Refuse new sessions and statements while events cannot be written (default).
        case block
        /// Keep serving; count and log dropped events.
        case `continue`
    }

    /// Record anything at all (default true).
    public var enabled = true
    /// Record every statement, not only authentications and sessions (default true).
    public var statements = true
    /// Record bound parameter values with statements (default false: they may hold personal data).
    public var parameters = false
    public var onFailure = OnFailure.block
    /// Events older than this are pruned (a checkpoint keeps the chain verifiable); nil keeps everything.
    public var retention: Duration? = .seconds(90 * 86_400)
    /// Events held in memory while the store is slow or down (about 0.5 KiB each).
    public var queueSize = 100_000
    /// This writer's chain name (default `gateway@<host>:<port>`).
    public var instance: String?

    public init() {}

    static let keys: Set<String> = [
        "enabled", "statements", "parameters", "on_failure", "retention", "queue_size", "instance",
    ]
}
