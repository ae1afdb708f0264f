import Foundation
import RolegateCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The redirect target of a native app's login (RFC 8252 §7.3): an HTTP listener on
/// 127.0.0.1 and a port the system picks, which waits for the provider to send the browser
/// back, answers it with a short page, and hands over the query.
final class LoopbackListener: @unchecked Sendable {
    let socket: Int32
    let port: Int

    init() throws {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw CLIError("cannot open a loopback socket for the login's redirect") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(socket, 8) == 0 else {
            Glibc.close(socket)
            throw CLIError("cannot listen on 127.0.0.1 for the login's redirect")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
        }
        self.socket = socket
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        Glibc.close(socket)
    }

    /// The browser's request, held open until the login is finished: the page it gets says how
    /// it ended, not merely that the provider sent it back.
    struct PendingPage: Sendable {
        let client: Int32

        func respond(ok: Bool, _ text: String) {
            LoopbackListener.respond(client, status: ok ? "200 OK" : "400 Bad Request", text: text)
        }
    }

    /// Waits (at most `timeout`) for a request to `path` and returns its query and the page to
    /// answer it with. Other requests (a favicon) get 404.
    func callback(path: String, timeout: Duration) async throws -> ([String: String], PendingPage) {
        let socket = self.socket
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                let deadline = ContinuousClock.now + timeout
                while ContinuousClock.now < deadline {
                    var poller = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
                    let waited = poll(&poller, 1, 500)
                    guard waited > 0 else { continue }
                    let client = accept(socket, nil, nil)
                    guard client >= 0 else { continue }
                    let (target, query) = Self.readRequest(client)
                    guard target == path else {
                        Self.respond(client, status: "404 Not Found", text: "Not found.")
                        continue
                    }
                    continuation.resume(returning: (query, PendingPage(client: client)))
                    return
                }
                continuation.resume(
                    throwing: CLIError(
                        "no login arrived within \(DurationText.format(timeout)) (the browser did not come back to 127.0.0.1)"
                    ))
            }
        }
    }

    /// The request line's path and query of an HTTP request (headers read and ignored).
    static func readRequest(_ client: Int32) -> (String, [String: String]) {
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        while received.count < 65536 {
            let count = read(client, &buffer, buffer.count)
            guard count > 0 else { break }
            received += buffer[0..<count]
            if received.count >= 4, received.suffix(4) == [13, 10, 13, 10] { break }
        }
        let line = String(decoding: received.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let fields = line.split(separator: " ")
        guard fields.count >= 2, let components = URLComponents(string: String(fields[1])) else { return ("", [:]) }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] { query[item.name] = item.value ?? "" }
        return (components.path, query)
    }

    static func respond(_ client: Int32, status: String, text: String) {
        let escaped = HTMLText.escape(text)
        let body =
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Rolegate login</title></head>"
            + "<body><main><h1>Rolegate</h1><p id=\"result\">\(escaped)</p></main></body></html>"
        let response =
            "HTTP/1.1 \(status)\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Cache-Control: no-store\r\nConnection: close\r\n\r\n\(body)"
        _ = response.withCString { write(client, $0, strlen($0)) }
        Glibc.close(client)
    }
}
