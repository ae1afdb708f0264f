import Foundation
import RolegateCore
import RolegateTokens

/// The person behind a console request: their session, their token as it is now, who they are
/// to the access rules, and their console role (nil: they see only their access requests).
struct ConsoleViewer: Sendable {
    var session: ConsoleSession
    var record: TokenRecord
    var caller: AccessRequests.Caller
    var role: ConsoleRole?
    /// The value every form of the session carries back.
    var csrf: String

    /// Their login: a person's email, or the service the token is for.
    var name: String { record.service }

    /// How the audit log names them when they act: `console:<login>/<token id>`.
    var actor: String { "console:\(record.service)/\(record.id)" }

    func may(_ needed: ConsoleRole) -> Bool {
        role.map { $0 >= needed } ?? false
    }
}
