import Foundation
import NIOCore
import PostgresWire
import RolegateCore
import RolegateTestSupport
import Testing

@testable import RolegateGateway

/// The gateway's login to a database server, message by message, against honest and hostile servers.
@Suite(.ownThreads) struct UpstreamLoginMachineTests {
    typealias Machine = UpstreamLoginMachine
    let password = "role-credential-never-to-leak"
    let salt: [UInt8] = Array(repeating: 9, count: 16)

    func machine(_ allowed: UpstreamAuthMethods = .standard, encrypted: Bool = false) -> Machine {
        Machine(
            settings: .init(role: "billing_rw", database: "appdb", allowed: allowed, encrypted: encrypted),
            password: password)
    }

    /// Whether `action` carries any form of the credential.
    func leaks(_ action: Machine.Action) -> Bool {
        guard case .send(let message) = action else { return false }
        let bytes = Array(message.encoded().readableBytesView)
        return message.type == UInt8(ascii: "p") && bytes.count > 5
            && (String(decoding: bytes, as: UTF8.self).contains(password)
                || String(decoding: bytes, as: UTF8.self).contains("md5"))
    }

    func failure(_ action: Machine.Action) -> String? {
        if case .fail(let description, _) = action { return description }
        return nil
    }

    /// The server's side of an honest SCRAM exchange, driven through the machine.
    func scramUpToFinal(_ m: inout Machine) throws -> (SCRAMServer, [UInt8]) {
        guard case .send(let first) = m.received(.authenticationSASL(mechanisms: ["SCRAM-SHA-256"])) else {
            Issue.record("no SASLInitialResponse")
            throw CancellationError()
        }
        let (_, clientFirst) = try PasswordMessageBody.saslInitialResponse(first.body)
        var server = SCRAMServer(salt: salt, iterations: 4096)
        let serverFirst = try server.receiveClientFirst(clientFirst)
        guard case .send(let final) = m.received(.authenticationSASLContinue(serverFirst)) else {
            Issue.record("no SASLResponse")
            throw CancellationError()
        }
        return (server, PasswordMessageBody.saslResponse(final.body))
    }

    @Test func anHonestSCRAMLoginIsReadyOnlyAfterTheServerSignatureAndReadyForQuery() throws {
        var m = machine()
        var (server, clientFinal) = try scramUpToFinal(&m)
        let verifier = SCRAMSHA256.verifier(password: password, salt: salt)
        let (_, serverFinal) = try server.receiveClientFinal(clientFinal, candidates: [verifier])
        #expect(m.received(.authenticationSASLFinal(serverFinal)) == .wait)
        #expect(m.received(.authenticationOk) == .wait)
        #expect(m.received(.parameterStatus(name: "server_version", value: "15.8")) == .wait)
        #expect(m.received(.backendKeyData(processID: 4242, secretKey: [1, 2, 3, 4])) == .wait)
        #expect(!m.isReady)
        #expect(m.received(.readyForQuery(UInt8(ascii: "I"))) == .ready)
        #expect(m.processID == 4242 && m.secretKey == [1, 2, 3, 4] && m.method == "scram-sha-256")
        #expect(m.parameterStatus.map(\.0) == ["server_version"])
    }

    @Test func aForgedOrMissingServerSignatureEndsTheLogin() throws {
        // A server that does not know the verifier signs with the wrong key.
        var forged = machine()
        _ = try scramUpToFinal(&forged)
        let wrong = "v=" + Data(repeating: 1, count: 32).base64EncodedString()
        let refused = failure(forged.received(.authenticationSASLFinal(Array(wrong.utf8))))
        #expect(refused?.contains("signature is wrong") == true, "\(refused ?? "accepted")")
        #expect(forged.received(.authenticationOk) == .wait && !forged.isReady)

        // A server that skips the signature and says "OK".
        var skipped = machine()
        _ = try scramUpToFinal(&skipped)
        let noSignature = failure(skipped.received(.authenticationOk))
        #expect(noSignature?.contains("without proving") == true, "\(noSignature ?? "accepted")")
        #expect(skipped.received(.readyForQuery(UInt8(ascii: "I"))) == .wait && !skipped.isReady)

        // ReadyForQuery straight away, before any authentication.
        var early = machine()
        #expect(failure(early.received(.readyForQuery(UInt8(ascii: "I")))) != nil)
        #expect(!early.isReady)
    }

