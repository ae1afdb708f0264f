import Foundation
import RolegateStore

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One admin API request to a peer instance (the admin API's cross-instance views), with
/// the caller's own admin token: a peer checks it like any other request.
enum PeerCall {
    struct Answer {
        var status: Int
        var body: Data
    }

    static let timeout: TimeInterval = 3

    /// nil when the peer has no HTTP API or cannot be reached in time.
    static func send(to peer: GatewayInstance, method: String, path: String, authorization: String?) async -> Answer? {
        guard let address = peer.httpAddress, let url = URL(string: "http://\(address)\(path)") else { return nil }
        var request = URLRequest(url: url, timeoutInterval: timeout)
        request.httpMethod = method
        if let authorization { request.setValue(authorization, forHTTPHeaderField: "Authorization") }
        guard let (data, response) = try? await URLSession.shared.data(for: request),
            let http = response as? HTTPURLResponse
        else { return nil }
        return Answer(status: http.statusCode, body: data)
    }
}
