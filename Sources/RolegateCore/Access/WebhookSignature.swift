import Crypto
public import Foundation

/// How a webhook delivery is signed: `Rolegate-Signature: t=<unix seconds>,v1=<hex>` where the
/// hex is HMAC-SHA256 with the webhook's secret over `<t>.<body>`. A receiver recomputes it,
/// refuses a `t` more than five minutes away from its clock (a replay of an old delivery), and
/// refuses a `Rolegate-Delivery` id it has seen (a replay of a recent one).
public enum WebhookSignature {
    public static let header = "Rolegate-Signature"
    public static let deliveryHeader = "Rolegate-Delivery"
    public static let eventHeader = "Rolegate-Event"
    public static let tolerance: TimeInterval = 300

    public static func sign(body: String, secret: String, at: Date) -> String {
        let timestamp = Int64(at.timeIntervalSince1970)
        return "t=\(timestamp),v1=\(mac(body: body, secret: secret, timestamp: timestamp))"
    }

    /// Whether `header` signs `body` with `secret` within the tolerance of `now`.
    public static func verify(header: String, body: String, secret: String, now: Date) -> Bool {
        var timestamp: Int64?
        var signatures: [String] = []
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { continue }
            if pair[0] == "t" { timestamp = Int64(pair[1]) }
            if pair[0] == "v1" { signatures.append(pair[1]) }
        }
        guard let timestamp, abs(now.timeIntervalSince1970 - Double(timestamp)) <= tolerance else { return false }
        let expected = Array(mac(body: body, secret: secret, timestamp: timestamp).utf8)
        return signatures.contains { candidate in
            let bytes = Array(candidate.utf8)
            guard bytes.count == expected.count else { return false }
            return zip(bytes, expected).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
        }
    }

    static func mac(body: String, secret: String, timestamp: Int64) -> String {
        let code = HMAC<SHA256>.authenticationCode(
            for: Data("\(timestamp).\(body)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return code.hexString
    }
}
