import Crypto
import Foundation
import NIOCore
package import PostgresWire
package import RolegateCore

/// The gateway's side of one login to a database server as a managed role, from the startup
/// packet to the first ReadyForQuery. A value type without I/O: the upstream handler feeds it
/// the server's messages and performs what it returns.
///
/// What it enforces, whatever the server (or anything on the path to it) asks:
/// - the role's credential is offered only by a method the database allows
///   (``UpstreamAuthMethods``, SCRAM-SHA-256 alone by default), clear text never without TLS;
/// - a SCRAM login succeeds only once the server's final signature proved it knows the role's
///   verifier: an `AuthenticationOk` before that (or a wrong or missing signature) ends the login;
/// - the session is ready only after authentication succeeded and the server said ReadyForQuery.
package struct UpstreamLoginMachine {
    package struct Settings {
        /// The role (PostgreSQL user) and the server's database name, for messages.
        package var role: String
        package var database: String
        package var allowed: UpstreamAuthMethods
        /// The connection is TLS-encrypted (clear-text passwords are refused otherwise).
        package var encrypted: Bool

        package init(role: String, database: String, allowed: UpstreamAuthMethods, encrypted: Bool) {
            (self.role, self.database, self.allowed, self.encrypted) = (role, database, allowed, encrypted)
        }
    }

    package enum Action: Equatable {
        case wait
        case send(WireMessage)
        /// Logged in and idle: the connection can serve a session.
        case ready
        case fail(String, sqlState: String?)
    }

    private enum State {
        case awaitingAuthentication
        case scram(SCRAMClient, serverVerified: Bool)
        /// A clear-text or MD5 password went out; the server's verdict is next.
        case passwordSent
        /// AuthenticationOk arrived: parameters and the key data follow, then ReadyForQuery.
        case authenticated
        case ready
        case failed
    }

    package private(set) var settings: Settings
    private let password: String
    private let saltedPassword: (@Sendable ([UInt8], Int) -> [UInt8])?
    private var state = State.awaitingAuthentication
    /// Every ParameterStatus of the login, in order.
    package private(set) var parameterStatus: [(String, String)] = []
    package private(set) var processID: Int32 = 0
    package private(set) var secretKey: [UInt8] = []
    package private(set) var transactionStatus = UInt8(ascii: "I")
    /// How the server authenticated the gateway, once it did.
    package private(set) var method: String?

    package init(
        settings: Settings, password: String,
        saltedPassword: (@Sendable ([UInt8], Int) -> [UInt8])? = nil
    ) {
        self.settings = settings
        self.password = password
        self.saltedPassword = saltedPassword
    }

    /// The connection switched to TLS (before the startup packet): what the database allows
    /// over TLS only may now be used.
    package mutating func encryptionEstablished() {
        settings.encrypted = true
    }

    package var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    /// One message from the server.
    package mutating func received(_ message: BackendStartupMessage) -> Action {
        switch (state, message) {
        case (.failed, _), (.ready, _):
            return .wait
        case (_, .error(let fields)):
            return fail(fields.message, sqlState: fields.code)

        case (.awaitingAuthentication, .authenticationSASL(let mechanisms)):
            guard settings.allowed.contains(.scramSHA256) else {
                return refuseMethod("SASL (\(mechanisms.joined(separator: ", ")))")
            }
            guard mechanisms.contains("SCRAM-SHA-256") else {
                return fail(
                    "the server offers no supported SASL mechanism (\(mechanisms.joined(separator: ", "))); the gateway speaks SCRAM-SHA-256",
                    sqlState: "08004")
            }
            let client = SCRAMClient(password: password, saltedPassword: saltedPassword)
            state = .scram(client, serverVerified: false)
            return .send(Frontend.saslInitialResponse(mechanism: "SCRAM-SHA-256", data: client.clientFirst()))
        case (.scram(var client, false), .authenticationSASLContinue(let data)):
            do {
                let final = try client.receiveServerFirst(data)
                state = .scram(client, serverVerified: false)
                return .send(Frontend.saslResponse(final))
            } catch {
                return fail("SCRAM with the server failed: \(error)", sqlState: "08006")
            }
        case (.scram(let client, false), .authenticationSASLFinal(let data)):
            do {
                try client.receiveServerFinal(data)
                state = .scram(client, serverVerified: true)
                return .wait
            } catch {
                return fail(
                    "the server's SCRAM signature is wrong (\(error)): it does not know role \"\(settings.role)\"'s verifier; refusing it",
                    sqlState: "08006")
            }
        case (.scram(_, true), .authenticationOk):
            state = .authenticated
            method = "scram-sha-256"
            return .wait
        case (.scram(_, false), .authenticationOk):
            return fail(
                "the server accepted the login without proving it knows role \"\(settings.role)\"'s SCRAM verifier (no server signature); refusing it",
                sqlState: "08006")

        case (.awaitingAuthentication, .authenticationOk):
            guard settings.allowed.contains(.none) else { return refuseMethod("no authentication (trust)") }
            state = .authenticated
            method = "none"
            return .wait
        case (.awaitingAuthentication, .authenticationCleartextPassword):
            guard settings.allowed.contains(.password) else { return refuseMethod("a clear-text password") }
            guard settings.encrypted else {
                return fail(
                    "the server for database \"\(settings.database)\" asked for role \"\(settings.role)\"'s password in clear text over an unencrypted connection; the gateway sends it only over TLS (set sslmode=require or stricter)",
                    sqlState: "28000")
            }
            state = .passwordSent
            method = "password"
            return .send(Frontend.password(password))
        case (.awaitingAuthentication, .authenticationMD5Password(let salt)):
            guard settings.allowed.contains(.md5) else { return refuseMethod("an MD5 password") }
            state = .passwordSent
            method = "md5"
            return .send(Frontend.password(Self.md5Response(password: password, role: settings.role, salt: salt)))
        case (.awaitingAuthentication, .authenticationOther(let code)):
            return refuseMethod("authentication request \(code), which the gateway does not support")

        case (.authenticated, .parameterStatus(let name, let value)):
            parameterStatus.append((name, value))
            return .wait
        case (.authenticated, .backendKeyData(let pid, let secret)):
            processID = pid
            secretKey = secret
            return .wait
        case (.authenticated, .readyForQuery(let status)):
            transactionStatus = status
            state = .ready
            return .ready
        case (.passwordSent, .authenticationOk):
            state = .authenticated
            return .wait
        case (_, .notice), (_, .negotiateProtocolVersion):
            return .wait
        default:
            return fail(
                "the server sent an unexpected message during login: \(Self.describe(message))", sqlState: "08P01")
        }
    }

    /// MD5's answer: `md5` + md5(md5(password + user) + salt), in hex.
    package static func md5Response(password: String, role: String, salt: [UInt8]) -> String {
        let inner = Insecure.MD5.hash(data: Array((password + role).utf8)).hexString
        return "md5" + Insecure.MD5.hash(data: Array(inner.utf8) + salt).hexString
    }

    private mutating func refuseMethod(_ asked: String) -> Action {
        fail(
            "the server for database \"\(settings.database)\" asked role \"\(settings.role)\" for \(asked), which this database's upstream_auth [\(settings.allowed)] does not allow; nothing of the credential was sent",
            sqlState: "28000")
    }

    private mutating func fail(_ description: String, sqlState: String?) -> Action {
        state = .failed
        return .fail(description, sqlState: sqlState)
    }

    private static func describe(_ message: BackendStartupMessage) -> String {
        switch message {
        case .authenticationOk: "AuthenticationOk"
        case .authenticationCleartextPassword: "AuthenticationCleartextPassword"
        case .authenticationMD5Password: "AuthenticationMD5Password"
        case .authenticationSASL: "AuthenticationSASL"
        case .authenticationSASLContinue: "AuthenticationSASLContinue"
        case .authenticationSASLFinal: "AuthenticationSASLFinal"
        case .authenticationOther(let code): "Authentication request \(code)"
        case .parameterStatus: "ParameterStatus"
        case .backendKeyData: "BackendKeyData"
        case .readyForQuery: "ReadyForQuery"
        case .error: "ErrorResponse"
        case .notice: "NoticeResponse"
        case .negotiateProtocolVersion: "NegotiateProtocolVersion"
        case .other(let message): "message type '\(Character(Unicode.Scalar(message.type)))'"
        }
    }
}
