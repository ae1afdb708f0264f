import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresWire
import RolegateCore
import RolegateTestSupport
import Testing

@testable import RolegateGateway

/// The gateway's login to a server that is not what it claims, over real sockets: a fake server
/// asks for the role's password in clear text or as MD5, or fakes its way through SCRAM. Nothing
/// of the credential may leave, and the login fails with an error that says why.
@Suite(.ownThreads) struct HostileUpstreamTests {
    static let password = "the-managed-role-credential"

    /// What the fake server does once the startup packet arrives.
    enum Script: Sendable {
        case askCleartext
        case askMD5
        /// SCRAM up to the client's proof, then a server-final signed with the wrong key.
        case forgedServerFinal
        /// SCRAM up to the client's proof, then AuthenticationOk with no server-final at all.
        case okWithoutServerFinal
        /// AuthenticationOk at once (trust), with no authentication.
        case trust
    }

    /// A fake server on loopback that follows `script` and keeps every byte the gateway sent.
    final class FakeServer: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let script: Script
        let received = NIOLockedValueBox([UInt8]())
        private let stage = NIOLockedValueBox(0)

        init(script: Script) { self.script = script }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            received.withLockedValue { $0 += bytes }
            let step = stage.withLockedValue { s -> Int in
                s += 1
                return s
            }
            var replies: [WireMessage] = []
            switch (script, step) {
            case (.askCleartext, 1): replies = [Backend.authenticationCleartextPassword()]
            case (.askMD5, 1):
                replies = [
                    Backend.message("R") {
                        $0.writeInteger(Int32(5)); $0.writeBytes([1, 2, 3, 4])
                    }
                ]
            case (.trust, 1):
                replies = [Backend.authenticationOk(), Backend.readyForQuery(UInt8(ascii: "I"))]
            case (.forgedServerFinal, 1), (.okWithoutServerFinal, 1):
                replies = [Backend.authenticationSASL(mechanisms: ["SCRAM-SHA-256"])]
            case (.forgedServerFinal, 2), (.okWithoutServerFinal, 2):
                // client-first: "n,,n=,r=<nonce>" after the mechanism name and a length.
                let text = String(decoding: bytes, as: UTF8.self)
                let nonce = text.components(separatedBy: "r=").last ?? ""
                let salt = Data(repeating: 3, count: 16).base64EncodedString()
                replies = [Backend.authenticationSASLContinue(Array("r=\(nonce)FAKE,s=\(salt),i=4096".utf8))]
            case (.forgedServerFinal, 3):
                let forged = "v=" + Data(repeating: 0xAB, count: 32).base64EncodedString()
                replies = [
                    Backend.authenticationSASLFinal(Array(forged.utf8)), Backend.authenticationOk(),
                    Backend.readyForQuery(UInt8(ascii: "I")),
                ]
            case (.okWithoutServerFinal, 3):
                replies = [Backend.authenticationOk(), Backend.readyForQuery(UInt8(ascii: "I"))]
            default: break
            }
            for reply in replies { context.write(wrapOutboundOut(reply.encoded()), promise: nil) }
            context.flush()
        }
    }

    func login(
        _ script: Script, allowed: UpstreamAuthMethods = .standard
    ) async throws -> (
        Result<UpstreamConnection, any Error>, [UInt8]
    ) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let fake = FakeServer(script: script)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(fake) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let key = UpstreamKey(
            host: "127.0.0.1", port: try #require(server.localAddress?.port), socketPath: nil, database: "appdb",
            role: "billing_rw", tls: UpstreamTLS(mode: .disable), auth: allowed, parameters: [])
        let result: Result<UpstreamConnection, any Error>
        do {
            let connection = try await UpstreamConnection.connect(
                key: key, password: Self.password, on: group.next(), saltedPasswords: SaltedPasswordCache(),
                tls: nil, answerTimeout: .seconds(20)
            ).get()
            result = .success(connection)
            connection.close()
        } catch {
            result = .failure(error)
        }
        try? await server.close()
        try? await group.shutdownGracefully()
        return (result, fake.received.withLockedValue { $0 })
    }

    /// Whether `bytes` carry the credential or an MD5 answer made from it.
    func leaked(_ bytes: [UInt8]) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        return text.contains(Self.password) || text.contains("md5")
    }

    func message(_ result: Result<UpstreamConnection, any Error>) -> String {
        if case .failure(let error as UpstreamError) = result { return error.description }
        return "the login succeeded: \(result)"
    }

    @Test(arguments: [Script.askCleartext, .askMD5, .trust])
    func aServerAskingForAWeakerMethodGetsNothingOfTheCredential(script: Script) async throws {
        let (result, sent) = try await login(script)
        #expect(!leaked(sent), "the credential left: \(String(decoding: sent, as: UTF8.self))")
        let said = message(result)
        #expect(said.contains("appdb") && said.contains("billing_rw") && said.contains("does not allow"), "\(said)")
    }

    @Test func clearTextAllowedByThePolicyIsStillNeverSentWithoutTLS() async throws {
        let (result, sent) = try await login(.askCleartext, allowed: [.scramSHA256, .password])
        #expect(!leaked(sent))
        #expect(message(result).contains("only over TLS"), "\(message(result))")
    }

    @Test(arguments: [Script.forgedServerFinal, .okWithoutServerFinal])
    func aServerThatCannotProveItKnowsTheVerifierIsRefused(script: Script) async throws {
        let (result, sent) = try await login(script)
        #expect(!leaked(sent))
        let said = message(result)
        #expect(said.contains("signature") || said.contains("without proving"), "\(said)")
    }
}
