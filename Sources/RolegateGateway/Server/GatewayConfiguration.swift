import Foundation
public import Logging
public import NIOPosix
public import NIOSSL
public import RolegateAudit
public import RolegateCore
public import RolegateTokens

/// How `rolegate serve` runs the wire gateway.
public struct GatewayConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var policy: Policy
    /// Role credentials derive from it.
    public var masterKey: MasterKey
    public var verifier: TokenVerifier
    /// Connections that never finish the startup are closed after this long.
    public var clientLoginTimeout: Duration
    public var maxClientConnections: Int
    public var maxClientConnectionsPerService: Int
    /// Open upstream connections per role (in use and idle together).
    public var poolSizePerRole: Int
    /// Idle upstream connections are closed after this long.
    public var serverIdleTimeout: Duration
    /// Upstream connections are not reused after this long.
    public var serverLifetime: Duration
    /// An upstream connection whose connect, login or reset (`DISCARD ALL`) takes longer is
    /// given up and its pool slot freed: a server, or a balancer in front of it, that accepts
    /// the TCP connection and never answers must not hold a slot for ever.
    public var serverConnectTimeout: Duration = .seconds(10)
    /// Accept cleartext passwords (the token itself) from loopback clients.
    public var allowCleartextOnLoopback: Bool
    /// End a session when its token expires.
    public var endSessionsOnExpiry: Bool
    /// Event loops (threads) serving connections.
    public var threads: Int
    /// Serve on these loops instead of a group of ``threads`` of its own. `serve` passes
    /// NIO's singleton group after making it Swift Concurrency's executor, so the HTTP API,
    /// the gateway and every task share one set of threads and a request stays on one.
    /// The gateway does not shut a group it was given down.
    public var eventLoopGroup: MultiThreadedEventLoopGroup?
    /// When set, `SSLRequest` is answered `S` and the session continues over TLS.
    public var tls: NIOSSLContext?
    /// Refuse clients that do not switch to TLS (needs ``tls``).
    public var requireTLS: Bool = false
    /// Ask TLS clients for the token as a cleartext password instead of SCRAM
    /// (`client_auth: password`, for drivers without SCRAM). Plain-text connections still use SCRAM.
    public var passwordOverTLS: Bool = false
    /// Exchanges an identity token (a JWT) sent as the password for the token it grants `user`
    /// (nil: the policy trusts no issuer, and a JWT is only a wrong password). Asked only where
    /// a cleartext password is (``passwordOverTLS``, or loopback with ``allowCleartextOnLoopback``).
    public var identityLogin:
        (@Sendable (_ jwt: String, _ user: String) async -> Result<TokenRecord, IdentityLoginRefusal>)?
    /// Where authentications, sessions and statements are recorded (nil: not audited).
    public var audit: AuditWriter?
    /// Record every statement (not only authentications and sessions).
    public var auditStatements: Bool = true
    /// Record bound parameter values with statements.
    public var auditParameters: Bool = false
    /// How repeated failed logins from one address are slowed down (wire and HTTP alike).
    public var loginThrottle = LoginThrottleSettings()
    /// Append `[rolegate:<token id>]` to the `application_name` the server sees, so that
    /// `pg_stat_activity` names the token behind every backend (`tag_application_name`).
    public var tagApplicationName = true
    /// `end_sessions`: end every open session while the token store cannot be read.
    public var endSessionsOnStoreOutage = false
    /// This instance's id (in logs, metrics and its audit chain).
    public var instanceID: String?
    /// This instance and its peers sharing the store (nil: it runs alone).
    public var peers: PeerDirectory?
    /// Where the gateway says what an operator should know (the token store unreachable and
    /// back, a connection closed after an error), with metadata (`session`, `client`, `service`,
    /// `token_id`); `serve` adds `instance` and writes it as text or JSON lines.
    public var logger = Logger(label: "rolegate.gateway")
    /// Where counters go (shared with the HTTP API's `/metrics`).
    public var metrics = Metrics()

    public init(
        host: String = "127.0.0.1", port: Int = 6432, policy: Policy, masterKey: MasterKey, verifier: TokenVerifier,
        clientLoginTimeout: Duration = .seconds(15), maxClientConnections: Int = 1000,
        maxClientConnectionsPerService: Int = 200, poolSizePerRole: Int = 50,
        serverIdleTimeout: Duration = .seconds(600),
        serverLifetime: Duration = .seconds(3600), allowCleartextOnLoopback: Bool = false,
        endSessionsOnExpiry: Bool = true, threads: Int = System.coreCountForGateway, tls: NIOSSLContext? = nil
    ) {
        self.tls = tls
        self.host = host
        self.port = port
        self.policy = policy
        self.masterKey = masterKey
        self.verifier = verifier
        self.clientLoginTimeout = clientLoginTimeout
        self.maxClientConnections = maxClientConnections
        self.maxClientConnectionsPerService = maxClientConnectionsPerService
        self.poolSizePerRole = poolSizePerRole
        self.serverIdleTimeout = serverIdleTimeout
        self.serverLifetime = serverLifetime
        self.allowCleartextOnLoopback = allowCleartextOnLoopback
        self.endSessionsOnExpiry = endSessionsOnExpiry
        self.threads = threads
    }
}

public enum System {
    public static var coreCountForGateway: Int { max(1, min(4, ProcessInfo.processInfo.activeProcessorCount)) }
}
