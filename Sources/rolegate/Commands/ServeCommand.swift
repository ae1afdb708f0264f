import ArgumentParser
import Foundation
import NIOCore
import NIOSSL
import RolegateCore
import RolegateGateway
import RolegateStore
import RolegateTokens

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the PostgreSQL wire gateway: clients log in with user=<service>, password=<token>.",
        discussion: """
            Clients authenticate with SCRAM-SHA-256 against the token's stored verifier; the gateway \
            logs in upstream as the token's role and relays the session. Revoked or expired tokens \
            end their sessions within a second. SIGINT/SIGTERM stop accepting, let sessions finish \
            for --shutdown-grace, then close them.
            """)

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var storeOptions: StoreOptions

    @Option(help: ArgumentHelp("Address to listen on.", valueName: "host:port"))
    var listen = "127.0.0.1:6432"

    @Flag(help: "Accept the token as a cleartext password from loopback clients (SCRAM is always offered otherwise).")
    var allowCleartextOnLoopback = false

    @Option(help: "Close connections that do not finish logging in within this long.")
    var clientLoginTimeout = "15s"

    @Option(help: "Most client connections in total.") var maxClientConnections = 1000
    @Option(help: "Most client connections per service.") var maxClientConnectionsPerService = 200
    @Option(help: "Most server connections per role (in use and idle).") var poolSize = 50
    @Option(help: "How long sessions may finish after SIGTERM.") var shutdownGrace = "10s"
    @Option(help: "Event loop threads (default: cores, at most 4).") var threads: Int?
    @Option(help: ArgumentHelp("TLS certificate chain (PEM) for clients' SSLRequest.", valueName: "file"))
    var tlsCert: String?
    @Option(help: ArgumentHelp("TLS private key (PEM).", valueName: "file")) var tlsKey: String?
    @Flag(help: "Refuse clients that do not use TLS (needs --tls-cert and --tls-key).") var requireTls = false

    func validate() throws {
        guard parseListen(listen) != nil else { throw ValidationError("--listen: expected host:port, got '\(listen)'") }
        _ = try parseDuration(clientLoginTimeout, flag: "--client-login-timeout")
        _ = try parseDuration(shutdownGrace, flag: "--shutdown-grace")
        if maxClientConnections < 1 || maxClientConnectionsPerService < 1 || poolSize < 1 {
            throw ValidationError("connection limits must be at least 1")
        }
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if requireTls, tlsCert == nil {
            throw ValidationError("--require-tls needs --tls-cert and --tls-key")
        }
    }

    func run() async throws {
        let loaded = try policy.load()
        for database in loaded.databases {
            let url = try ConnectionURL(parsing: database.url)
            if [.require, .verifyCA, .verifyFull].contains(url.sslMode) {
                throw CLIError(
                    "database \(database.name): sslmode=\(url.sslMode.rawValue) for the upstream connection is not supported by the gateway yet"
                )
            }
        }
        guard let key = try MasterKeySupport.loadIfPresent(for: loaded) else {
            throw CLIError("no master key at \(MasterKeySupport.path(for: loaded)); run 'rolegate apply' first")
        }
        let store = try await storeOptions.open(policy: loaded, policyPath: policy.path)
        let verifier = TokenVerifier(store: store, policy: loaded)
        let (host, port) = parseListen(listen)!
        var configuration = GatewayConfiguration(
            host: host, port: port, policy: loaded, masterKey: key, verifier: verifier,
            clientLoginTimeout: try parseDuration(clientLoginTimeout, flag: "--client-login-timeout")!,
            maxClientConnections: maxClientConnections, maxClientConnectionsPerService: maxClientConnectionsPerService,
            poolSizePerRole: poolSize, allowCleartextOnLoopback: allowCleartextOnLoopback)
        if let threads { configuration.threads = max(1, threads) }
        if let tlsCert, let tlsKey {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(tlsCert).map { NIOSSLCertificateSource.certificate($0) }
                let key = try NIOSSLPrivateKey(file: tlsKey, format: .pem)
                var tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: chain, privateKey: .privateKey(key))
                tls.minimumTLSVersion = .tlsv12
                configuration.tls = try NIOSSLContext(configuration: tls)
                configuration.requireTLS = requireTls
            } catch {
                throw CLIError("cannot load the TLS certificate or key (\(tlsCert), \(tlsKey)): \(error)")
            }
        }
        let server = GatewayServer(configuration: configuration)
        let address: SocketAddress
        do {
            address = try await server.start()
        } catch {
            await store.close()
            throw CLIError("cannot listen on \(listen): \(error)")
        }
        Terminal.note(
            "rolegate: listening on \(address.ipAddress ?? host):\(address.port ?? port) (store \(store.location))")
        await waitForSignal()
        Terminal.note("rolegate: shutting down")
        await server.shutdown(grace: try parseDuration(shutdownGrace, flag: "--shutdown-grace")!)
        await store.close()
    }

    private func parseListen(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}
