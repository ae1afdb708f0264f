import Foundation
import NIOCore
import PostgresWire
import RolegateCore
import RolegateTestSupport
import RolegateTokens
import Testing

@testable import RolegateGateway

/// The session's protocol logic, event by event, without a network or a store.
@Suite(.ownThreads) struct ClientSessionMachineTests {
    typealias Machine = ClientSessionMachine

    let policy = Policy(
        databases: [DatabaseSpec(name: "app", url: "postgres://admin@db.internal:5433/appdb?sslmode=require")],
        roles: [RoleSpec(name: "billing_rw", database: "app")],
        services: [ServiceSpec(name: "billing-api", role: "billing_rw")])
    let token = "rgt_aaaaaaaaaaaaaaaa_" + String(repeating: "b", count: 52) + "ccccccc"
    let salt: [UInt8] = Array(repeating: 7, count: 16)

    func machine(
        tls: Bool = false, requireTLS: Bool = false, passwordOverTLS: Bool = false, loopback: Bool = false,
        passwordOnLoopback: Bool = false
    ) -> Machine {
        Machine(
            settings: .init(
                policy: policy, tlsAvailable: tls, requireTLS: requireTLS, passwordOverTLS: passwordOverTLS,
                passwordOnLoopback: passwordOnLoopback, fromLoopback: loopback))
    }

    func record(id: String = "aaaaaaaaaaaaaaaa", expiresIn: TimeInterval = 3600) -> TokenRecord {
        TokenRecord(
            id: id, service: "billing-api", role: "billing_rw", issuedAt: Date(),
            expiresAt: Date().addingTimeInterval(expiresIn), issuer: "test",
            secret: TokenSecret(token: token, salt: salt, iterations: 4096))
    }

    func startup(_ parameters: [(String, String)], major: Int = 3, minor: Int = 0) -> StartupPacket {
        .startup(major: major, minor: minor, parameters: parameters.map { StartupParameter($0.0, $0.1) })
    }

    func refusal(_ action: Machine.Action) -> ErrorFields? {
        if case .refuse(let fields) = action { return fields }
        return nil
    }

    /// Drives a SCRAM login up to the admission check; returns the client's proof message.
    func scramUpToProof(
        _ m: inout Machine, password: String, candidates: [TokenRecord]?, extra: [(String, String)] = []
    ) throws -> Machine.Action {
        let start = m.startupPacket(
            startup([("user", "billing-api"), ("database", "app")] + extra), bytesFollow: false)
        #expect(start == .send([Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"])]))
        var client = SCRAMClient(password: password)
        let lookup = m.passwordMessage(
            Frontend.saslInitialResponse(mechanism: "SCRAM-SHA-256", data: client.clientFirst()))
        #expect(lookup == .lookUpTokens(service: "billing-api", fresh: false))
        let challenge = m.tokensLoaded(.success(candidates), decoySalt: Array(repeating: 9, count: 16), nonce: "srv")
        guard case .send(let messages) = challenge, messages.count == 1,
            case .authenticationSASLContinue(let serverFirst) = BackendStartupMessage(messages[0])
        else {
            Issue.record("expected a SASL challenge, got \(challenge)")
            return challenge
        }
        let final = try client.receiveServerFirst(serverFirst)
        return m.passwordMessage(Frontend.saslResponse(final))
    }

