import NIOCore
import NIOHTTP1

/// Closes a connection that has had no request in progress for `timeout`: from its start,
/// and from the end of each answer until the next request begins. A request that takes
/// longer (a slow statement) is never cut by it. It sees every request, the data API's and
/// the router's alike, so it sits before both; shutting down (quiescing) is left to
/// ``HTTPRequestSequencer``, which closes idle connections at once and busy ones after their answer.
final class IdleConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    /// From a request's head until its answer's end.
    private var inProgress = false
    /// When the connection last became idle (it opened, or an answer ended).
    private var idleSince = NIODeadline.now()

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { becameIdle(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        becameIdle(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The timer stays: when it goes off during a request, it stands down (see `check`).
        if case .head = unwrapInboundIn(data) { inProgress = true }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { becameIdle(context) }
        context.write(data, promise: promise)
    }

    /// One timer per `timeout` at most, not one per request: it is armed when none is, and
    /// when it goes off it closes the connection or waits for the rest of the time.
    private func becameIdle(_ context: ChannelHandlerContext) {
        inProgress = false
        idleSince = .now()
        if timer == nil { arm(context, at: idleSince + timeout) }
    }

    private func arm(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            self?.check(context)
        }
    }

    private func check(_ context: ChannelHandlerContext) {
        timer = nil
        guard !inProgress else { return }  // armed again when the answer ends
        let deadline = idleSince + timeout
        if deadline <= .now() {
            context.close(promise: nil)
        } else {
            arm(context, at: deadline)
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}
