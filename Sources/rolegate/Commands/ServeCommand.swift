import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RolegateAudit
import RolegateCore
import RolegateGateway
import RolegateHTTP
import RolegateIdentity
import RolegateStore
import RolegateTokens
import ServiceLifecycle

struct ServeCommand: AsyncParsableCommand {
    /// Audit events deleted per retention transaction (a few hundred milliseconds of SQLite's write lock).
    static let pruneSlice = 50_000

    /// A TLS server context from PEM files, TLS 1.2 at least, offering `protocols` by ALPN.
    static func tlsContext(certificate: String, privateKey: String, protocols: [String]) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: privateKey, format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = protocols
        return try NIOSSLContext(configuration: tls)
    }

    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the PostgreSQL wire gateway: clients log in with user=<service>, password=<token>.",
        discussion: """
            Clients authenticate with SCRAM-SHA-256 against the token's stored verifier; the gateway \
            logs in upstream as the token's role and relays the session. Revoked or expired tokens \
            end their sessions within a second. SIGINT/SIGTERM stop accepting, let sessions finish \
            for the shutdown grace, then close them.

            Every option can also be set under 'gateway:' in the policy (same names, with \
            underscores); a flag given here wins over the file.
            """)

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var storeOptions: StoreOptions

    @Option(help: ArgumentHelp("Address to listen on (default 127.0.0.1:6432).", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("Also serve the HTTP API here (default: off).", valueName: "host:port"))
    var http: String?

    @Option(
        help: ArgumentHelp(
            "Log format of the gateway's log and the HTTP access log: text or json.", valueName: "format"))
    var logFormat: String = "text"

    @Flag(help: ArgumentHelp("Stop when the parent process exits (used by 'rolegate demo').", visibility: .hidden))
    var exitWithParent = false

    @Option(
        help: ArgumentHelp(
            "How clients prove their token: scram (default) or password (asked only over TLS).", valueName: "method"))
    var clientAuth: String?

    @Flag(
        inversion: .prefixedNo,
        help: "Accept the token as a cleartext password from loopback clients (default: no).")
    var allowCleartextOnLoopback: Bool?

    @Option(help: "Close connections that do not finish logging in within this long (default 15s).")
    var clientLoginTimeout: String?

    @Option(help: "Most client connections in total (default 1000).") var maxClientConnections: Int?
    @Option(help: "Most client connections per service (default 200).") var maxClientConnectionsPerService: Int?
    @Option(help: "Most server connections per role, in use and idle (default 50).") var poolSize: Int?
    @Option(help: "Close idle server connections after this long (default 10m).") var serverIdleTimeout: String?
    @Option(help: "Do not reuse a server connection older than this (default 1h).") var serverLifetime: String?
    @Option(help: "Give up a server connection whose connect, login or reset takes longer (default 10s).")
    var serverConnectTimeout: String?
    @Flag(inversion: .prefixedNo, help: "End sessions when their token expires (default: yes).")
    var endSessionsOnExpiry: Bool?
    @Option(help: "How long sessions may finish after SIGTERM (default 10s).") var shutdownGrace: String?
    @Option(help: "Event loop threads (default: cores, at most 4).") var threads: Int?
    @Flag(
        inversion: .prefixedNo,
        help: ArgumentHelp(
            "Run Swift Concurrency's tasks on the event loops (default: yes; off only to measure the difference).",
            visibility: .hidden))
    var sharedEventLoops = true
    @Option(help: ArgumentHelp("TLS certificate chain (PEM) for clients' SSLRequest.", valueName: "file"))
    var tlsCert: String?
    @Option(help: ArgumentHelp("TLS private key (PEM).", valueName: "file")) var tlsKey: String?
    @Flag(inversion: .prefixedNo, help: "Refuse clients that do not use TLS (needs a certificate).")
    var requireTls: Bool?
    @Option(help: ArgumentHelp("TLS certificate chain (PEM) for HTTPS on the HTTP API.", valueName: "file"))
    var httpTlsCert: String?
    @Option(help: ArgumentHelp("TLS private key (PEM) for the HTTP API.", valueName: "file")) var httpTlsKey: String?
    @Option(
        help: ArgumentHelp(
            "This instance's id among those sharing the store (default: $ROLEGATE_INSTANCE_ID, else generated once and kept beside the master key).",
            valueName: "id"))
    var instanceId: String?
    @Option(
        help: ArgumentHelp(
            "Where peer instances reach this one's wire port (default: the listen address; the host name for 0.0.0.0).",
            valueName: "host:port"))
    var advertise: String?

    /// Makes NIO's singleton event loops (`threads` of them) run Swift Concurrency's tasks
    /// too, before anything starts them. The gateway, the HTTP API (Hummingbird serves on
    /// the singleton group) and every `async` step then share one set of threads, and an
    /// HTTP request is parsed, checked, queried and answered on the loop it arrived on
    /// instead of crossing to the cooperative pool and back (about half its CPU went to
    /// those thread switches). Called by `main`, on the main thread, once.
    static func runConcurrencyOnEventLoops(threads: Int?) {
        NIOSingletons.groupLoopCountSuggestion = threads ?? System.coreCountForGateway
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }

    /// With `TZ` unset, glibc checks /etc/localtime again (a `stat`) on every local-time
    /// conversion, i.e. for every text log line; naming the same file in `TZ` makes it read
    /// the zone once. Called by `main` before any thread starts (setenv is not thread-safe).
    static func pinTimeZone() {
        if getenv("TZ") == nil, FileManager.default.fileExists(atPath: "/etc/localtime") {
            setenv("TZ", ":/etc/localtime", 1)
        }
    }

    func validate() throws {
        if let listen, HostPort.parse(listen) == nil {
            throw ValidationError("--listen: expected host:port, got '\(listen)'")
        }
        if let http, HostPort.parse(http) == nil {
            throw ValidationError("--http: expected host:port, got '\(http)'")
        }
        if let advertise, HostPort.parse(advertise) == nil {
            throw ValidationError("--advertise: expected host:port, got '\(advertise)'")
        }
        if let instanceId, InstanceIdentity.problem(instanceId) != nil {
            throw ValidationError("--instance-id: \(InstanceIdentity.problem(instanceId)!)")
        }
        guard ["text", "json"].contains(logFormat) else {
            throw ValidationError("--log-format: expected text or json, got '\(logFormat)'")
        }
        if let clientAuth, GatewaySettings.ClientAuth(rawValue: clientAuth) == nil {
            throw ValidationError("--client-auth: expected scram or password, got '\(clientAuth)'")
        }
        _ = try parseDuration(clientLoginTimeout, flag: "--client-login-timeout")
        _ = try parseDuration(shutdownGrace, flag: "--shutdown-grace")
        _ = try parseDuration(serverIdleTimeout, flag: "--server-idle-timeout")
        _ = try parseDuration(serverLifetime, flag: "--server-lifetime")
        if let timeout = try parseDuration(serverConnectTimeout, flag: "--server-connect-timeout"), timeout <= .zero {
            throw ValidationError("--server-connect-timeout must be longer than zero")
        }
        for (flag, value) in [
            ("--max-client-connections", maxClientConnections),
            ("--max-client-connections-per-service", maxClientConnectionsPerService), ("--pool-size", poolSize),
            ("--threads", threads),
        ] {
            if let value, value < 1 { throw ValidationError("\(flag) must be at least 1") }
        }
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if (httpTlsCert == nil) != (httpTlsKey == nil) {
            throw ValidationError("--http-tls-cert and --http-tls-key go together")
        }
    }

    func run() async throws {
        let loaded = try policy.load()
        let file = loaded.gateway
        let baseDirectory = URL(fileURLWithPath: policy.path).deletingLastPathComponent().path
        func relative(_ path: String) -> String { path.hasPrefix("/") ? path : baseDirectory + "/" + path }

        let listenText = listen ?? file.listen ?? "127.0.0.1:6432"
        guard let (host, port) = HostPort.parse(listenText) else {
            throw CLIError("gateway.listen: expected host:port, got '\(listenText)'")
        }
        let certificate = tlsCert ?? file.tlsCert.map(relative)
        let privateKey = tlsKey ?? file.tlsKey.map(relative)
        let requireTLS = requireTls ?? file.requireTLS ?? false
        if requireTLS, certificate == nil {
            throw CLIError(
                "require_tls needs a TLS certificate and key (--tls-cert/--tls-key or gateway.tls_cert/tls_key)")
        }
        let auth = clientAuth.flatMap(GatewaySettings.ClientAuth.init) ?? file.clientAuth ?? .scram
        if auth == .password, certificate == nil, !(allowCleartextOnLoopback ?? file.allowCleartextOnLoopback ?? false)
        {
            Terminal.note(
                "rolegate: client_auth password takes effect over TLS only, and no certificate is configured: clients use SCRAM"
            )
        }

        guard let key = try MasterKeySupport.loadIfPresent(for: loaded) else {
            throw CLIError("no master key at \(MasterKeySupport.path(for: loaded)); run 'rolegate apply' first")
        }
        let store = try await storeOptions.open(policy: loaded, policyPath: policy.path)
        let verifier = TokenVerifier(store: store, policy: loaded)
        var configuration = GatewayConfiguration(
            host: host, port: port, policy: loaded, masterKey: key, verifier: verifier,
            clientLoginTimeout: try parseDuration(clientLoginTimeout, flag: "--client-login-timeout")
                ?? file.clientLoginTimeout ?? .seconds(15),
            maxClientConnections: maxClientConnections ?? file.maxClientConnections ?? 1000,
            maxClientConnectionsPerService: maxClientConnectionsPerService ?? file.maxClientConnectionsPerService
                ?? 200,
            poolSizePerRole: poolSize ?? file.poolSize ?? 50,
            serverIdleTimeout: try parseDuration(serverIdleTimeout, flag: "--server-idle-timeout")
                ?? file.serverIdleTimeout ?? .seconds(600),
            serverLifetime: try parseDuration(serverLifetime, flag: "--server-lifetime") ?? file.serverLifetime
                ?? .seconds(3600),
            allowCleartextOnLoopback: allowCleartextOnLoopback ?? file.allowCleartextOnLoopback ?? false,
            endSessionsOnExpiry: endSessionsOnExpiry ?? file.endSessionsOnExpiry ?? true)
        configuration.serverConnectTimeout =
            try parseDuration(serverConnectTimeout, flag: "--server-connect-timeout") ?? file.serverConnectTimeout
            ?? .seconds(10)
        configuration.passwordOverTLS = auth == .password

        let throttleDefaults = LoginThrottleSettings()
        configuration.loginThrottle = LoginThrottleSettings(
            limit: file.authFailureLimit ?? throttleDefaults.limit,
            window: file.authFailureWindow ?? throttleDefaults.window,
            delay: file.authFailureDelay ?? throttleDefaults.delay)
        // This instance among those sharing the store: its id (in logs, metrics and its audit
        // chain) and its cancel tag and addresses for its peers.
        let identity: String
        do {
            identity = try InstanceIdentity.resolve(
                flag: instanceId,
                directory: URL(fileURLWithPath: MasterKeySupport.path(for: loaded))
                    .deletingLastPathComponent().path, port: port)
        } catch {
            await store.close()
            throw error
        }
        // What peers dial: a wildcard listen address is reached by this host's name.
        func reachable(_ host: String, _ port: Int) -> String {
            let wildcard = ["0.0.0.0", "::", "[::]", ""].contains(host)
            return "\(wildcard ? ProcessInfo.processInfo.hostName : host):\(port)"
        }
        let advertised = advertise ?? reachable(host, port)
        // Peers call the HTTP API with the scheme it serves (HTTPS when it has a certificate).
        let httpsForPeers = (httpTlsCert ?? file.httpTLSCert) != nil
        let httpAdvertised = (http ?? file.http).flatMap(HostPort.parse).map(reachable).map {
            httpsForPeers ? "https://" + $0 : $0
        }
        if port != 0 {
            do {
                configuration.peers = try await PeerDirectory.register(
                    store: store, id: identity, wireAddress: advertised, httpAddress: httpAdvertised)
            } catch {
                await store.close()
                throw CLIError("cannot register this instance in the store: \(error)")
            }
        }
        configuration.instanceID = identity
        let lineFormat = LogLineHandler.Format(rawValue: logFormat) ?? .text
        var gatewayLogger = Logger(label: "rolegate.gateway") { LogLineHandler(label: $0, format: lineFormat) }
        gatewayLogger[metadataKey: "instance"] = "\(identity)"
        configuration.logger = gatewayLogger
        let registered = configuration.peers?.me.id
        /// A serve that stops before it serves leaves no row behind in the peer table (its
        /// peers would keep dialing it until the row aged out).
        func leavePeers() async {
            if let registered { try? await store.removeInstance(id: registered) }
        }
        configuration.endSessionsOnStoreOutage = file.storeOutagePolicy == .endSessions
        configuration.tagApplicationName = file.tagApplicationName ?? true
        // The audit log writes through its own store connection, so a slow audit batch never
        // delays the token change feed the verifier depends on.
        var auditWriter: AuditWriter?
        var auditStore: (any Store)?
        if loaded.audit.enabled {
            let opened: any Store
            do {
                opened = try await storeOptions.open(policy: loaded, policyPath: policy.path, forAudit: true)
            } catch {
                await leavePeers()
                await store.close()
                throw error
            }
            auditStore = opened
            let writer = AuditWriter(
                store: opened, instance: loaded.audit.instance ?? identity,
                capacity: loaded.audit.queueSize,
                failurePolicy: loaded.audit.onFailure == .block ? .block : .continue
            ) { message in Terminal.note("rolegate: \(message)") }
            auditWriter = writer
            configuration.audit = writer
            configuration.auditStatements = loaded.audit.statements
            configuration.auditParameters = loaded.audit.parameters
        }
        let openedAuditStore = auditStore
        /// Both store connections, on every way out before serving (SQLite connections must be
        /// closed explicitly), after leaving the peer table.
        func closeStores() async {
            await leavePeers()
            await openedAuditStore?.close()
            await store.close()
        }
        if let threads { configuration.threads = threads }
        if sharedEventLoops { configuration.eventLoopGroup = .singleton }
        // Every session holds two sockets (client and server): raise the open-file limit to
        // what the system allows, and say so when it cannot hold the configured clients.
        let files = FileLimit.raiseToHard()
        if files < configuration.maxClientConnections * 2 + 100 {
            Terminal.note(
                "rolegate: warning: the open-file limit is \(files), too low for max_client_connections \(configuration.maxClientConnections) (each session needs two); raise it (ulimit -n, LimitNOFILE=)"
            )
        }
        if let certificate, let privateKey {
            do {
                // PostgreSQL 17 clients offer ALPN "postgresql" (and require it for direct TLS).
                configuration.tls = try Self.tlsContext(
                    certificate: certificate, privateKey: privateKey, protocols: ["postgresql"])
                configuration.requireTLS = requireTLS
            } catch {
                await closeStores()
                throw CLIError("cannot load the TLS certificate or key (\(certificate), \(privateKey)): \(error)")
            }
        }
        let httpCertificate = httpTlsCert ?? file.httpTLSCert.map(relative)
        let httpPrivateKey = httpTlsKey ?? file.httpTLSKey.map(relative)
        var httpTLS: NIOSSLContext?
        if let httpCertificate, let httpPrivateKey {
            do {
                httpTLS = try Self.tlsContext(
                    certificate: httpCertificate, privateKey: httpPrivateKey, protocols: ["http/1.1"])
            } catch {
                await closeStores()
                throw CLIError(
                    "cannot load the HTTP API's TLS certificate or key (\(httpCertificate), \(httpPrivateKey)): \(error)"
                )
            }
        }
        let grace = try parseDuration(shutdownGrace, flag: "--shutdown-grace") ?? file.shutdownGrace ?? .seconds(10)
        // Identity tokens from the policy's trusted issuers: exchanged over HTTP, and accepted as
        // the password where a cleartext password is asked for.
        var identityExchange: IdentityExchange?
        if !loaded.trusts.isEmpty {
            let writer = auditWriter
            let exchange = IdentityExchange(
                verifier: IdentityVerifier(trusts: loaded.trusts), policy: loaded, store: store
            ) { events in for event in events { writer?.record(event) } }
            identityExchange = exchange
            configuration.identityLogin = { jwt, user in await exchange.wireLogin(jwt: jwt, user: user) }
        }
        let server: GatewayServer
        let address: SocketAddress
        do {
            server = try GatewayServer(configuration: configuration)
        } catch {
            await closeStores()
            throw CLIError("\(error)")
        }
        do {
            address = try await server.start()
        } catch {
            await closeStores()
            throw CLIError("cannot listen on \(listenText): \(error)")
        }
        Terminal.note(
            "rolegate: instance \(identity)"
                + (configuration.peers.map { " (cancel tag \($0.me.cancelTag), \($0.others.count) peers)" } ?? "")
                + " listening on \(address.ipAddress ?? host):\(address.port ?? port) (store \(store.location))"
                + (auditWriter.map { "; audit chain \($0.instance)" } ?? "; audit off"))
        var httpServing: HTTPServing?
        if let httpText = http ?? file.http, let (httpHost, httpPort) = HostPort.parse(httpText) {
            var settings = HTTPAPI.Settings()
            settings.host = httpHost
            settings.port = httpPort
            if let timeout = file.httpBodyTimeout { settings.bodyTimeout = timeout }
            if let timeout = file.httpIdleTimeout { settings.idleTimeout = timeout }
            settings.tls = httpTLS
            settings.wireAddress = advertised
            let json = logFormat == "json"
            let logger = Logger(label: "rolegate.http") { label in
                LogLineHandler(label: label, format: json ? .json : .text)
            }
            let api = HTTPAPI(
                settings: settings, gateway: server, verifier: verifier, store: auditStore ?? store, policy: loaded,
                masterKey: key, audit: auditWriter, logger: logger,
                identity: identityExchange)
            let scheme = httpTLS == nil ? "http" : "https"
            let serving = api.serve { port in Terminal.note("rolegate: HTTP API on \(scheme)://\(httpHost):\(port)") }
            do {
                _ = try await serving.started()
            } catch {
                // Serving the wire gateway without the HTTP API it was asked for would go unnoticed.
                await serving.shutdown(grace: .zero)
                await server.shutdown(grace: .zero)
                await closeStores()
                throw CLIError("cannot serve the HTTP API on \(httpText): \(error)")
            }
            httpServing = serving
        }
        // Everything long-lived runs as a service of one group, which shuts them down in
        // reverse order on SIGTERM/SIGINT (see ServeServices.swift).
        let note: @Sendable (String) -> Void = { Terminal.note($0) }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let auditWriter { services.append(.init(service: AuditWriterService(writer: auditWriter, note: note))) }
        services.append(.init(service: TokenFeedService(verifier: verifier, logger: configuration.logger)))
        if let peers = configuration.peers {
            services.append(
                .init(service: PeerDirectoryService(peers: peers, store: store) { note("rolegate: \($0)") }))
        }
        if let auditStore, let retention = loaded.audit.retention {
            services.append(
                .init(
                    service: RetentionService(
                        store: auditStore, retention: retention, slice: Self.pruneSlice, note: note)))
        }
        if !loaded.access.isEmpty || !loaded.webhooks.isEmpty {
            let writer = auditWriter
            services.append(
                .init(
                    service: AccessService(
                        requests: AccessRequests(store: store, policy: loaded) { events in
                            for event in events { writer?.record(event) }
                        },
                        webhooks: WebhookDispatcher(store: store, webhooks: loaded.webhooks))))
        }
        if exitWithParent {
            services.append(.init(service: ParentWatchService(), successTerminationBehavior: .gracefullyShutdownGroup))
        }
        // Shut down in reverse: the sweeper stops only after the front doors did.
        services.append(.init(service: SessionSweeperService(gateway: server)))
        services.append(.init(service: FrontDoorsService(gateway: server, http: httpServing, grace: grace, note: note)))
        var lifecycleLogger = Logger(label: "rolegate.lifecycle")
        lifecycleLogger.logLevel = .critical
        var groupConfiguration = ServiceGroupConfiguration(services: services, logger: lifecycleLogger)
        groupConfiguration.gracefulShutdownSignals = [.sigterm, .sigint]
        do {
            try await ServiceGroup(configuration: groupConfiguration).run()
        } catch {
            Terminal.note("rolegate: stopped by an error: \(error)")
            await leavePeers()
            await auditStore?.close()
            await store.close()
            throw ExitCode.failure
        }
        await auditStore?.close()
        await store.close()
    }
}
