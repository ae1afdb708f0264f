import Hummingbird

/// Reads the body of a request to a contract route whole before the route sees it, under the
/// API's limits: 413 past `max_body_bytes` (refused unread when its declared length says so) and
/// 408 when it does not arrive within the body timeout. The generated code then decodes it from
/// memory.
struct BodyMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let api: HTTPAPI

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard request.method != .get, request.method != .head else { return try await next(request, context) }
        switch await api.body(request, context, limit: api.settings.maxBodyBytes) {
        case .failure(let problem):
            return problem.response(requestID: context.requestID)
        case .success(let data):
            // Its length said exactly, so that an empty body counts as none (see ContractProblems).
            var head = request.head
            head.headerFields[.contentLength] = String(data.count)
            let read = Request(head: head, body: RequestBody(buffer: ByteBuffer(bytes: data)))
            return try await next(read, context)
        }
    }
}
