import Foundation
import RolegateCore

/// A console login, carried by a cookie every instance can check: the token's id, when the
/// session ends (never after the token), a random nonce, and an HMAC under the console key (from
/// the master key the instances share). The token itself never reaches the browser after the
/// login form; each request reads the token's current record, so a revoked or expired token
/// ends its console session at once. Forms carry a CSRF value derived from the cookie.
struct ConsoleSession: Sendable, Equatable {
    static let cookieName = "rolegate_console"

    var tokenID: String
    var expires: Date
    var nonce: String

    static func start(tokenID: String, expires: Date) -> ConsoleSession {
        let nonce = SecureRandom.bytes(12).hexString
        return ConsoleSession(tokenID: tokenID, expires: expires, nonce: nonce)
    }

    /// `<token id>.<unix seconds>.<nonce>.<hex mac>`.
    func cookieValue(key: [UInt8]) -> String {
        let body = "\(tokenID).\(Int64(expires.timeIntervalSince1970)).\(nonce)"
        return body + "." + Self.mac(body, key: key)
    }

    /// The session a cookie value holds, when its MAC verifies and it has not ended.
    static func parse(_ value: String, key: [UInt8], now: Date = Date()) -> ConsoleSession? {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, let seconds = Int64(parts[1]) else { return nil }
        let body = parts[0..<3].joined(separator: ".")
        guard ConstantTime.equals(Array(parts[3].utf8), Array(mac(body, key: key).utf8)) else { return nil }
        let expires = Date(timeIntervalSince1970: TimeInterval(seconds))
        guard expires > now else { return nil }
        return ConsoleSession(tokenID: parts[0], expires: expires, nonce: parts[2])
    }

    /// The value every form of this session carries (and every POST must send back).
    func csrf(key: [UInt8]) -> String {
        Self.mac("csrf.\(tokenID).\(nonce)", key: key)
    }

    static func mac(_ text: String, key: [UInt8]) -> String {
        SCRAMSHA256.hmac(key: key, message: Array(text.utf8)).hexString
    }
}