    @Test func scramLoginConnectsUpstreamAsTheTokensRoleAndTagsTheBackend() throws {
        var m = machine()
        let record = record()
        let admit = try scramUpToProof(&m, password: token, candidates: [record])
        #expect(admit == .admit(record))
        guard case .connectUpstream(let request, let send) = m.admission(nil) else {
            Issue.record("expected an upstream connection")
            return
        }
        #expect(request.key.role == "billing_rw")
        #expect(request.key.database == "appdb")
        #expect(request.key.host == "db.internal" && request.key.port == 5433)
        #expect(request.key.tls.mode == .require)
        #expect(request.key.parameters.contains(StartupParameter("application_name", "rolegate:aaaaaaaaaaaaaaaa")))
        #expect(send.count == 1)
        let key = CancelKey(processID: 42, secret: [1, 2, 3, 4])
        let ready = m.upstreamReady(
            parameterStatus: [("server_version", "15.8")], transactionStatus: UInt8(ascii: "I"), cancelKey: key)
        #expect(
            ready
                == .startRelaying([
                    Backend.authenticationOk(), Backend.parameterStatus("server_version", "15.8"),
                    Backend.backendKeyData(processID: 42, secretKey: [1, 2, 3, 4]),
                    Backend.readyForQuery(UInt8(ascii: "I")),
                ]))
        #expect(m.isRelaying)
    }

    /// The server sees the client's application_name tagged with the token id (or as it is, with
    /// `tag_application_name: false`); the client is told the value it set, never the tag.
    @Test func theClientIsToldItsOwnApplicationNameWhateverTheServerSees() throws {
        for tagging in [true, false] {
            var m = Machine(
                settings: .init(
                    policy: policy, tlsAvailable: false, requireTLS: false, passwordOverTLS: false,
                    passwordOnLoopback: false, fromLoopback: false, tagApplicationName: tagging))
            let record = record()
            _ = try scramUpToProof(&m, password: token, candidates: [record], extra: [("application_name", "billing")])
            guard case .connectUpstream(let request, _) = m.admission(nil) else {
                Issue.record("expected an upstream connection")
                return
            }
            let upstream = request.key.parameters.filter { $0.name == "application_name" }.map(\.value)
            #expect(upstream == [tagging ? "billing [rolegate:aaaaaaaaaaaaaaaa]" : "billing"], "\(upstream)")
            let ready = m.upstreamReady(
                parameterStatus: [("application_name", upstream.first ?? "")], transactionStatus: UInt8(ascii: "I"),
                cancelKey: CancelKey(processID: 7, secret: [1, 2, 3, 4]))
            guard case .startRelaying(let messages) = ready else {
                Issue.record("expected the session to start, got \(ready)")
                return
            }
            #expect(messages.contains(Backend.parameterStatus("application_name", "billing")))
        }
    }

    @Test func aWrongTokenIsRetriedOnceAgainstFreshRecordsThenRefusedWith28P01() throws {
        var m = machine()
        let record = record()
        let retry = try scramUpToProof(&m, password: token + "x", candidates: [record])
        #expect(retry == .lookUpTokens(service: "billing-api", fresh: true))
        let refused = m.tokensLoaded(.success([record]), decoySalt: [], nonce: "x")
        #expect(refusal(refused)?.code == "28P01")
        #expect(refusal(refused)?.message == "password authentication failed for user \"billing-api\"")
        #expect(m.isClosed)
    }

    @Test func aTokenIssuedDuringTheLoginIsFoundByTheRetry() throws {
        var m = machine()
        let old = record(id: "oldoldoldoldoldo")
        let new = record()
        // The first read saw only the old token (same salt: every token of a service shares it).
        var oldSecret = old
        oldSecret.secret = TokenSecret(token: "something-else", salt: salt, iterations: 4096)
        let retry = try scramUpToProof(&m, password: token, candidates: [oldSecret])
        #expect(retry == .lookUpTokens(service: "billing-api", fresh: true))
        #expect(m.tokensLoaded(.success([oldSecret, new]), decoySalt: [], nonce: "x") == .admit(new))
    }

    @Test func anUnknownServiceGetsTheSameAnswerAsAWrongToken() throws {
        var m = machine()
        let retry = try scramUpToProof(&m, password: token, candidates: nil)
        #expect(retry == .lookUpTokens(service: "billing-api", fresh: true))
        let refused = m.tokensLoaded(.success(nil), decoySalt: [], nonce: "x")
        #expect(
            refusal(refused) == ErrorFields.fatal("28P01", "password authentication failed for user \"billing-api\""))
    }

    @Test func revokedExpiredFullAndShuttingDownAreRefusedWithTheirReasons() throws {
        for (refusalReason, code, text) in [
            (Machine.AdmissionRefusal.revoked, "28000", "token revoked"),
            (.expired, "28000", "token expired"),
            (.serviceFull, "53300", "too many connections for service \"billing-api\""),
            (.shuttingDown, "57P03", "the gateway is shutting down"),
        ] {
            var m = machine()
            _ = try scramUpToProof(&m, password: token, candidates: [record()])
            #expect(refusal(m.admission(refusalReason)) == ErrorFields.fatal(code, text))
        }
    }

    @Test func theStoreBeingDownIsAConnectionFailureNotAWrongPassword() throws {
        var m = machine()
        _ = m.startupPacket(startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
        _ = m.passwordMessage(
            Frontend.saslInitialResponse(mechanism: "SCRAM-SHA-256", data: SCRAMClient(password: "x").clientFirst()))
        #expect(refusal(m.tokensLoaded(.failure(.unavailable), decoySalt: [], nonce: "n"))?.code == "08006")
    }

    @Test func tlsIsNegotiatedBeforeTheStartupAndBytesAheadOfItAreRefused() {
        var m = machine(tls: true)
        #expect(m.startupPacket(.sslRequest, bytesFollow: false) == .startTLS)
        #expect(!m.expectsStartupPacket)
        #expect(m.tlsEstablished(alpn: nil) == .wait)
        #expect(m.encrypted && m.expectsStartupPacket)
        // A second request inside TLS is declined, not nested.
        #expect(m.startupPacket(.sslRequest, bytesFollow: false) == .declineEncryption)

        var downgrade = machine(tls: true)
        #expect(refusal(downgrade.startupPacket(.sslRequest, bytesFollow: true))?.code == "08P01")

        var plain = machine()
        #expect(plain.startupPacket(.sslRequest, bytesFollow: false) == .declineEncryption)
        #expect(plain.startupPacket(.gssEncRequest, bytesFollow: false) == .declineEncryption)
    }

    @Test func directTLSNeedsACertificateAndTheALPNPostgresql() {
        var direct = machine(tls: true)
        #expect(direct.directTLS() == .startDirectTLS)
        #expect(direct.tlsEstablished(alpn: "postgresql") == .wait)
        #expect(direct.encrypted && direct.expectsStartupPacket)

        var noALPN = machine(tls: true)
        _ = noALPN.directTLS()
        #expect(refusal(noALPN.tlsEstablished(alpn: nil))?.message.contains("ALPN") == true)

        var noCertificate = machine()
        #expect(refusal(noCertificate.directTLS())?.code == "08P01")
    }

    @Test func requireTLSRefusesPlainStartups() {
        var m = machine(tls: true, requireTLS: true)
        #expect(refusal(m.startupPacket(startup([("user", "billing-api")]), bytesFollow: false))?.code == "28000")
    }

    @Test func theTokenAsAPasswordOnlyOverTLSOrOnLoopbackWhenAllowed() {
        var plain = machine(tls: true, passwordOverTLS: true)
        #expect(
            plain.startupPacket(startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
                == .send([Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"])]))

        var encrypted = machine(tls: true, passwordOverTLS: true)
        _ = encrypted.startupPacket(.sslRequest, bytesFollow: false)
        _ = encrypted.tlsEstablished(alpn: "postgresql")
        #expect(
            encrypted.startupPacket(startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
                == .send([Backend.authenticationCleartextPassword()]))
        #expect(encrypted.passwordMessage(Frontend.password(token)) == .verifyPassword(token))

        var loopbackNotAllowed = machine(loopback: true)
        #expect(
            loopbackNotAllowed.startupPacket(
                startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
                == .send([Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"])]))
        var loopback = machine(loopback: true, passwordOnLoopback: true)
        #expect(
            loopback.startupPacket(startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
                == .send([Backend.authenticationCleartextPassword()]))
        #expect(loopback.passwordMessage(Frontend.password(token)) == .verifyPassword(token))
        #expect(refusal(loopback.passwordVerified(.failure(.revoked))) == ErrorFields.fatal("28000", "token revoked"))
    }

    /// A JWT sent as the password is exchanged (only when the gateway trusts an issuer); the
    /// exchanged token must be for the user who logged in, and a refusal says why.
    @Test func anIdentityTokenAsThePasswordIsExchanged() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
        func loggedIn(identity: Bool) -> Machine {
            var m = machine(loopback: true, passwordOnLoopback: true)
            m.settings.identityPasswords = identity
            _ = m.startupPacket(startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
            return m
        }
        var without = loggedIn(identity: false)
        #expect(without.passwordMessage(Frontend.password(jwt)) == .verifyPassword(jwt))
        var with = loggedIn(identity: true)
        #expect(with.passwordMessage(Frontend.password(jwt)) == .exchangeIdentity(jwt: jwt, user: "billing-api"))
        let exchanged = record()
        #expect(with.identityExchanged(.success(exchanged)) == .admit(exchanged))
        var other = loggedIn(identity: true)
        _ = other.passwordMessage(Frontend.password(jwt))
        var foreign = record()
        foreign.service = "reports"
        #expect(refusal(other.identityExchanged(.success(foreign)))?.message.contains("user=reports") == true)
        var refused = loggedIn(identity: true)
        _ = refused.passwordMessage(Frontend.password(jwt))
        let answer = refused.identityExchanged(.failure(IdentityLoginRefusal(message: "the identity token expired")))
        #expect(refusal(answer) == ErrorFields.fatal("28000", "the identity token expired"))
        // A Rolegate token is never taken for a JWT.
        var token = loggedIn(identity: true)
        #expect(token.passwordMessage(Frontend.password(self.token)) == .verifyPassword(self.token))
    }

    @Test func startupProblemsAreNamed() {
        var unknownDatabase = machine()
        #expect(
            refusal(
                unknownDatabase.startupPacket(
                    startup([("user", "billing-api"), ("database", "nope")]), bytesFollow: false))
                == ErrorFields.fatal("3D000", "database \"nope\" does not exist"))
        var oldProtocol = machine()
        #expect(
            refusal(oldProtocol.startupPacket(startup([("user", "x")], major: 2), bytesFollow: false))?.code == "0A000")
        var noUser = machine()
        #expect(refusal(noUser.startupPacket(startup([("database", "app")]), bytesFollow: false))?.code == "28000")
        var replication = machine()
        #expect(
            refusal(
                replication.startupPacket(
                    startup([("user", "billing-api"), ("replication", "database")]), bytesFollow: false))?
                .code == "0A000")
        var newer = machine()
        let negotiated = newer.startupPacket(
            startup([("user", "billing-api"), ("database", "app"), ("_pq_.compression", "on")], minor: 2),
            bytesFollow: false)
        #expect(
            negotiated
                == .send([
                    Backend.negotiateProtocolVersion(minor: 0, unrecognized: ["_pq_.compression"]),
                    Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"]),
                ]))
    }

    @Test func onlyPasswordMessagesAndSCRAMAreAcceptedDuringAuthentication() {
        var wrongType = machine()
        _ = wrongType.startupPacket(startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
        #expect(refusal(wrongType.passwordMessage(Frontend.query("SELECT 1")))?.code == "08P01")
        var wrongMechanism = machine()
        _ = wrongMechanism.startupPacket(startup([("user", "billing-api"), ("database", "app")]), bytesFollow: false)
        #expect(
            refusal(
                wrongMechanism.passwordMessage(Frontend.saslInitialResponse(mechanism: "SCRAM-SHA-256-PLUS", data: [])))?
                .code == "28000")
    }

    @Test func theLoginTimeoutNamesWhatWasPending() throws {
        var startingUp = machine()
        #expect(
            refusal(startingUp.loginTimedOut(after: .seconds(15)))?.message.contains("startup did not complete") == true
        )
        var waiting = machine()
        _ = try scramUpToProof(&waiting, password: token, candidates: [record()])
        _ = waiting.admission(nil)
        #expect(refusal(waiting.loginTimedOut(after: .seconds(15)))?.code == "53300")
        #expect(waiting.loginTimedOut(after: .seconds(15)) == .wait)  // already closed
    }

    @Test func aCancelRequestIsRoutedByItsKeyAndClosesTheConnection() {
        var m = machine()
        #expect(
            m.startupPacket(.cancel(processID: 7, secretKey: [9, 9, 9, 9]), bytesFollow: false)
                == .cancel(CancelKey(processID: 7, secret: [9, 9, 9, 9])))
        #expect(m.isClosed)
    }

    @Test func aFailedUpstreamLoginIsAConnectionError() throws {
        var m = machine()
        _ = try scramUpToProof(&m, password: token, candidates: [record()])
        _ = m.admission(nil)
        let refused = m.upstreamFailed(UpstreamError(.unreachable, "connection refused"))
        #expect(refusal(refused)?.code == "08006")
        #expect(refusal(refused)?.message.contains("database \"app\"") == true)
        var busy = machine()
        _ = try scramUpToProof(&busy, password: token, candidates: [record()])
        _ = busy.admission(nil)
        let full = busy.upstreamFailed(UpstreamError(.busy, "all server connections of role billing_rw are busy"))
        #expect(refusal(full)?.code == "53300")
    }
}
