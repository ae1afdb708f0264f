import Foundation
public import RolegateCore

public enum SCRAMError: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed(String)
    /// The client asked for channel binding, which this server does not offer.
    case channelBindingUnsupported
    case nonceMismatch
    case channelBindingMismatch
    /// The proof matched no candidate.
    case proofRejected
    /// The server's signature was wrong (client side).
    case serverSignatureMismatch
    case outOfOrder

    public var description: String {
        switch self {
        case .malformed(let what): "malformed SCRAM message: \(what)"
        case .channelBindingUnsupported: "SCRAM channel binding is not supported by this server"
        case .nonceMismatch: "SCRAM nonce mismatch"
        case .channelBindingMismatch: "SCRAM channel binding data mismatch"
        case .proofRejected: "SCRAM proof rejected"
        case .serverSignatureMismatch: "SCRAM server signature mismatch"
        case .outOfOrder: "SCRAM message out of order"
        }
    }
}

/// The server side of SCRAM-SHA-256 (RFC 5802/7677), as a pure state machine. It needs
/// only the stored verifiers, never a password, and checks the proof against several
/// candidates (a service's live tokens during a rotation), in constant time per candidate
/// and always against all of them.
public struct SCRAMServer: Sendable {
    enum State: Sendable {
        case initial
        case sentServerFirst(clientFirstBare: String, serverFirst: String, nonce: String, gs2Header: String)
        case done
    }

    let salt: [UInt8]
    let iterations: Int
    let serverNonce: String
    var state = State.initial

    /// `salt` and `iterations` are those shared by every candidate verifier.
    public init(salt: [UInt8], iterations: Int, serverNonce: String = SCRAMNonce.make()) {
        self.salt = salt
        self.iterations = iterations
        self.serverNonce = serverNonce
    }

    /// Takes `client-first-message`, returns `server-first-message`.
    public mutating func receiveClientFirst(_ message: [UInt8]) throws(SCRAMError) -> [UInt8] {
        guard case .initial = state else { throw .outOfOrder }
        guard let text = String(validating: message, as: UTF8.self) else { throw .malformed("not UTF-8") }
        // gs2-header: "n,," | "y,," | "p=<name>,,"; we do not offer -PLUS.
        let parts = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformed("client-first-message") }
        switch parts[0] {
        case "n", "y": break
        case let flag where flag.hasPrefix("p="): throw .channelBindingUnsupported
        default: throw .malformed("gs2 channel binding flag")
        }
        guard parts[1].isEmpty else { throw .malformed("authzid is not supported") }
        let gs2Header = "\(parts[0]),,"
        let bare = String(parts[2])
        var clientNonce: String?
        for attribute in bare.split(separator: ",", omittingEmptySubsequences: false) {
            guard attribute.utf8.count >= 2, attribute.utf8.dropFirst().first == UInt8(ascii: "=") else {
                throw .malformed("attribute")
            }
            if attribute.hasPrefix("m=") { throw .malformed("mandatory extension") }
            if attribute.hasPrefix("r=") { clientNonce = String(attribute.dropFirst(2)) }
        }
        guard let clientNonce, !clientNonce.isEmpty, SCRAMNonce.isPrintable(clientNonce) else {
            throw .malformed("client nonce")
        }
        let nonce = clientNonce + serverNonce
        let serverFirst = "r=\(nonce),s=\(Data(salt).base64EncodedString()),i=\(iterations)"
        state = .sentServerFirst(clientFirstBare: bare, serverFirst: serverFirst, nonce: nonce, gs2Header: gs2Header)
        return Array(serverFirst.utf8)
    }

    /// Takes `client-final-message`; returns which candidate's proof matched and the
    /// `server-final-message` to send. Throws ``SCRAMError/proofRejected`` when none did.
    public mutating func receiveClientFinal(
        _ message: [UInt8], candidates: [SCRAMSHA256.Verifier]
    ) throws(SCRAMError)
        -> (index: Int, serverFinal: [UInt8])
    {
        guard case .sentServerFirst(let clientFirstBare, let serverFirst, let nonce, let gs2Header) = state else {
            throw .outOfOrder
        }
        state = .done
        // Read as bytes (every login passes here; a `String` search was a fifth of this step's
        // time under `pgbench -C`). ASCII needs no further check; anything else must be UTF-8.
        if message.contains(where: { $0 >= 0x80 }), String(validating: message, as: UTF8.self) == nil {
            throw .malformed("not UTF-8")
        }
        guard let proofStart = Self.lastProof(in: message) else { throw .malformed("no proof") }
        let withoutProof = message[..<proofStart]
        guard let proof = Data(base64Encoded: Data(message[(proofStart + 3)...])).map(Array.init), proof.count == 32
        else { throw .malformed("proof") }
        var binding: ArraySlice<UInt8>?
        var finalNonce: ArraySlice<UInt8>?
        for attribute in withoutProof.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            if attribute.starts(with: [UInt8(ascii: "c"), UInt8(ascii: "=")]) { binding = attribute.dropFirst(2) }
            if attribute.starts(with: [UInt8(ascii: "r"), UInt8(ascii: "=")]) { finalNonce = attribute.dropFirst(2) }
        }
        guard let binding, let finalNonce else { throw .malformed("client-final-message") }
        guard binding.elementsEqual(Data(gs2Header.utf8).base64EncodedString().utf8) else {
            throw .channelBindingMismatch
        }
        guard finalNonce.elementsEqual(nonce.utf8) else { throw .nonceMismatch }
        var authMessage: [UInt8] = []
        authMessage.reserveCapacity(clientFirstBare.utf8.count + serverFirst.utf8.count + withoutProof.count + 2)
        authMessage += clientFirstBare.utf8
        authMessage.append(UInt8(ascii: ","))
        authMessage += serverFirst.utf8
        authMessage.append(UInt8(ascii: ","))
        authMessage += withoutProof
        var matched: Int?
        for (index, candidate) in candidates.enumerated() {
            let signature = SCRAMSHA256.hmac(key: candidate.storedKey, message: authMessage)
            let clientKey = zip(proof, signature).map { $0 ^ $1 }
            if ConstantTime.equals(SCRAMSHA256.sha256(clientKey), candidate.storedKey), matched == nil {
                matched = index
            }
        }
        guard let matched else { throw .proofRejected }
        let serverSignature = SCRAMSHA256.hmac(key: candidates[matched].serverKey, message: authMessage)
        return (matched, Array("v=\(Data(serverSignature).base64EncodedString())".utf8))
    }

    /// Where the last `,p=` starts (the proof is the final attribute).
    static func lastProof(in message: [UInt8]) -> Int? {
        var index = message.count - 3
        while index >= 0 {
            if message[index] == UInt8(ascii: ","), message[index + 1] == UInt8(ascii: "p"),
                message[index + 2] == UInt8(ascii: "=")
            {
                return index
            }
            index -= 1
        }
        return nil
    }
}

