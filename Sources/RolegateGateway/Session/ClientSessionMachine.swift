package import NIOCore
package import PostgresWire
package import RolegateCore
package import RolegateTokens

/// A client connection from its first byte to its last: encryption negotiation, startup,
/// token authentication, admission, the upstream login, then the relay (``ClientRelay``)
/// and whether its server connection may serve anyone else afterwards. A value type without
/// I/O: the channel handler decodes packets, feeds them in as events and performs the action
/// each event returns (write, start TLS, look up tokens, connect upstream, forward, refuse).
///
/// The order it enforces: no upstream connection, no pool slot and no session slot
/// before the token is proven; the token checked again as it is at the moment of admission;
/// every refusal is one FATAL `ErrorResponse`, then close.
package struct ClientSessionMachine {
    /// How the client proves it holds the token.
    package enum Method: Equatable, Sendable {
        /// SCRAM-SHA-256 against the token's stored verifier: the token never crosses the wire.
        case scram
        /// The token as a cleartext password (only over TLS or from loopback, by configuration).
        case password
    }

    package struct Settings: Sendable {
        package var policy: Policy
        /// A TLS certificate is configured: `SSLRequest` is answered `S`.
        package var tlsAvailable: Bool
        /// Refuse sessions that did not switch to TLS.
        package var requireTLS: Bool
        /// Ask TLS clients for the token as a cleartext password (`client_auth: password`).
        package var passwordOverTLS: Bool
        /// Ask loopback clients for the token as a cleartext password.
        package var passwordOnLoopback: Bool
        /// The client connects from 127.0.0.0/8, ::1 or a Unix socket.
        package var fromLoopback: Bool
        /// The policy's database URLs, parsed once for all logins (a database missing here is parsed at its login).
        package var databaseURLs: [String: ConnectionURL] = [:]
        /// Tag the `application_name` the server sees with the token id (`tag_application_name`).
        package var tagApplicationName = true
        /// A JWT sent as the password is exchanged (``GatewayConfiguration/identityLogin``).
        package var identityPasswords = false

        package init(
            policy: Policy, tlsAvailable: Bool, requireTLS: Bool, passwordOverTLS: Bool, passwordOnLoopback: Bool,
            fromLoopback: Bool, databaseURLs: [String: ConnectionURL] = [:], tagApplicationName: Bool = true
        ) {
            self.policy = policy
            self.tlsAvailable = tlsAvailable
            self.requireTLS = requireTLS
            self.passwordOverTLS = passwordOverTLS
            self.passwordOnLoopback = passwordOnLoopback
            self.fromLoopback = fromLoopback
            self.databaseURLs = databaseURLs
            self.tagApplicationName = tagApplicationName
        }
    }

    package struct Login: Sendable {
        package var service: String
        package var database: DatabaseSpec
        package var url: ConnectionURL
        /// Startup parameters to pass upstream (not user, database, replication or `_pq_.*`).
        package var parameters: [StartupParameter]
        package var method: Method
        package var scram: SCRAMServer?
        package var candidates: [TokenRecord] = []
    }

    /// Where the upstream login goes and as whom; the handler adds the role's credential.
    package struct UpstreamRequest: Equatable, Sendable {
        package var key: UpstreamKey
        package var record: TokenRecord
        package var database: String
    }

    package enum State {
        case awaitingStartup
        /// `S` was sent (or the client opened with TLS directly): a TLS handshake, then the startup packet.
        case negotiatingTLS(direct: Bool)
        case awaitingPassword(Login)
        /// The client's first SCRAM message arrived; the service's token verifiers are being read.
        case lookingUpTokens(Login, clientFirst: [UInt8])
        /// The proof matched no known token; reading them once more in case one was issued a moment ago.
        case lookingUpAgain(Login, clientFinal: [UInt8])
        case verifyingPassword(Login)
        /// The proof matched: the handler takes a session slot and checks the token as it is now.
        case admitting(Login, TokenRecord, serverFinal: [UInt8]?)
        case connecting(Login, TokenRecord)
        case relaying(TokenRecord)
        case closed
    }

    package enum Action: Equatable {
        /// Nothing to do until more input or the next event.
        case wait
        case send([WireMessage])
        /// Write the single byte `S`, then put TLS in front of everything.
        case startTLS
        /// The client's first bytes are a TLS ClientHello (`sslnegotiation=direct`): put TLS in
        /// front of everything and hand it those bytes.
        case startDirectTLS
        /// Write the single byte `N`: the client may go on in plain text.
        case declineEncryption
        /// Read the service's token records (`fresh` bypasses the cache).
        case lookUpTokens(service: String, fresh: Bool)
        /// Verify a token the client sent as a password.
        case verifyPassword(String)
        /// Exchange the identity token (a JWT) the client sent as a password for `user`'s token.
        case exchangeIdentity(jwt: String, user: String)
        /// Register the session, then check the token `record` was read as is still allowed now
        /// (it may have been revoked since the proof began); answer with ``admission(_:)``.
        case admit(TokenRecord)
        /// Open (or take from the pool) a server connection, after sending `send`.
        case connectUpstream(UpstreamRequest, send: [WireMessage])
        /// The session is ready: send these (AuthenticationOk … ReadyForQuery), then relay.
        case startRelaying([WireMessage])
        /// Forward a cancel request to the session holding this key (if any), then close.
        case cancel(CancelKey)
        /// Send this FATAL error, then close.
        case refuse(ErrorFields)
    }

    /// Why the handler could not admit a proven token.
    package enum AdmissionRefusal: Equatable {
        case revoked
        case expired
        case denied
        case serviceFull
        /// The token is an admin token: HTTP admin API only, never a database.
        case adminToken
        /// The gateway began shutting down during the login.
        case shuttingDown
        /// The token's current state cannot be read (the store is down): fail closed.
        case unavailable
    }

    /// The longest message a client may send before its session relays (a password or SCRAM message).
    package static let authMessageLimit = 16 * 1024

    package private(set) var state = State.awaitingStartup
    /// The login being (or last) attempted, kept after a refusal for the audit log.
    package private(set) var login: Login?
    /// The token the client proved it holds, once it did (kept after a refusal).
    package private(set) var provenToken: TokenRecord?
    package private(set) var encrypted = false
    /// The client side of the relay, once the session relays.
    package private(set) var relay = ClientRelay()
    /// The session was ended from outside (revocation, an administrator, shutdown).
    package private(set) var endedFromOutside = false
    package var settings: Settings

    package init(settings: Settings) {
        self.settings = settings
    }

    package var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    package var isRelaying: Bool {
        if case .relaying = state { return true }
        return false
    }

    /// Whether input should be framed as a startup packet (no type byte).
    package var expectsStartupPacket: Bool {
        if case .awaitingStartup = state { return true }
        return false
    }

    /// Whether input should be framed as a password message now.
    package var expectsPasswordMessage: Bool {
        if case .awaitingPassword = state { return true }
        return false
    }

    // MARK: - Input from the client

    /// The client's first byte is 0x16, a TLS handshake record: PostgreSQL 17's direct TLS.
    package mutating func directTLS() -> Action {
        guard case .awaitingStartup = state, !encrypted else {
            return refuse("08P01", "unexpected TLS handshake")
        }
        guard settings.tlsAvailable else {
            return refuse("08P01", "direct TLS connection, but this gateway has no TLS certificate configured")
        }
        state = .negotiatingTLS(direct: true)
        return .startDirectTLS
    }

    /// The TLS handshake finished; `alpn` is the negotiated application protocol. Direct TLS
    /// must have negotiated `postgresql`, as PostgreSQL requires (so a TLS connection meant
    /// for another service cannot be replayed here).
    package mutating func tlsEstablished(alpn: String?) -> Action {
        guard case .negotiatingTLS(let direct) = state else { return .wait }
        encrypted = true
        if direct, alpn != "postgresql" {
            return refuse("08P01", "direct TLS connections must negotiate the ALPN protocol \"postgresql\"")
        }
        state = .awaitingStartup
        return .wait
    }

    /// A complete startup-phase packet. `bytesFollow` is true when more bytes arrived with
    /// it: after an encryption request that is a downgrade attempt (CVE-2021-23214).
    package mutating func startupPacket(_ packet: StartupPacket, bytesFollow: Bool) -> Action {
        guard case .awaitingStartup = state else {
            return refuse("08P01", "unexpected startup packet")
        }
        switch packet {
        case .sslRequest, .gssEncRequest:
            if bytesFollow { return refuse("08P01", "received unencrypted data after an encryption request") }
            if packet == .sslRequest, settings.tlsAvailable, !encrypted {
                state = .negotiatingTLS(direct: false)
                return .startTLS
            }
            // No TLS here (or already encrypted), and never GSS: the client may go on in plain text.
            return .declineEncryption
        case .cancel(let processID, let secret):
            state = .closed
            return .cancel(CancelKey(processID: processID, secret: secret))
        case .startup(let major, let minor, let parameters):
            return startup(major: major, minor: minor, parameters: parameters)
        }
    }

    private mutating func startup(major: Int, minor: Int, parameters: [StartupParameter]) -> Action {
        if settings.requireTLS, !encrypted {
            return refuse("28000", "this gateway accepts TLS connections only (use sslmode=require)")
        }
        guard major == 3 else {
            return refuse("0A000", "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.0")
        }
        var messages: [WireMessage] = []
        let protocolOptions = parameters.filter { $0.name.hasPrefix("_pq_.") }.map(\.name)
        if minor > 0 || !protocolOptions.isEmpty {
            messages.append(Backend.negotiateProtocolVersion(minor: 0, unrecognized: protocolOptions))
        }
        func value(_ name: String) -> String? { parameters.last { $0.name == name }?.value }
        guard let service = value("user"), !service.isEmpty else {
            return refuse("28000", "no user name specified in the startup packet")
        }
        if let replication = value("replication"), !["false", "off", "no", "0"].contains(replication.lowercased()) {
            return refuse("0A000", "replication connections are not supported by the gateway")
        }
        // A person's database is their role's (their name is an email, not a database).
        let personal = settings.policy.person(named: service).flatMap { settings.policy.role(named: $0.role)?.database }
        let databaseName = value("database").flatMap { $0.isEmpty ? nil : $0 } ?? personal ?? service
        guard let database = settings.policy.database(named: databaseName),
            let url = settings.databaseURLs[database.name] ?? (try? ConnectionURL(parsing: database.url))
        else {
            return refuse("3D000", "database \"\(databaseName)\" does not exist")
        }
        let passed = parameters.filter {
            !["user", "database", "replication"].contains($0.name) && !$0.name.hasPrefix("_pq_.")
        }
        let password = (encrypted && settings.passwordOverTLS) || (settings.fromLoopback && settings.passwordOnLoopback)
        let login = Login(
            service: service, database: database, url: url, parameters: passed, method: password ? .password : .scram)
        self.login = login
        state = .awaitingPassword(login)
        messages.append(
            password
                ? Backend.authenticationCleartextPassword() : Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"]))
        return .send(messages)
    }

    /// A complete message while ``expectsPasswordMessage``.
    package mutating func passwordMessage(_ message: WireMessage) -> Action {
        guard case .awaitingPassword(let login) = state else {
            return refuse("08P01", "unexpected message during authentication")
        }
        guard message.type == UInt8(ascii: "p") else {
            return refuse(
                "08P01", "expected a password response, got message type '\(Character(Unicode.Scalar(message.type)))'")
        }
        switch login.method {
        case .password:
            guard let token = try? PasswordMessageBody.password(message.body) else {
                return refuse("08P01", "malformed password message")
            }
            state = .verifyingPassword(login)
            if settings.identityPasswords, Self.looksLikeJWT(token) {
                return .exchangeIdentity(jwt: token, user: login.service)
            }
            return .verifyPassword(token)
        case .scram where login.scram == nil:
            guard let (mechanism, data) = try? PasswordMessageBody.saslInitialResponse(message.body) else {
                return refuse("08P01", "malformed SASLInitialResponse")
            }
            guard mechanism == "SCRAM-SHA-256" else {
                return refuse("28000", "SASL mechanism \(mechanism) is not supported (use SCRAM-SHA-256)")
            }
            state = .lookingUpTokens(login, clientFirst: data)
            return .lookUpTokens(service: login.service, fresh: false)
        case .scram:
            let data = PasswordMessageBody.saslResponse(message.body)
            var attempt = login.scram!
            do {
                let (index, final) = try attempt.receiveClientFinal(
                    data, candidates: login.candidates.map(\.secret.scram))
                state = .admitting(login, login.candidates[index], serverFinal: final)
                return .admit(login.candidates[index])
            } catch .proofRejected {
                // The candidates may predate a token issued a moment ago: ask the store once more.
                state = .lookingUpAgain(login, clientFinal: data)
                return .lookUpTokens(service: login.service, fresh: true)
            } catch {
                return refuseAuthentication(login)
            }
        }
    }

    /// The framing of a startup packet or password message failed.
    package mutating func malformedInput(_ error: FramingError) -> Action {
        refuse("08P01", error.description)
    }

    // MARK: - Results of the handler's work

    /// The service's token records (nil: no such service or no tokens) for a SCRAM login.
    /// `decoySalt` is the stable made-up salt for services without tokens, so their
    /// challenge looks like any other; `nonce` is this exchange's server nonce.
    package mutating func tokensLoaded(
        _ result: Result<[TokenRecord]?, TokenVerifier.Failure>, decoySalt: [UInt8], nonce: String
    ) -> Action {
        switch state {
        case .lookingUpTokens(var login, let clientFirst):
            guard case .success(let records) = result else { return storeUnavailable() }
            login.candidates = records ?? []
            // Every token of a service shares its salt.
            let verifier = login.candidates.first?.secret.scram
            // Without tokens, the challenge looks like the service's (or any service's) would.
            let iterations =
                verifier?.iterations ?? settings.policy.service(named: login.service)?.scramIterations
                ?? ServiceSpec.defaultSCRAMIterations
            var server = SCRAMServer(
                salt: verifier?.salt ?? decoySalt, iterations: iterations, serverNonce: nonce)
            do {
                let first = try server.receiveClientFirst(clientFirst)
                login.scram = server
                state = .awaitingPassword(login)
                return .send([Backend.authenticationSASLContinue(first)])
            } catch .channelBindingUnsupported {
                return refuse("28000", "SCRAM channel binding is not supported by this server")
            } catch {
                return refuse("08P01", "malformed SCRAM message")
            }
        case .lookingUpAgain(var login, let clientFinal):
            // Only a changed set of tokens under the same salt can change the answer.
            guard case .success(let records?) = result, records.map(\.id) != login.candidates.map(\.id),
                login.candidates.isEmpty
                    || records.first?.secret.scram.salt == login.candidates.first?.secret.scram.salt,
                var attempt = login.scram
            else { return refuseAuthentication(login) }
            login.candidates = records
            guard
                let (index, final) = try? attempt.receiveClientFinal(
                    clientFinal, candidates: records.map(\.secret.scram))
            else { return refuseAuthentication(login) }
            state = .admitting(login, records[index], serverFinal: final)
            return .admit(records[index])
        default:
            return .wait
        }
    }

    /// The outcome of ``Action/verifyPassword(_:)``.
    /// A JWT's shape (`eyJ…` header, three dot-separated parts); a Rolegate token starts `rgt_`.
    static func looksLikeJWT(_ password: String) -> Bool {
        password.hasPrefix("eyJ") && password.utf8.lazy.filter { $0 == UInt8(ascii: ".") }.count == 2
    }

    /// The identity token sent as a password was exchanged (or refused, saying why).
    package mutating func identityExchanged(_ result: Result<TokenRecord, IdentityLoginRefusal>) -> Action {
        guard case .verifyingPassword(let login) = state else { return .wait }
        switch result {
        case .success(let record) where record.service == login.service:
            state = .admitting(login, record, serverFinal: nil)
            return .admit(record)
        case .success(let record):
            return refuse(
                "28000",
                "the identity token grants \"\(record.service)\", not \"\(login.service)\" (connect as user=\(record.service))"
            )
        case .failure(let refusal):
            return refuse(refusal.sqlState, refusal.message)
        }
    }

    package mutating func passwordVerified(_ result: Result<TokenVerifier.Verified, TokenVerifier.Failure>) -> Action {
        guard case .verifyingPassword(let login) = state else { return .wait }
        switch result {
        case .success(let verified) where verified.service == login.service:
            state = .admitting(login, verified.record, serverFinal: nil)
            return .admit(verified.record)
        case .failure(.revoked): return refuse("28000", "token revoked")
        case .failure(.expired): return refuse("28000", "token expired")
        case .failure(.unavailable): return storeUnavailable()
        default: return refuseAuthentication(login)
        }
    }

    /// The outcome of ``Action/admit(_:)``.
    package mutating func admission(_ refusal: AdmissionRefusal?) -> Action {
        guard case .admitting(let login, let record, let serverFinal) = state else { return .wait }
        provenToken = record
        switch refusal {
        case .revoked?: return refuse("28000", "token revoked")
        case .expired?: return refuse("28000", "token expired")
        case .denied?: return refuseAuthentication(login)
        case .serviceFull?: return refuse("53300", "too many connections for service \"\(login.service)\"")
        case .adminToken?:
            return refuse(
                "28000",
                "service \"\(login.service)\" holds admin tokens: they work on the HTTP admin API only, never on a database"
            )
        case .shuttingDown?: return refuse("57P03", "the gateway is shutting down")
        case .unavailable?: return storeUnavailable()
        case nil: break
        }
        state = .connecting(login, record)
        // application_name carries the token id, so pg_stat_activity attributes every backend
        // (unless the policy says otherwise: some applications find their own backends by it).
        var parameters = login.parameters
        if settings.tagApplicationName {
            parameters.removeAll { $0.name == "application_name" }
            let application = login.parameters.last { $0.name == "application_name" }?.value ?? ""
            let tag = "rolegate:\(record.id)"
            parameters.append(
                StartupParameter("application_name", application.isEmpty ? tag : "\(application.prefix(40)) [\(tag)]"))
        }
        let key = UpstreamKey(
            url: login.url, role: record.role, auth: login.database.upstreamAuth, parameters: parameters)
        return .connectUpstream(
            UpstreamRequest(key: key, record: record, database: login.database.name),
            send: serverFinal.map { [Backend.authenticationSASLFinal($0)] } ?? [])
    }

    /// The server connection is ready: tell the client it is logged in.
    package mutating func upstreamReady(
        parameterStatus: [(String, String)], transactionStatus: UInt8, cancelKey: CancelKey
    ) -> Action {
        guard case .connecting(_, let record) = state else { return .wait }
        state = .relaying(record)
        var messages = [Backend.authenticationOk()]
        // The server saw application_name tagged with the token id (for pg_stat_activity and the
        // audit); the client is told what it set itself, as PostgreSQL would tell it.
        let application = login?.parameters.last { $0.name == "application_name" }?.value ?? ""
        messages += parameterStatus.map {
            Backend.parameterStatus($0.0, $0.0 == "application_name" ? application : $0.1)
        }
        messages.append(Backend.backendKeyData(processID: cancelKey.processID, secretKey: cancelKey.secret))
        messages.append(Backend.readyForQuery(transactionStatus))
        return .startRelaying(messages)
    }

    /// No server connection could be had.
    package mutating func upstreamFailed(_ error: UpstreamError) -> Action {
        guard case .connecting(let login, _) = state else { return .wait }
        return refuse(
            error.sqlState == "53300" ? "53300" : "08006",
            "could not open a server connection for database \"\(login.database.name)\": \(error.description)")
    }

    /// `client_login_timeout` passed.
    package mutating func loginTimedOut(after timeout: Duration) -> Action {
        switch state {
        case .relaying, .closed: return .wait
        case .connecting(_, let record):
            return refuse(
                "53300",
                "no server connection for role \"\(record.role)\" became free within \(DurationText.format(timeout)) (all are in use by other sessions)"
            )
        default:
            return refuse("08P01", "the startup did not complete within \(DurationText.format(timeout))")
        }
    }

    /// The session must end (a lost server connection, the client gone).
    package mutating func end(_ code: String, _ message: String) -> Action {
        if case .closed = state { return .wait }
        return refuse(code, message)
    }

    /// The session is ended from outside (revocation, expiry, an administrator, shutdown),
    /// whether it relays yet or still waits for its server connection.
    package mutating func ended(_ end: SessionEnd) -> Action {
        if case .closed = state { return .wait }
        endedFromOutside = true
        return refuse(end.code, end.message)
    }

    /// The server ended the session itself (it told the client so already).
    package mutating func serverEnded() {
        state = .closed
    }

    // MARK: - Relaying

    /// The client's unprocessed bytes while the session relays: what goes to the server (counted
    /// in its `ledger`), what waits, and whether the session ends (see ``ClientRelay``).
    package mutating func clientBytes(
        _ buffer: ByteBuffer, limits: WireLimits, auditing: Bool, auditAccepting: () -> Bool,
        ledger: inout RequestLedger, now: @autoclosure () -> NIODeadline
    ) -> ClientRelay.Step {
        guard case .relaying = state else { return ClientRelay.Step() }
        let step = relay.clientBytes(
            buffer, limits: limits, auditing: auditing, auditAccepting: auditAccepting, ledger: &ledger, now: now())
        switch step.next {
        case .terminate, .end: state = .closed
        case .readMore, .hold: break
        }
        return step
    }

    /// Whether the session's server connection may go back to the pool once the session ends:
    /// not when the session was ended from outside (its last statement may have been cancelled
    /// half way) or in the middle of a large message (the server holds part of it). The pool
    /// also requires every answer owed to have arrived (``RequestLedger``) and the reset to pass.
    package var serverConnectionReusable: Bool {
        !endedFromOutside && !relay.insideMessage
    }

    // MARK: - Refusals

    private mutating func refuse(_ code: String, _ message: String) -> Action {
        state = .closed
        return .refuse(ErrorFields.fatal(code, message))
    }

    /// Wrong, unknown or malformed token, or unknown service: one answer for all.
    private mutating func refuseAuthentication(_ login: Login) -> Action {
        refuse("28P01", "password authentication failed for user \"\(login.service)\"")
    }

    private mutating func storeUnavailable() -> Action {
        refuse("08006", "the token store is unavailable; try again")
    }
}
