import Crypto
import Foundation

/// SCRAM-SHA-256 (RFC 5802 / RFC 7677) key derivation: what a server stores for a
/// password, and the primitives the wire protocol's SCRAM exchanges build on.
public enum SCRAMSHA256 {
    public static let defaultIterations = 4096

    /// What a SCRAM server keeps for a password: enough to verify a client's proof,
    /// not enough to log in.
    public struct Verifier: Sendable, Equatable {
        public var salt: [UInt8]
        public var iterations: Int
        public var storedKey: [UInt8]
        public var serverKey: [UInt8]

        public init(salt: [UInt8], iterations: Int, storedKey: [UInt8], serverKey: [UInt8]) {
            self.salt = salt
            self.iterations = iterations
            self.storedKey = storedKey
            self.serverKey = serverKey
        }

        /// PostgreSQL's `rolpassword` form: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
        /// `CREATE ROLE ... PASSWORD '<this>'` stores it as is: the password never reaches the server.
        public var postgresText: String {
            "SCRAM-SHA-256$\(iterations):\(Data(salt).base64EncodedString())$"
                + "\(Data(storedKey).base64EncodedString()):\(Data(serverKey).base64EncodedString())"
        }
    }

    public static func verifier(password: String, salt: [UInt8], iterations: Int = defaultIterations) -> Verifier {
        let salted = saltedPassword(password: password, salt: salt, iterations: iterations)
        let clientKey = hmac(key: salted, message: Array("Client Key".utf8))
        let storedKey = Array(SHA256.hash(data: clientKey))
        let serverKey = hmac(key: salted, message: Array("Server Key".utf8))
        return Verifier(salt: salt, iterations: iterations, storedKey: storedKey, serverKey: serverKey)
    }

    /// `Hi(password, salt, i)`: PBKDF2-HMAC-SHA-256 with one block of output.
    public static func saltedPassword(password: String, salt: [UInt8], iterations: Int) -> [UInt8] {
        precondition(iterations >= 1)
        let key = SymmetricKey(data: Array(password.utf8))
        var block = salt + [0, 0, 0, 1]
        var u = Array(HMAC<SHA256>.authenticationCode(for: block, using: key))
        var result = u
        for _ in 1..<iterations {
            block = u
            u = Array(HMAC<SHA256>.authenticationCode(for: block, using: key))
            for index in 0..<result.count { result[index] ^= u[index] }
        }
        return result
    }

    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: bytes))
    }

    public static func hmac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }
}
