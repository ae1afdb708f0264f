import Crypto
import Foundation

/// The one-way derivatives of a token that Rolegate stores: a SHA-256 hash for bearer
/// checks and a SCRAM-SHA-256 verifier so the wire gateway can authenticate a client by
/// SCRAM without ever seeing the token. Never the token itself.
public struct TokenSecret: Sendable, Equatable {
    public var sha256: [UInt8]
    public var scram: SCRAMSHA256.Verifier

    public init(sha256: [UInt8], scram: SCRAMSHA256.Verifier) {
        self.sha256 = sha256
        self.scram = scram
    }

    /// Derives what is stored for `token`. All tokens of one service share `salt`, so a
    /// SCRAM server can send one salt and accept either token during a rotation's grace.
    public init(token: String, salt: [UInt8], iterations: Int = SCRAMSHA256.defaultIterations) {
        self.sha256 = Self.hash(token)
        self.scram = SCRAMSHA256.verifier(password: token, salt: salt, iterations: iterations)
    }

    public static func hash(_ token: String) -> [UInt8] {
        withUnsafeBytes(of: TokenDigest(token).words) { Array($0) }
    }

    /// Whether `token` hashes to ``sha256``, comparing in constant time.
    public func matches(_ token: String) -> Bool { matches(TokenDigest(token)) }

    /// Whether ``sha256`` is `digest`, compared in constant time (from the digest's own
    /// bytes: no arrays on this path).
    public func matches(_ digest: TokenDigest) -> Bool {
        withUnsafeBytes(of: digest.words) { digest in sha256.withUnsafeBytes { ConstantTime.equals(digest, $0) } }
    }
}

/// The SHA-256 of a token, computed once per check (before the verifier takes its lock) and
/// compared with the stored hash. Held inline, as four words: no allocation.
public struct TokenDigest: Sendable {
    let words: (UInt64, UInt64, UInt64, UInt64)

    public init(_ token: String) {
        var token = token
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        token.withUTF8 { bytes in
            SHA256.hash(data: UnsafeRawBufferPointer(bytes)).withUnsafeBytes { digest in
                withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: digest) }
            }
        }
        self.words = words
    }
}

public enum ConstantTime {
    /// Compares two byte strings in time that depends only on their lengths.
    public static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBytes { a in b.withUnsafeBytes { b in equals(a, b) } }
    }

    public static func equals(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<a.count { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
