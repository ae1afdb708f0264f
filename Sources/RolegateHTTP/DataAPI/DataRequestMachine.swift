import NIOCore

/// What the data API does with each part of an HTTP request, in the order they come: which
/// requests are its own (`/v1/query`, `/v1/batch`), when the token is checked, when the body is
/// whole, and what a refusal does to the rest of the request. Pure, so these rules are tested
/// without a channel; ``DataRequestHandler`` performs the actions.
///
/// One request at a time: ``HTTPRequestSequencer`` holds the next request back until the
/// answer to this one is written.
struct DataRequestMachine {
    enum Endpoint: Equatable, Sendable {
        case query, batch
    }

    enum State: Equatable {
        case idle
        /// Another route's request: its parts go on to the router.
        case forwarding
        /// A data request whose token is being checked or whose body is arriving.
        case receiving(Endpoint, authenticated: Bool, body: ByteBuffer, ended: Bool)
        /// Whole and authenticated: its statements run.
        case running
        /// Answered before its end (refused): the rest of its body is read and dropped.
        case discarding
    }

    enum Refusal: Equatable {
        /// Not `POST` (405, with `Allow: POST`).
        case methodNotAllowed
        /// Declared or grown past the limit (413; the connection closes).
        case tooLarge
        /// The body did not arrive in time (408; the connection closes).
        case bodyTimedOut
    }

    enum Action: Equatable {
        case none
        /// Pass the part on to the router.
        case forward
        /// A data request began: check its token (its body keeps arriving meanwhile).
        case authenticate(Endpoint)
        /// Answer now with this refusal.
        case refuse(Refusal)
        /// Authenticated and whole: parse the body and run it.
        case run(Endpoint, body: ByteBuffer)
    }

    private(set) var state = State.idle
    /// The endpoint of the request whose head came last; nil when that one was not the data API's.
    private(set) var endpoint: Endpoint?
    /// Request bodies larger than this are refused.
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// The data endpoint a path names, the way the router matches paths: the query string is
    /// not part of it, and empty segments (a trailing slash) do not count.
    static func endpoint(path: String) -> Endpoint? {
        // The spellings clients use, without splitting anything.
        if path == "/v1/query" { return .query }
        if path == "/v1/batch" { return .batch }
        let route = path.utf8.prefix { $0 != UInt8(ascii: "?") }
        let segments = route.split(separator: UInt8(ascii: "/"))
        guard segments.count == 2, segments[0].elementsEqual("v1".utf8) else { return nil }
        if segments[1].elementsEqual("query".utf8) { return .query }
        if segments[1].elementsEqual("batch".utf8) { return .batch }
        return nil
    }

    mutating func head(isPost: Bool, path: String, declaredLength: Int?) -> Action {
        endpoint = nil
        guard case .idle = state, let endpoint = Self.endpoint(path: path) else {
            state = .forwarding
            return .forward
        }
        self.endpoint = endpoint
        guard isPost else {
            state = .discarding
            return .refuse(.methodNotAllowed)
        }
        // A declared length past the limit is refused before any of it is read.
        if let declaredLength, declaredLength > limit {
            state = .discarding
            return .refuse(.tooLarge)
        }
        state = .receiving(endpoint, authenticated: false, body: ByteBuffer(), ended: false)
        return .authenticate(endpoint)
    }

    mutating func body(_ part: ByteBuffer) -> Action {
        switch state {
        case .forwarding:
            return .forward
        case .receiving(let endpoint, let authenticated, var body, let ended) where !ended:
            guard body.readableBytes + part.readableBytes <= limit else {
                state = .discarding
                return .refuse(.tooLarge)
            }
            state = .idle  // drop the reference, so the append does not copy
            if body.readableBytes == 0 {
                body = part
            } else {
                var part = part
                body.writeBuffer(&part)
            }
            state = .receiving(endpoint, authenticated: authenticated, body: body, ended: false)
            return .none
        case .idle, .receiving, .running, .discarding:
            return .none
        }
    }

    mutating func end() -> Action {
        switch state {
        case .forwarding:
            state = .idle
            return .forward
        case .receiving(let endpoint, let authenticated, let body, _):
            guard authenticated else {
                state = .receiving(endpoint, authenticated: false, body: body, ended: true)
                return .none
            }
            state = .running
            return .run(endpoint, body: body)
        case .discarding:
            state = .idle
            return .none
        case .idle, .running:
            return .none
        }
    }

    /// The token checked out.
    mutating func authenticated() -> Action {
        guard case .receiving(let endpoint, false, let body, let ended) = state else { return .none }
        guard ended else {
            state = .receiving(endpoint, authenticated: true, body: body, ended: false)
            return .none
        }
        state = .running
        return .run(endpoint, body: body)
    }

    /// The token was refused (the handler answers): the rest of the request is dropped.
    mutating func refused() {
        guard case .receiving(_, _, _, let ended) = state else { return }
        state = ended ? .idle : .discarding
    }

    /// The request's body timer went off.
    mutating func bodyTimedOut() -> Action {
        guard case .receiving(_, _, _, false) = state else { return .none }
        state = .discarding
        return .refuse(.bodyTimedOut)
    }

    /// The answer to a running request went out.
    mutating func answered() {
        if case .running = state { state = .idle }
    }

    /// Whether the current request's body may still be arriving (its timer matters).
    var awaitsBody: Bool {
        if case .receiving(_, _, _, false) = state { return true }
        return false
    }
}
