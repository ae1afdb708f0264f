public import Foundation

/// How gateway instances authenticate their calls to each other's admin API (the cross-instance
/// session list, ending a session held elsewhere): an HMAC-SHA-256, under a key derived from the
/// master key they share, over the method, the path with its query, the time, the calling
/// instance and the person or service the call acts for. A caller's admin token never leaves the
/// instance it was presented to, and a peer address read from the store gains nothing without
/// the master key.
///
/// Header value: `t=<unix seconds>,i=<instance id>,s=<hex HMAC>`; the actor travels in its own
/// header (it may hold any character) and is covered by the signature.
public struct PeerRequestSignature: Sendable {
    public static let header = "Rolegate-Peer-Signature"
    public static let actorHeader = "Rolegate-Peer-Actor"
    /// How far a signature's time may be from the receiver's clock (either way).
    public static let window: TimeInterval = 30

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed
        case outsideWindow
        case badSignature

        public var description: String {
            switch self {
            case .malformed: "malformed peer signature"
            case .outsideWindow: "peer signature outside the \(Int(PeerRequestSignature.window)) s window"
            case .badSignature: "peer signature does not verify"
            }
        }
    }

    public struct Verified: Equatable, Sendable {
        public var instance: String
        public var actor: String

        public init(instance: String, actor: String) {
            self.instance = instance
            self.actor = actor
        }
    }

    private let key: [UInt8]

    public init(key: [UInt8]) { self.key = key }

    public init(masterKey: MasterKey) { self.init(key: masterKey.peerRequestKey) }

    /// The header value for a request.
    public func sign(method: String, path: String, instance: String, actor: String, at date: Date = Date()) -> String {
        let seconds = Int64(date.timeIntervalSince1970)
        return
            "t=\(seconds),i=\(instance),s=\(mac(method: method, path: path, seconds: seconds, instance: instance, actor: actor))"
    }

    /// Checks a request's header value (constant-time comparison, then the time window).
    public func verify(
        _ value: String, method: String, path: String, actor: String, now: Date = Date()
    ) -> Result<Verified, Failure> {
        var fields: [Substring: Substring] = [:]
        for part in value.split(separator: ",") {
            guard let equals = part.firstIndex(of: "=") else { return .failure(.malformed) }
            fields[part[..<equals]] = part[part.index(after: equals)...]
        }
        guard fields.count == 3, let t = fields["t"], let seconds = Int64(t), let instance = fields["i"],
            !instance.isEmpty, let signature = fields["s"]
        else { return .failure(.malformed) }
        let expected = mac(method: method, path: path, seconds: seconds, instance: String(instance), actor: actor)
        guard ConstantTime.equals(Array(signature.utf8), Array(expected.utf8)) else { return .failure(.badSignature) }
        guard abs(now.timeIntervalSince1970 - TimeInterval(seconds)) <= Self.window else {
            return .failure(.outsideWindow)
        }
        return .success(Verified(instance: String(instance), actor: actor))
    }

    private func mac(method: String, path: String, seconds: Int64, instance: String, actor: String) -> String {
        let message = [method.uppercased(), path, String(seconds), instance, actor].joined(separator: "\n")
        return SCRAMSHA256.hmac(key: key, message: Array(message.utf8)).hexString
    }
}
