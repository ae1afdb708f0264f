import Foundation
import RolegateCore
import RolegateStore

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One admin API request to a peer instance (the admin API's cross-instance views), signed
/// with the key the instances share (``PeerRequestSignature``): the caller's admin token stays
/// on the instance it was presented to; the peer checks the signature and records `actor`.
enum PeerCall {
    struct Answer {
        var status: Int
        var body: Data
    }

    static let timeout: TimeInterval = 3

    /// Reads a peer's answer in the contract's shapes (its times are RFC 3339, with or without
    /// fractional seconds).
    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = PointInTime.parse(text), !text.isEmpty, text.first!.isNumber, text.contains("T") else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a time"))
            }
            return date
        }
        return decoder
    }()

    /// nil when the peer has no HTTP API or cannot be reached in time.
    static func send(
        to peer: GatewayInstance, method: String, path: String, signer: PeerRequestSignature, from instance: String,
        actor: String
    ) async -> Answer? {
        // A peer serving HTTPS advertises its address with the scheme.
        guard let address = peer.httpAddress,
            let url = URL(string: (address.contains("://") ? address : "http://" + address) + path)
        else { return nil }
        var request = URLRequest(url: url, timeoutInterval: timeout)
        request.httpMethod = method
        request.setValue(
            signer.sign(method: method, path: path, instance: instance, actor: actor),
            forHTTPHeaderField: PeerRequestSignature.header)
        request.setValue(actor, forHTTPHeaderField: PeerRequestSignature.actorHeader)
        guard let (data, response) = try? await URLSession.shared.data(for: request),
            let http = response as? HTTPURLResponse
        else { return nil }
        return Answer(status: http.statusCode, body: data)
    }
}
