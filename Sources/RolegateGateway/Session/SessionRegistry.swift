public import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RolegateCore
import RolegateTokens

/// What the gateway tells a live session from outside its event loop.
enum SessionEvent: Sendable {
    /// End the session with a FATAL error (its token was revoked, expired or left the policy, an
    /// administrator ended it, the gateway is stopping).
    case end(SessionEnd)
    /// Cancel the statement the session is running upstream.
    case cancel
}

/// Why the gateway ends a session, as the client's FATAL error and the audit's `session end` reason.
package struct SessionEnd: Sendable, Equatable {
    package enum Cause: String, Sendable {
        case tokenRevoked = "token revoked"
        case tokenExpired = "token expired"
        case serviceNotAllowed = "service no longer allowed"
        case administrator = "ended by an administrator"
        case shutdown
        case storeOutage = "token store unavailable"
    }

    package var cause: Cause
    /// The SQLSTATE the client gets.
    package var code: String
    package var message: String
    /// Who ended it, when a person or token did (the audit's `ended_by`).
    package var by: String?

    static func shutdown() -> SessionEnd {
        SessionEnd(cause: .shutdown, code: "57P01", message: "terminating connection: the gateway is shutting down")
    }

    static func administrator(_ actor: String) -> SessionEnd {
        SessionEnd(
            cause: .administrator, code: "57P01",
            message: "terminating connection: ended by an administrator (\(actor))", by: actor)
    }

    static func storeOutage() -> SessionEnd {
        SessionEnd(
            cause: .storeOutage, code: "08006",
            message: "terminating connection: the token store cannot be read (store_outage_policy: end_sessions)")
    }
}

/// What the admin API shows of a live session; its statement is kept current by the session
/// (while statement audit is on).
public final class SessionStatus: Sendable {
    public let id: String
    public let client: String?
    public let database: String
    public let startedAt: Date
    private let current = NIOLockedValueBox<Activity?>(nil)

    /// The statement the client sent last, when (the loop's monotonic clock, in nanoseconds)
    /// and when its answers ended (nil while it runs).
    public struct Activity: Sendable {
        public var sql: String?
        public var sentAt: UInt64
        public var answeredAt: UInt64?
    }

    init(id: String, client: String?, database: String, startedAt: Date = Date()) {
        self.id = id
        self.client = client
        self.database = database
        self.startedAt = startedAt
    }

    public var statement: String? { current.withLockedValue { $0?.sql } }

    /// The current statement and for how long it has run (or, once answered, how long it ran).
    public var activity: (sql: String?, running: Bool, duration: Duration)? {
        guard let activity = current.withLockedValue({ $0 }) else { return nil }
        let end = activity.answeredAt ?? NIODeadline.now().uptimeNanoseconds
        return (activity.sql, activity.answeredAt == nil, .nanoseconds(Int64(end &- activity.sentAt)))
    }

    func sent(_ sql: String?, at now: UInt64) {
        current.withLockedValue { $0 = Activity(sql: sql, sentAt: now) }
    }

    func answered(at now: UInt64) {
        current.withLockedValue { activity in
            if activity != nil, activity?.answeredAt == nil { activity?.answeredAt = now }
        }
    }
}

/// The client's cancel key, as handed out in BackendKeyData. Its process id is the real one of
/// the session's server process (so `pg_backend_pid()`, a NotificationResponse's sender and
/// `pg_terminate_backend` agree with what the client was told, as they do direct); its secret is
/// the gateway's own, never the server's, so a cancel always goes through the gateway's map.
package struct CancelKey: Hashable, Sendable {
    package var processID: Int32
    package var secret: [UInt8]
}

/// Every live client session: for connection limits, revocation (sessions follow their
/// token) and cancel requests (our keys map to the session, never straight to a server).
///
/// A session is registered (and so reachable by revocation) as soon as its token is proven,
/// under a provisional key; once its server connection is ready, ``adopt(_:serverProcessID:)``
/// re-keys it under that server process's id and a fresh secret, the key the client gets.
final class SessionRegistry: Sendable {
    struct Entry: Sendable {
        var channel: any Channel
        var record: TokenRecord
        var status: SessionStatus
    }

    private struct State {
        var sessions: [CancelKey: Entry] = [:]
        var byToken: [String: Set<CancelKey>] = [:]
        var perService: [String: Int] = [:]
        var clients = 0
    }

    private let state = NIOLockedValueBox(State())
    let maxClients: Int
    let maxPerService: Int
    /// This instance's cancel tag (see PeerDirectory): the first two bytes of every cancel
    /// secret it hands out, so that a peer receiving the cancel knows where to forward it (as
    /// pgbouncer's `peer_id`). 0 when it runs alone: the whole secret is random.
    let cancelTag: Int

    init(maxClients: Int, maxPerService: Int, cancelTag: Int = 0) {
        self.maxClients = maxClients
        self.maxPerService = maxPerService
        self.cancelTag = cancelTag
    }