/// The client side of SCRAM-SHA-256, for the gateway's upstream logins.
public struct SCRAMClient: Sendable {
    let password: String
    let clientNonce: String
    var clientFirstBare: String
    var expectedServerSignature: [UInt8]?
    /// Reuses a salted password computed earlier for the same password, salt and count
    /// (PBKDF2 is the expensive part of a login).
    let saltedPasswordCache: (@Sendable (_ salt: [UInt8], _ iterations: Int) -> [UInt8])?

    public init(
        password: String, clientNonce: String = SCRAMNonce.make(),
        saltedPassword: (@Sendable (_ salt: [UInt8], _ iterations: Int) -> [UInt8])? = nil
    ) {
        self.password = password
        self.clientNonce = clientNonce
        self.clientFirstBare = "n=,r=\(clientNonce)"
        self.saltedPasswordCache = saltedPassword
    }

    /// `client-first-message` (no channel binding).
    public func clientFirst() -> [UInt8] { Array("n,,\(clientFirstBare)".utf8) }

    /// Takes `server-first-message`, returns `client-final-message`.
    public mutating func receiveServerFirst(_ message: [UInt8]) throws(SCRAMError) -> [UInt8] {
        guard let text = String(validating: message, as: UTF8.self) else { throw .malformed("not UTF-8") }
        var nonce: String?
        var salt: [UInt8]?
        var iterations: Int?
        for attribute in text.split(separator: ",") {
            if attribute.hasPrefix("r=") { nonce = String(attribute.dropFirst(2)) }
            if attribute.hasPrefix("s=") { salt = Data(base64Encoded: String(attribute.dropFirst(2))).map(Array.init) }
            if attribute.hasPrefix("i=") { iterations = Int(attribute.dropFirst(2)) }
            if attribute.hasPrefix("m=") { throw .malformed("mandatory extension") }
        }
        guard let nonce, let salt, let iterations, iterations >= 1, iterations <= 10_000_000 else {
            throw .malformed("server-first-message")
        }
        guard nonce.hasPrefix(clientNonce), nonce.count > clientNonce.count else { throw .nonceMismatch }
        let salted =
            saltedPasswordCache?(salt, iterations)
            ?? SCRAMSHA256.saltedPassword(password: password, salt: salt, iterations: iterations)
        let clientKey = SCRAMSHA256.hmac(key: salted, message: Array("Client Key".utf8))
        let storedKey = SCRAMSHA256.sha256(clientKey)
        let withoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(clientFirstBare),\(text),\(withoutProof)".utf8)
        let signature = SCRAMSHA256.hmac(key: storedKey, message: authMessage)
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        let serverKey = SCRAMSHA256.hmac(key: salted, message: Array("Server Key".utf8))
        expectedServerSignature = SCRAMSHA256.hmac(key: serverKey, message: authMessage)
        return Array("\(withoutProof),p=\(Data(proof).base64EncodedString())".utf8)
    }

    /// Checks `server-final-message`.
    public func receiveServerFinal(_ message: [UInt8]) throws(SCRAMError) {
        guard let expected = expectedServerSignature else { throw .outOfOrder }
        guard let text = String(validating: message, as: UTF8.self) else { throw .malformed("not UTF-8") }
        if text.hasPrefix("e=") { throw .proofRejected }
        guard text.hasPrefix("v="), let signature = Data(base64Encoded: String(text.dropFirst(2))).map(Array.init),
            ConstantTime.equals(signature, expected)
        else { throw .serverSignatureMismatch }
    }
}

public enum SCRAMNonce {
    /// 24 random bytes, base64: printable, no commas.
    public static func make() -> String {
        Data(SecureRandom.bytes(24)).base64EncodedString()
    }

    static func isPrintable(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7E && $0 != UInt8(ascii: ",") }
    }
}
