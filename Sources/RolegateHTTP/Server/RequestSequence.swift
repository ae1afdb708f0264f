import NIOCore

/// One request at a time on an HTTP/1.1 connection, answered in the order they came: the
/// pure state of ``HTTPRequestSequencer``.
///
/// A request's parts go on as they arrive. Once a request has arrived whole, anything after
/// it (a pipelined request, a parse error, the client's half-close) waits here until that
/// request's answer has ended, and reading stops only while something waits. NIO's own
/// pipelining handler stops reading for every request until its answer is written, which
/// costs two `epoll_ctl` calls per request (reading off, reading on) although almost no
/// client pipelines.
struct RequestSequence<Item> {
    /// What an item is to the sequence.
    enum Kind: Equatable {
        /// A request's head: starts a request.
        case head
        case body
        /// A request's end.
        case end
        /// Something delivered in its place among the requests (a parse error, the input closing).
        case event
    }

    /// The request being handled: whether all of it has arrived, and whether its answer has ended.
    private var current: (requestEnded: Bool, responseEnded: Bool)?
    private var waiting = CircularBuffer<(item: Item, kind: Kind)>()
    /// A read was asked for while items waited; it is issued once they are delivered.
    private var readHeld = false
    /// The connection is to close once the request being handled is answered.
    private(set) var quiescing = false

    /// Items waiting for the request being handled to be answered.
    var waitingCount: Int { waiting.count }

    /// The connection can close now: quiescing, and no request is being handled.
    var shouldClose: Bool { quiescing && current == nil }

    /// An item arrived: true to deliver it now, false if it waits (in order, behind the
    /// request being answered).
    mutating func arrived(_ item: Item, _ kind: Kind) -> Bool {
        if waiting.isEmpty, acceptsNow(kind) {
            apply(kind)
            return true
        }
        waiting.append((item, kind))
        return false
    }

    /// The answer to the request being handled has ended: waiting items may go on now (see
    /// ``nextDeliverable()``), unless the connection is quiescing (it closes instead).
    mutating func responseEnded() {
        guard var handled = current else { return }
        handled.responseEnded = true
        current = handled.requestEnded ? nil : handled
        if quiescing { waiting.removeAll() }
    }

    /// The next waiting item that may go on now, taken off the queue; nil when none may.
    /// One at a time: delivering it can end an answer and deliver more before this returns.
    mutating func nextDeliverable() -> Item? {
        guard let next = waiting.first, acceptsNow(next.kind) else { return nil }
        waiting.removeFirst()
        apply(next.kind)
        return next.item
    }

    /// A read was asked for: true to pass it on, false while items wait (it is held until
    /// ``takeHeldRead()`` gives it back).
    mutating func readRequested() -> Bool {
        guard waiting.isEmpty else {
            readHeld = true
            return false
        }
        return true
    }

    /// True once, when a held read can go on (nothing waits any more).
    mutating func takeHeldRead() -> Bool {
        guard readHeld, waiting.isEmpty else { return false }
        readHeld = false
        return true
    }

    /// The server is shutting down: true to close now (no request is being handled); else
    /// the connection closes after the current answer, and later requests are not read.
    mutating func quiesce() -> Bool {
        quiescing = true
        if current == nil { waiting.removeAll() }
        return current == nil
    }

    /// Whether an item of `kind` belongs to the request being handled (or starts the next
    /// one when none is): true until that request has arrived whole.
    private func acceptsNow(_ kind: Kind) -> Bool {
        guard let current else { return !quiescing || kind == .event }
        return !current.requestEnded
    }

    private mutating func apply(_ kind: Kind) {
        switch kind {
        case .head:
            current = (false, false)
        case .end:
            guard var handled = current else { return }
            handled.requestEnded = true
            current = handled.responseEnded ? nil : handled
        case .body, .event:
            break
        }
    }
}
