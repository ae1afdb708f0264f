import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error response: a JSON problem body with a stable `code`, never a stack trace or a secret.
struct Problem: Error {
    var status: HTTPResponse.Status
    var code: String
    var message: String
    /// More fields for the body (text or whole numbers: a problem must be `Sendable`).
    var extra: [String: Extra] = [:]

    enum Extra: Sendable {
        case text(String)
        case number(Int)

        var json: Any {
            switch self {
            case .text(let value): value
            case .number(let value): value
            }
        }
    }

    static func badRequest(_ message: String) -> Problem {
        Problem(status: .badRequest, code: "bad_request", message: message)
    }

    func response(requestID: String) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: body(requestID: requestID)))
    }

    /// The JSON body (keys sorted, a newline at the end).
    func body(requestID: String) -> ByteBuffer {
        var body: [String: Any] = [
            "code": code, "message": message, "status": Int(status.code), "request_id": requestID,
        ]
        for (key, value) in extra { body[key] = value.json }
        return ByteBuffer(string: jsonText(body) + "\n")
    }
}

func jsonResponse(_ value: Any, status: HTTPResponse.Status = .ok) -> Response {
    Response(
        status: status, headers: [.contentType: "application/json; charset=utf-8"],
        body: .init(byteBuffer: ByteBuffer(string: jsonText(value) + "\n")))
}

func textResponse(_ text: String, contentType: String, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(string: text)))
}
