import Foundation
import HTTPTypes
import Hummingbird
import MCP
import NIOCore
import RolegateCore

/// `/mcp`: the Model Context Protocol over Streamable HTTP, for AI agents. The agent's bearer
/// token is a service's token like any other, and its role is the guardrail: every tool runs
/// as that role, so PostgreSQL refuses whatever the role may not do, however the SQL is
/// phrased.
///
/// Stateless (the SDK's `StatelessHTTPServerTransport`, one MCP server per request): each POST
/// is answered with JSON, carries its token, and is checked on its own, so any instance behind
/// a load balancer serves any request, and a revoked token is refused at its next call. In
/// order: `Origin` (a browser page not allowed by `mcp_allowed_origins` gets 403: DNS
/// rebinding), the token (401, before any tool runs), the service's `mcp:` (403), then the
/// SDK's checks of `Accept`, `Content-Type` and `MCP-Protocol-Version`.
extension HTTPAPI {
    func addMCPRoutes(to router: Router<APIContext>) {
        let api = self
        router.post("/mcp") { request, context in await api.mcp(request, context) }
        // No server-initiated stream and no session to end: the spec's answer is 405.
        for method in [HTTPRequest.Method.get, .delete] {
            router.on("/mcp", method: method) { _, context in
                var response = Problem(
                    status: .methodNotAllowed, code: "method_not_allowed",
                    message: "/mcp is stateless: POST each JSON-RPC message (no SSE stream, no session to end)"
                ).response(requestID: context.requestID)
                response.headers[.allow] = "POST"
                return response
            }
        }
    }

    func mcp(_ request: Request, _ context: APIContext) async -> Response {
        if let origin = request.headers[.origin], !policy.gateway.mcpAllowedOrigins.contains(origin) {
            return Problem(
                status: .forbidden, code: "origin_not_allowed",
                message: "origin \(origin) may not call /mcp (gateway.mcp_allowed_origins)"
            ).response(requestID: context.requestID)
        }
        let record: TokenRecord
        switch await authenticate(
            authorization: request.headers[.authorization], admin: false, requestID: context.requestID,
            clientAddress: context.clientAddress)
        {
        case .failure(let problem):
            var response = problem.response(requestID: context.requestID)
            if problem.status == .unauthorized {
                response.headers[.wwwAuthenticate] = #"Bearer realm="rolegate", error="invalid_token""#
            }
            return response
        case .success(let verified): record = verified
        }
        guard let service = policy.service(named: record.service), let settings = service.mcp else {
            return Problem(
                status: .forbidden, code: "mcp_disabled",
                message: "service \(record.service) is not served over MCP (set mcp: true on it in the policy)"
            ).response(requestID: context.requestID)
        }
        let body = request.body
        // BodyMiddleware read it whole already, under the API's limit and timeout.
        let bytes = (try? await body.collect(upTo: self.settings.maxBodyBytes)) ?? ByteBuffer()
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        let mcpRequest = MCP.HTTPRequest(
            method: "POST", headers: headers, body: Data(bytes.readableBytesView), path: "/mcp")
        let tools = MCPTools(
            api: self, record: record, settings: settings, requestID: context.requestID,
            clientAddress: context.clientAddress)
        let answer = await Self.serveOne(mcpRequest, tools: tools)
        var response = Response(status: .init(code: answer.statusCode))
        for (name, value) in answer.headers {
            if let field = HTTPField.Name(name) { response.headers[field] = value }
        }
        if let data = answer.bodyData {
            response.body = ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        }
        return response
    }

    /// One JSON-RPC message through an MCP server made for this request alone.
    static func serveOne(_ request: MCP.HTTPRequest, tools: MCPTools) async -> MCP.HTTPResponse {
        let server = Server(
            name: "rolegate", version: "1",
            instructions: MCPTools.instructions,
            capabilities: .init(tools: .init(listChanged: false)))
        await server.withMethodHandler(ListTools.self) { _ in ListTools.Result(tools: MCPTools.catalog) }
        await server.withMethodHandler(CallTool.self) { call in await tools.call(call) }
        let transport = StatelessHTTPServerTransport(
            validationPipeline: StandardValidationPipeline(validators: [
                AcceptHeaderValidator(mode: .jsonOnly), ContentTypeValidator(), ProtocolVersionValidator(),
            ]))
        do {
            try await server.start(transport: transport)
        } catch {
            return .error(statusCode: 500, .internalError("the MCP server could not start"))
        }
        let response = await transport.handleRequest(request)
        await server.stop()
        return response
    }
}
