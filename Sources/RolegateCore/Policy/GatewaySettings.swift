/// `gateway:` in the policy: how `rolegate serve` runs. Every key is optional; a
/// command-line flag overrides the file, and the file overrides the built-in default.
public struct GatewaySettings: Sendable, Equatable {
    /// How clients prove they hold their token.
    public enum ClientAuth: String, Sendable, CaseIterable {
        /// SCRAM-SHA-256 against the token's stored verifier: the token never crosses the wire.
        case scram
        /// The token as a cleartext password, asked for only over TLS (plain-text clients still
        /// get SCRAM): for drivers without SCRAM support.
        case password
    }

    /// `listen: host:port`.
    public var listen: String?
    /// `http: host:port`: the HTTP API (off when absent).
    public var http: String?
    /// PEM files, relative to the policy file.
    public var tlsCert: String?
    public var tlsKey: String?
    /// PEM files for HTTPS on the HTTP API (relative to the policy file); plain HTTP without them.
    public var httpTLSCert: String?
    public var httpTLSKey: String?
    public var requireTLS: Bool?
    public var clientAuth: ClientAuth?
    public var allowCleartextOnLoopback: Bool?
    public var clientLoginTimeout: Duration?
    public var maxClientConnections: Int?
    public var maxClientConnectionsPerService: Int?
    public var poolSize: Int?
    public var serverIdleTimeout: Duration?
    public var serverLifetime: Duration?
    /// A server connection whose connect, login or reset takes longer is given up (default 10s).
    public var serverConnectTimeout: Duration?
    public var endSessionsOnExpiry: Bool?
    /// Append `[rolegate:<token id>]` to the `application_name` the server sees (default: yes).
    public var tagApplicationName: Bool?
    public var shutdownGrace: Duration?
    /// Failed logins per client address per `authFailureWindow` before answers are delayed (0: off).
    public var authFailureLimit: Int?
    public var authFailureWindow: Duration?
    public var authFailureDelay: Duration?
    /// An HTTP request body must arrive within this long (default 30s).
    public var httpBodyTimeout: Duration?
    /// An HTTP connection idle this long is closed (default 60s).
    public var httpIdleTimeout: Duration?
    /// What happens to open sessions while the token store cannot be read.
    public var storeOutagePolicy: StoreOutagePolicy?
    /// Browser origins allowed to call `/mcp` (`https://agent.example.com`). A request with an
    /// `Origin` header not listed is refused (DNS rebinding); agents that send none are unaffected.
    public var mcpAllowedOrigins: [String] = []

    public enum StoreOutagePolicy: String, Sendable, CaseIterable {
        /// Refuse new logins once the token cache is past its staleness bound; open sessions go on (default).
        case refuseLogins = "refuse_logins"
        /// Also end every open session then (nothing may run on tokens that cannot be checked).
        case endSessions = "end_sessions"
    }

    public init() {}

    static let keys: Set<String> = [
        "listen", "http", "tls_cert", "tls_key", "http_tls_cert", "http_tls_key", "require_tls", "client_auth",
        "allow_cleartext_on_loopback",
        "client_login_timeout", "max_client_connections", "max_client_connections_per_service", "pool_size",
        "server_idle_timeout", "server_lifetime", "server_connect_timeout", "end_sessions_on_expiry",
        "tag_application_name", "shutdown_grace",
        "auth_failure_limit",
        "auth_failure_window", "auth_failure_delay", "http_body_timeout", "http_idle_timeout",
        "store_outage_policy", "mcp_allowed_origins",
    ]
}