    /// The instance a cancel key was handed out by (0 for a lone instance's keys).
    static func cancelTag(of key: CancelKey) -> Int {
        guard key.secret.count == 4 else { return 0 }
        return Int(key.secret[0]) << 8 | Int(key.secret[1])
    }

    /// A new secret: the tag (when peers share the work) and random bytes.
    private func makeSecret(_ generator: inout SystemRandomNumberGenerator) -> [UInt8] {
        let word = UInt32(truncatingIfNeeded: generator.next())
        var secret = withUnsafeBytes(of: word.bigEndian) { Array($0) }
        if cancelTag > 0 {
            secret[0] = UInt8(truncatingIfNeeded: cancelTag >> 8)
            secret[1] = UInt8(truncatingIfNeeded: cancelTag)
        }
        return secret
    }

    /// A new TCP client; false when the gateway is full.
    func clientConnected() -> Bool {
        state.withLockedValue { s in
            guard s.clients < maxClients else { return false }
            s.clients += 1
            return true
        }
    }

    func clientDisconnected() {
        state.withLockedValue { $0.clients -= 1 }
    }

    /// Registers an authenticated session under a provisional key (no server process yet); nil
    /// when its service is at its limit.
    func register(channel: any Channel, record: TokenRecord, status: SessionStatus) -> CancelKey? {
        state.withLockedValue { s in
            guard s.perService[record.service, default: 0] < maxPerService else { return nil }
            var key: CancelKey
            var generator = SystemRandomNumberGenerator()
            repeat {
                // Negative: never a real process id, so a provisional key is never a client's.
                key = CancelKey(
                    processID: -Int32(truncatingIfNeeded: generator.next() & 0x3FFF_FFFF) - 1,
                    secret: makeSecret(&generator))
            } while s.sessions[key] != nil
            s.sessions[key] = Entry(channel: channel, record: record, status: status)
            s.byToken[record.id, default: []].insert(key)
            s.perService[record.service, default: 0] += 1
            return key
        }
    }

    /// Re-keys a registered session under its server process's id, with a fresh secret: the key
    /// the client is given. Nil when the session is no longer registered.
    func adopt(_ key: CancelKey, serverProcessID: Int32) -> CancelKey? {
        state.withLockedValue { s in
            guard let entry = s.sessions.removeValue(forKey: key) else { return nil }
            var generator = SystemRandomNumberGenerator()
            var adopted: CancelKey
            repeat {
                adopted = CancelKey(processID: serverProcessID, secret: makeSecret(&generator))
            } while s.sessions[adopted] != nil
            s.sessions[adopted] = entry
            s.byToken[entry.record.id]?.remove(key)
            s.byToken[entry.record.id, default: []].insert(adopted)
            return adopted
        }
    }

    func unregister(_ key: CancelKey) {
        state.withLockedValue { s in
            guard let entry = s.sessions.removeValue(forKey: key) else { return }
            s.byToken[entry.record.id]?.remove(key)
            if s.byToken[entry.record.id]?.isEmpty == true { s.byToken[entry.record.id] = nil }
            s.perService[entry.record.service, default: 1] -= 1
        }
    }

    /// Forwards a cancel request to the session holding `key`. A stale or forged key cancels nothing.
    func cancel(_ key: CancelKey) {
        guard let entry = state.withLockedValue({ $0.sessions[key] }) else { return }
        entry.channel.pipeline.fireUserInboundEventTriggered(SessionEvent.cancel)
    }

    /// Sessions whose tokens are among `tokenIDs`.
    func sessions(tokens tokenIDs: Set<String>) -> [Entry] {
        state.withLockedValue { s in
            tokenIDs.flatMap { id in (s.byToken[id] ?? []).compactMap { s.sessions[$0] } }
        }
    }

    var all: [Entry] { state.withLockedValue { Array($0.sessions.values) } }
    var clientCount: Int { state.withLockedValue { $0.clients } }
    var perServiceCounts: [String: Int] { state.withLockedValue { $0.perService.filter { $0.value > 0 } } }

    func end(_ entry: Entry, because failure: TokenVerifier.Failure) {
        let service = entry.record.service
        let end =
            switch failure {
            case .revoked:
                SessionEnd(
                    cause: .tokenRevoked, code: "28000",
                    message: "terminating connection: the token of service \"\(service)\" was revoked")
            case .expired:
                SessionEnd(
                    cause: .tokenExpired, code: "28000",
                    message: "terminating connection: the token of service \"\(service)\" expired")
            default:
                SessionEnd(
                    cause: .serviceNotAllowed, code: "28000",
                    message: "terminating connection: service \"\(service)\" is no longer allowed")
            }
        entry.channel.pipeline.fireUserInboundEventTriggered(SessionEvent.end(end))
    }
}
