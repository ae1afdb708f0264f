import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error response: an RFC 9457 problem (`application/problem+json`) with Rolegate's stable
/// `code`, never a stack trace or a secret.
///
/// The body carries RFC 9457's members (`type` is `urn:rolegate:problem:<code>`, `title` the
/// code's summary, `status`, `detail` what went wrong this time) and Rolegate's own: `code`,
/// `message` (the same as `detail`, for clients of API version 1) and `request_id`; PostgreSQL's
/// refusals add `sqlstate`, `sql_detail`, `hint` and a batch's failing `statement`.
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

    static let contentType = "application/problem+json"

    static func badRequest(_ message: String) -> Problem {
        Problem(status: .badRequest, code: "bad_request", message: message)
    }

    /// The summary of a code, the same for every occurrence (RFC 9457's `title`).
    static func title(_ code: String, status: HTTPResponse.Status) -> String {
        titles[code] ?? status.reasonPhrase
    }

    private static let titles: [String: String] = [
        "token_invalid": "Invalid token", "token_expired": "Token expired", "token_revoked": "Token revoked",
        "not_admin": "Not an admin token", "admin_token": "Admin tokens reach no database",
        "permission_denied": "Permission denied", "bad_request": "Bad request",
        "body_too_large": "Request body too large", "body_timeout": "Request body too slow",
        "timeout": "Timed out", "upstream_unavailable": "Database unavailable", "upstream_busy": "Database busy",
        "audit_unavailable": "Audit log unavailable", "constraint_violation": "Constraint violation",
        "transaction_conflict": "Transaction conflict", "database_unknown": "Unknown database",
        "store_unavailable": "Token store unavailable", "refused": "Refused by the policy",
        "self_revocation": "A token cannot revoke itself", "token_unknown": "Unknown token",
        "session_unknown": "Unknown session", "peer_signature_invalid": "Invalid peer signature",
        "not_found": "Not found", "method_not_allowed": "Method not allowed", "not_acceptable": "Not acceptable",
        "unsupported_media_type": "Unsupported media type", "internal": "Internal error",
    ]

    func response(requestID: String, headers extra: HTTPFields = [:]) -> Response {
        var headers: HTTPFields = [.contentType: Self.contentType]
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: body(requestID: requestID)))
    }

    /// The JSON body (keys sorted, a newline at the end).
    func body(requestID: String) -> ByteBuffer {
        var body: [String: Any] = [
            "type": "urn:rolegate:problem:\(code)", "title": Self.title(code, status: status),
            "status": Int(status.code), "detail": message, "code": code, "message": message, "request_id": requestID,
        ]
        for (key, value) in extra { body[key] = value.json }
        return ByteBuffer(string: jsonText(body) + "\n")
    }
}
