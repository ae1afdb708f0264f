import Foundation
import RolegateCore

/// Which live sessions end because of time or a store outage, and which token expiries are
/// recorded, at each look (``GatewayServer/sweepSessions()`` looks four times a second). Pure.
///
/// - A token past its `expires_at` is recorded once as expired (an audit `token expired` event),
///   however many sessions it has and however long they last; its sessions end when
///   `end_sessions_on_expiry` is on (the default).
/// - Under `store_outage_policy: end_sessions`, while the token store cannot be read, every
///   session ends: nothing runs on tokens that cannot be checked.
/// - Only tokens that still have sessions are remembered, so memory does not grow with the
///   number of tokens that ever expired.
struct SessionSweeper {
    enum Reason: Equatable {
        case expired
        case storeOutage
    }

    enum Decision: Equatable {
        /// Record that this token expired.
        case recordExpiry(TokenRecord)
        /// End the session at this index of the sessions looked at.
        case end(Int, Reason)
    }

    let endOnExpiry: Bool
    let endOnOutage: Bool
    /// Tokens whose expiry was recorded, among those that still have sessions.
    private(set) var expiryRecorded: Set<String> = []

    init(endOnExpiry: Bool, endOnOutage: Bool) {
        self.endOnExpiry = endOnExpiry
        self.endOnOutage = endOnOutage
    }

    /// One look at the tokens of the live sessions (one entry per session).
    mutating func sweep(_ sessions: [TokenRecord], now: Date, storeCurrent: Bool) -> [Decision] {
        var decisions: [Decision] = []
        let outage = endOnOutage && !storeCurrent
        expiryRecorded.formIntersection(sessions.map(\.id))
        for (index, record) in sessions.enumerated() {
            let expired = record.expiresAt <= now
            if expired, expiryRecorded.insert(record.id).inserted {
                decisions.append(.recordExpiry(record))
            }
            if outage {
                decisions.append(.end(index, .storeOutage))
            } else if expired, endOnExpiry {
                decisions.append(.end(index, .expired))
            }
        }
        return decisions
    }
}
