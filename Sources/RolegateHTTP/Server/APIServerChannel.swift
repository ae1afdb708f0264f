import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOSSL

/// Each HTTP/1.1 connection of the API: NIO's HTTP/1 codec, our ``HTTPRequestSequencer``
/// (answers go out in the order of their requests, whoever answers them; at shutdown idle
/// connections close at once and busy ones after their answer), the idle timeout, the data
/// API's ``DataRequestHandler``, then Hummingbird's conversion to HTTP types and its router
/// for every other request.
struct APIServerChannel: HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let idleTimeout: TimeAmount
    let api: HTTPAPI

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let operations = channel.pipeline.syncOperations
            if let tls = api.settings.tls { try operations.addHandler(NIOSSLServerHandler(context: tls)) }
            // Hummingbird's limits: a request with more or larger header fields is refused.
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = 80 * 1024
            limits.maxHeaderListSize = 80 * 1024
            limits.maxHeaderFieldCount = 1000
            try operations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
            try operations.addHandler(HTTPRequestSequencer())
            try operations.addHandler(IdleConnectionHandler(timeout: idleTimeout))
            try operations.addHandler(DataRequestHandler(api: api))
            try operations.addHandler(HTTP1ToHTTPServerCodec(secure: api.settings.tls != nil))
            return try NIOAsyncChannel(
                wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: value, logger: logger)
    }
}
