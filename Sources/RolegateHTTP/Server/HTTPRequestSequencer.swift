import NIOCore
import NIOHTTP1

/// Hands the handlers after it one request at a time and keeps the answers in request
/// order, whoever answers (the data API or the router), as HTTP/1.1 pipelining requires;
/// the rules are ``RequestSequence``'s. At shutdown (`ChannelShouldQuiesceEvent`) an idle
/// connection closes at once and a busy one after its answer, which says `Connection: close`.
/// An answer to an HTTP/1.0 request that asked to keep the connection says `Connection: keep-alive`.
final class HTTPRequestSequencer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// What can wait behind a request.
    private enum Waiting {
        case part(NIOAny)
        case error(any Error)
        case inputClosed
    }

    private var sequence = RequestSequence<Waiting>()
    /// Requests that arrived and answers that went out, counted to pair them (they are in
    /// order), and which requests were HTTP/1.0 asking to keep the connection: their answers
    /// must say `Connection: keep-alive` or the client closes it (HTTP/1.1's default is to keep).
    private var arrived = 0
    private var answered = 0
    private var keepAliveHTTP10: [Int] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let kind: RequestSequence<Waiting>.Kind
        switch unwrapInboundIn(data) {
        case .head(let head):
            kind = .head
            arrived += 1
            if head.version == .http1_0, head.isKeepAlive { keepAliveHTTP10.append(arrived) }
        case .body: kind = .body
        case .end: kind = .end
        }
        if sequence.arrived(.part(data), kind) { context.fireChannelRead(data) }
        // Quiescing, the rest of a request answered early has arrived: nothing is left to do.
        if sequence.shouldClose { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request that does not parse is answered in its turn, after the ones before it.
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        if sequence.arrived(.error(error), .event) { context.fireErrorCaught(error) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            if sequence.quiesce() { context.close(promise: nil) }
        case let event as ChannelEvent where event == .inputClosed:
            // A client that half-closes after its last request still gets the answers before it.
            if sequence.arrived(.inputClosed, .event) { context.fireUserInboundEventTriggered(event) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func read(context: ChannelHandlerContext) {
        if sequence.readRequested() { context.read() }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            // An informational answer (`100 Continue`) comes before the request's own.
            guard head.status.code >= 200 else { return context.write(data, promise: promise) }
            answered += 1
            if sequence.quiescing {
                head.headers.replaceOrAdd(name: "connection", value: "close")
            } else if keepAliveHTTP10.first == answered {
                keepAliveHTTP10.removeFirst()
                if !head.headers.contains(name: "connection") {
                    head.headers.add(name: "Connection", value: "keep-alive")
                }
            } else {
                return context.write(data, promise: promise)
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            sequence.responseEnded()
            if sequence.shouldClose {
                let written = promise ?? context.eventLoop.makePromise()
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                context.write(data, promise: written)
                return
            }
            context.write(data, promise: promise)
            // The next request goes on now (its handler may answer it before this returns).
            var delivered = false
            while let item = sequence.nextDeliverable() {
                delivered = true
                switch item {
                case .part(let part): context.fireChannelRead(part)
                case .error(let error): context.fireErrorCaught(error)
                case .inputClosed: context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
                }
            }
            if delivered { context.fireChannelReadComplete() }
            if sequence.takeHeldRead() { context.read() }
        default:
            context.write(data, promise: promise)
        }
    }
}
