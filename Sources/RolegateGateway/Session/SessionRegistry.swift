public import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RolegateCore
import RolegateTokens

/// What the gateway tells a live session from outside its event loop.
enum SessionEvent: Sendable {
    /// End the session with a FATAL error: its token was revoked, expired or left the policy.
    case end(code: String, message: String)
    /// Cancel the statement the session is running upstream.
    case cancel
}

/// What the admin API shows of a live session; `statement` is kept current by the session
/// (while statement audit is on).
public final class SessionStatus: Sendable {
    public let id: String
    public let client: String?
    public let database: String
    public let startedAt: Date
    private let current = NIOLockedValueBox<String?>(nil)

    init(id: String, client: String?, database: String, startedAt: Date = Date()) {
        self.id = id
        self.client = client
        self.database = database
        self.startedAt = startedAt
    }

    public var statement: String? {
        get { current.withLockedValue { $0 } }
        set { current.withLockedValue { $0 = newValue } }
    }
}

/// The client's cancel key: what we hand out in BackendKeyData instead of the server's.
struct CancelKey: Hashable, Sendable {
    var processID: Int32
    var secret: [UInt8]
}

/// Every live client session: for connection limits, revocation (sessions follow their
/// token) and cancel requests (our keys map to the session, never straight to a server).
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
    /// This instance's cancel tag (see PeerDirectory): the high half of every processID it
    /// hands out. 0 when it runs alone: the whole processID is random.
    let cancelTag: Int

    init(maxClients: Int, maxPerService: Int, cancelTag: Int = 0) {
        self.maxClients = maxClients
        self.maxPerService = maxPerService
        self.cancelTag = cancelTag
    }

    /// The instance a cancel key was handed out by (0 for a lone instance's keys).
    static func cancelTag(of key: CancelKey) -> Int { Int(key.processID >> 16) }

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

    /// Registers an authenticated session; nil when its service is at its limit.
    func register(channel: any Channel, record: TokenRecord, status: SessionStatus) -> CancelKey? {
        state.withLockedValue { s in
            guard s.perService[record.service, default: 0] < maxPerService else { return nil }
            var key: CancelKey
            var generator = SystemRandomNumberGenerator()
            repeat {
                // One random word for both halves (one system call, not five).
                let word = generator.next()
                let low = UInt32(truncatingIfNeeded: word)
                key = CancelKey(
                    processID: cancelTag > 0
                        ? Int32(cancelTag) << 16 | Int32(low & 0xFFFF) : Int32(low % UInt32(Int32.max)) + 1,
                    secret: withUnsafeBytes(of: UInt32(truncatingIfNeeded: word >> 32)) { Array($0) })
            } while s.sessions[key] != nil
            s.sessions[key] = Entry(channel: channel, record: record, status: status)
            s.byToken[record.id, default: []].insert(key)
            s.perService[record.service, default: 0] += 1
            return key
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
        let message =
            switch failure {
            case .revoked: "terminating connection: the token of service \"\(entry.record.service)\" was revoked"
            case .expired: "terminating connection: the token of service \"\(entry.record.service)\" expired"
            default: "terminating connection: service \"\(entry.record.service)\" is no longer allowed"
            }
        entry.channel.pipeline.fireUserInboundEventTriggered(SessionEvent.end(code: "28000", message: message))
    }
}
