import NIOConcurrencyHelpers
public import NIOCore
public import RolegateCore

/// Slows down guessing: once one client address has failed to authenticate `limit` times
/// within `window`, each further failure from it is answered only after `delay`.
///
/// It never refuses before checking: a client that proves a valid token is admitted at
/// once, whoever else shares its address, so an attacker cannot lock a legitimate service
/// out. Delayed answers hold a connection, so at most `maxDelayedPerAddress` are held per
/// address; failures beyond that are answered at once (they learn nothing a delayed
/// answer would not tell them, and cannot fill the gateway's client slots).
public struct LoginThrottleSettings: Sendable, Equatable {
    /// Failures per address per window before answers are delayed (0: never delay).
    public var limit: Int
    public var window: Duration
    public var delay: Duration
    public var maxDelayedPerAddress: Int

    public init(
        limit: Int = 10, window: Duration = .seconds(60), delay: Duration = .seconds(2),
        maxDelayedPerAddress: Int = 32
    ) {
        self.limit = limit
        self.window = window
        self.delay = delay
        self.maxDelayedPerAddress = maxDelayedPerAddress
    }

    public static let off = LoginThrottleSettings(limit: 0)
}

/// The throttle's bookkeeping as a value: failures in, verdicts out; time is passed in.
struct LoginThrottleState {
    struct Entry {
        var windowStart: NIODeadline
        var failures: Int
        var delayed: Int
    }

    enum Verdict: Equatable {
        case answerNow
        case delay(TimeAmount)
    }

    /// What a failure means for its address. `crossedLimit` is true for the one failure
    /// that reached the limit in this window (audited once, not per attempt).
    struct Outcome: Equatable {
        var verdict: Verdict
        var crossedLimit: Bool
        var failuresInWindow: Int
    }

    let settings: LoginThrottleSettings
    private(set) var entries: [String: Entry] = [:]
    /// Addresses kept at most; past it, expired windows are dropped first.
    let capacity: Int

    init(settings: LoginThrottleSettings, capacity: Int = 100_000) {
        self.settings = settings
        self.capacity = capacity
    }

    private var window: TimeAmount { TimeAmount(settings.window) }

    mutating func failed(address: String, now: NIODeadline) -> Outcome {
        guard settings.limit > 0 else { return Outcome(verdict: .answerNow, crossedLimit: false, failuresInWindow: 0) }
        var entry = entries[address] ?? Entry(windowStart: now, failures: 0, delayed: 0)
        if now - entry.windowStart >= window {
            entry.windowStart = now
            entry.failures = 0
        }
        entry.failures += 1
        let crossed = entry.failures == settings.limit + 1
        var verdict = Verdict.answerNow
        if entry.failures > settings.limit, entry.delayed < settings.maxDelayedPerAddress {
            entry.delayed += 1
            verdict = .delay(TimeAmount(settings.delay))
        }
        if entries[address] == nil, entries.count >= capacity { evict(now: now) }
        entries[address] = entry
        return Outcome(verdict: verdict, crossedLimit: crossed, failuresInWindow: entry.failures)
    }

    /// A delayed answer went out.
    mutating func delayedAnswerSent(address: String) {
        guard var entry = entries[address] else { return }
        entry.delayed = max(0, entry.delayed - 1)
        entries[address] = entry
    }

    private mutating func evict(now: NIODeadline) {
        let window = self.window
        entries = entries.filter { now - $0.value.windowStart < window || $0.value.delayed > 0 }
        // Still full of live windows (a spread-out attack): forget the oldest half.
        if entries.count >= capacity {
            let keep = entries.sorted { $0.value.windowStart > $1.value.windowStart }.prefix(capacity / 2)
            entries = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }
}

/// The gateway-wide throttle shared by the wire gateway and the HTTP API.
public final class LoginThrottle: Sendable {
    private let state: NIOLockedValueBox<LoginThrottleState>
    public let settings: LoginThrottleSettings

    public init(settings: LoginThrottleSettings) {
        self.settings = settings
        self.state = NIOLockedValueBox(LoginThrottleState(settings: settings))
    }

    func failed(address: String) -> LoginThrottleState.Outcome {
        state.withLockedValue { $0.failed(address: address, now: .now()) }
    }

    /// A delayed answer (see ``recordFailure(address:)``) went out.
    public func delayedAnswerSent(address: String) {
        state.withLockedValue { $0.delayedAnswerSent(address: address) }
    }

    /// The audit event for an address passing the limit (once per window), on `channel` (wire or http).
    public func crossedLimitEvent(address: String?, failures: Int, channel: String) -> AuditEvent {
        AuditEvent(
            kind: .auth, action: "throttled", client: address,
            detail: [
                "channel": channel, "failures": String(failures), "window": DurationText.format(settings.window),
                "delay": DurationText.format(settings.delay),
            ])
    }

    /// For callers on an event loop (the data API): records a failure and says how long its
    /// answer must wait (nil: answer now; otherwise call ``delayedAnswerSent(address:)`` once
    /// it went out, even when the client left) and, for the failure that crossed the limit,
    /// the failures in the window.
    public func recordFailure(address: String) -> (delay: TimeAmount?, crossedLimitAt: Int?) {
        let outcome = failed(address: address)
        let delay: TimeAmount? =
            switch outcome.verdict {
            case .answerNow: nil
            case .delay(let amount): amount
            }
        return (delay, outcome.crossedLimit ? outcome.failuresInWindow : nil)
    }

    /// For the HTTP API: records a failure and waits out its delay before returning.
    /// Returns the number of failures in the window when this one crossed the limit.
    public func failedAndWait(address: String) async -> Int? {
        let (delay, crossedLimitAt) = recordFailure(address: address)
        if let delay {
            try? await Task.sleep(nanoseconds: UInt64(max(0, delay.nanoseconds)))
            delayedAnswerSent(address: address)
        }
        return crossedLimitAt
    }
}