    @Test func clearTextAndMD5AreRefusedUnlessTheDatabaseAllowsThemAndNothingLeaks() {
        for asked in [
            BackendStartupMessage.authenticationCleartextPassword, .authenticationMD5Password(salt: [1, 2, 3, 4]),
        ] {
            var m = machine()
            let action = m.received(asked)
            #expect(!leaks(action))
            let message = failure(action)
            #expect(message?.contains("appdb") == true && message?.contains("does not allow") == true, "\(action)")
        }
        // Trust (no authentication) is refused by default as well: anything on the path could say "OK".
        var trust = machine()
        #expect(failure(trust.received(.authenticationOk))?.contains("no authentication") == true)
        var trusted = machine([.none])
        #expect(trusted.received(.authenticationOk) == .wait)
        #expect(trusted.received(.readyForQuery(UInt8(ascii: "I"))) == .ready)

        // Clear text allowed by the policy: still never without TLS.
        var plain = machine([.password])
        let unencrypted = plain.received(.authenticationCleartextPassword)
        #expect(!leaks(unencrypted) && failure(unencrypted)?.contains("only over TLS") == true, "\(unencrypted)")
        var upgraded = machine([.password])
        upgraded.encryptionEstablished()
        #expect(leaks(upgraded.received(.authenticationCleartextPassword)), "TLS set up after the machine was made")
        var overTLS = machine([.password], encrypted: true)
        #expect(leaks(overTLS.received(.authenticationCleartextPassword)))
        #expect(overTLS.received(.authenticationOk) == .wait)
        #expect(overTLS.received(.readyForQuery(UInt8(ascii: "I"))) == .ready && overTLS.method == "password")

        // MD5 allowed: libpq's answer, then the server's verdict.
        var md5 = machine([.md5])
        guard case .send(let reply) = md5.received(.authenticationMD5Password(salt: [1, 2, 3, 4])) else {
            Issue.record("no MD5 answer")
            return
        }
        #expect(
            (try? PasswordMessageBody.password(reply.body))
                == Machine.md5Response(password: password, role: "billing_rw", salt: [1, 2, 3, 4]))
        #expect(md5.received(.authenticationOk) == .wait)
        #expect(md5.received(.readyForQuery(UInt8(ascii: "I"))) == .ready)

        // SCRAM not allowed (say, md5 only) is refused when the server offers SASL.
        var noSCRAM = machine([.md5])
        #expect(failure(noSCRAM.received(.authenticationSASL(mechanisms: ["SCRAM-SHA-256"]))) != nil)
    }

    @Test func theServersErrorIsPassedOnWithItsCode() {
        var m = machine()
        let action = m.received(.error(ErrorFields.fatal("28P01", "password authentication failed for user \"x\"")))
        #expect(action == .fail("password authentication failed for user \"x\"", sqlState: "28P01"))
        #expect(m.received(.readyForQuery(UInt8(ascii: "I"))) == .wait)
    }

    @Test func upstreamAuthParsesLibpqNamesAndRefusesTheRest() throws {
        #expect(try UpstreamAuthMethods(names: ["scram-sha-256", "MD5"]) == [.scramSHA256, .md5])
        #expect(throws: UpstreamAuthMethods.ParseError.self) { try UpstreamAuthMethods(names: ["gss"]) }
        #expect(throws: UpstreamAuthMethods.ParseError.self) { try UpstreamAuthMethods(names: ["!password"]) }
        #expect(throws: UpstreamAuthMethods.ParseError.self) { try UpstreamAuthMethods(names: []) }
        let url = try ConnectionURL(parsing: "postgres://a@h/db?require_auth=md5,scram-sha-256")
        #expect(url.requireAuth == [.md5, .scramSHA256])
        #expect(DatabaseSpec(name: "app", url: "postgres://a@h/db?require_auth=md5").upstreamAuth == [.md5])
        #expect(DatabaseSpec(name: "app", url: "postgres://a@h/db").upstreamAuth == .standard)
    }
}
