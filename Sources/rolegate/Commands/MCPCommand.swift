import ArgumentParser
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `rolegate mcp`: the gateway's MCP tools over stdio, for desktop agent hosts that start a
/// local command. Each JSON-RPC line read from stdin is posted to the gateway's `/mcp` with
/// the token from `$ROLEGATE_TOKEN`, and each answer is written to stdout as one line. The
/// tools run on the gateway, as the token's role, audited there; nothing here holds more than
/// the token.
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Serve the gateway's MCP tools over stdio (for desktop agents), with the token in $ROLEGATE_TOKEN.",
        discussion: """
            An agent host's configuration, e.g.:
              {"mcpServers": {"billing-db": {"command": "rolegate",
                "args": ["mcp", "--api", "https://rolegate.example.com"],
                "env": {"ROLEGATE_TOKEN": "rgt_…"}}}}
            The token's service needs mcp: true in the policy.
            """)

    @Option(help: "The gateway's HTTP API (default: $ROLEGATE_API, else http://127.0.0.1:8080).") var api: String?

    func run() async throws {
        guard let token = ProcessInfo.processInfo.environment["ROLEGATE_TOKEN"], !token.isEmpty else {
            throw CLIError("set ROLEGATE_TOKEN to the agent's token (a service with mcp: true)")
        }
        let endpoint = try ExchangeClient.apiURL(api).appendingPathComponent("mcp")
        let relay = MCPRelay(endpoint: endpoint, token: token)
        let lines = AsyncStream<String> { continuation in
            Thread.detachNewThread {
                while let line = readLine(strippingNewline: true) { continuation.yield(line) }
                continuation.finish()
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for await line in lines where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                group.addTask { await relay.forward(line) }
            }
        }
    }
}

/// Posts stdio's JSON-RPC messages to `/mcp` and writes the answers, one line each.
struct MCPRelay: Sendable {
    let endpoint: URL
    let token: String
    let output = LineWriter()

    func forward(_ line: String) async {
        let message = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        let id = message?["id"]
        let isRequest = message?["method"] != nil && id != nil
        var request = URLRequest(url: endpoint, timeoutInterval: 300)
        request.httpMethod = "POST"
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json, text/event-stream", forHTTPHeaderField: "Accept")
        request.httpBody = Data(line.utf8)
        let data: Data
        let status: Int
        do {
            (data, status) = try await send(request, cannotReach: "the gateway at \(endpoint)")
        } catch {
            if isRequest { await output.write(Self.error(id, "\(error)")) }
            return
        }
        if status == 202 { return }
        let answer = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        if answer?["jsonrpc"] != nil {
            // Written compact, on one line, as stdio framing needs.
            if let compact = try? JSONSerialization.data(withJSONObject: answer!, options: [.withoutEscapingSlashes]) {
                await output.write(String(decoding: compact, as: UTF8.self))
            }
        } else if isRequest {
            // Rolegate's own refusal (a problem): a wrong or revoked token, MCP not enabled.
            let code = answer?["code"] as? String ?? "http_\(status)"
            let detail = answer?["detail"] as? String ?? "the gateway answered \(status)"
            await output.write(Self.error(id, "\(code): \(detail)"))
        }
    }

    static func error(_ id: Any?, _ message: String) -> String {
        let object: [String: Any] = [
            "jsonrpc": "2.0", "id": id ?? NSNull(), "error": ["code": -32001, "message": message],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Whole lines to stdout, one writer at a time.
actor LineWriter {
    func write(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
