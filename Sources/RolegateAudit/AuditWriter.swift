import Foundation
public import NIOCore
import NIOPosix
public import RolegateCore
public import RolegateStore
import Synchronization

/// Appends audit events to the store without putting the store on the hot path: callers
/// enqueue into a bounded in-memory queue (a lock and an array append), and one writer task
/// takes whatever has accumulated and appends it as one transaction (group commit) to this
/// instance's hash chain.
///
/// When the store cannot keep up or is down, the queue fills. With ``FailurePolicy/block``
/// callers check ``accepting`` before new work (a session, a statement) and refuse it once
/// the queue holds `capacity` events; what already happened (a statement that was running,
/// a session's end, a refused login) is still queued, up to ``hardLimit``, so that no work
/// admitted under `block` goes unaudited. With ``FailurePolicy/continue`` events beyond
/// `capacity` are dropped and counted. Events are never dropped once accepted: a failed
/// batch stays at the front of the queue and is retried, and ``shutdown()`` writes
/// everything still queued.
public final class AuditWriter: Sendable {
    public enum FailurePolicy: String, Sendable, CaseIterable {
        /// Refuse new work while events cannot be written and the queue is full (the default).
        case block
        /// Keep serving; count dropped events.
        case `continue`
    }

    private struct State {
        var queue: [AuditEvent] = []
        /// Events the writer took and has not written yet (they still count against capacity).
        var inFlight = 0
        var dropped = 0
        var written = 0
        var failing: String?
        var stopping = false
        /// The writer, while it waits for ``wakeAt`` events to be queued (or its timer).
        var wake: CheckedContinuation<Void, Never>?
        var wakeAt = 1
        /// Tells the timer of one wait from that of a later one.
        var waitNumber = 0
    }

    /// Group commit: at most one transaction per window, carrying every event of it. Longer
    /// windows write each index page, WAL frame and checkpoint fewer times per event (20 ms →
    /// 100 ms cut the SQLite writer's CPU per event by about a quarter under `pgbench -S`); a
    /// crash can lose the window still gathering.
    static let gatherDelay: Duration = .milliseconds(100)
    /// A backlog this large is written at once, without waiting out the window.
    static let fullBatch = 20_000

    public let store: any Store
    public let instance: String
    public let capacity: Int
    public let failurePolicy: FailurePolicy
    private let problem: @Sendable (String) -> Void
    /// Where the writer's timers run (see ``LoopSleep``).
    private let timers: any EventLoop
    private let state = Mutex(State())
    /// Events queued or being written (`queue.count + inFlight`), kept beside the lock so the
    /// check every statement makes under `on_failure: block` (``accepting``) takes no lock.
    private let backlog = Atomic<Int>(0)

    /// - Parameters:
    ///   - instance: this writer's chain; one per gateway instance (or CLI host).
    ///   - problem: told (rate-limited by state changes) when writes fail, recover, or events are dropped.
    ///   - timers: the event loop whose timer ends each gather window.
    public init(
        store: any Store, instance: String, capacity: Int = 100_000,
        failurePolicy: FailurePolicy = .block, problem: @escaping @Sendable (String) -> Void = { _ in },
        timers: (any EventLoop)? = nil
    ) {
        self.store = store
        self.instance = instance
        self.capacity = capacity
        self.failurePolicy = failurePolicy
        self.problem = problem
        self.timers = timers ?? MultiThreadedEventLoopGroup.singleton.any()
    }

    /// Under `block`, how many events the queue holds at most: `capacity` for new work, as
    /// much again for events of work admitted before the queue filled (with many sessions
    /// pipelining statements, a backlog of those can build up). Beyond it events are dropped
    /// and counted, so a store that stays down cannot exhaust memory.
    public var hardLimit: Int { failurePolicy == .block ? 2 * capacity : capacity }

    /// Queues `event`, the record of something that happened. Returns false when it was
    /// dropped (counted): under `continue` once `capacity` events wait, under `block` only
    /// past ``hardLimit``. Under `block`, check ``accepting`` before starting new work.
    @discardableResult
    public func record(_ event: AuditEvent) -> Bool {
        let (accepted, wake, droppedNow) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?, Int?) in
            guard s.queue.count + s.inFlight < hardLimit else {
                s.dropped += 1
                // Report the first drop and every 1000th, not each one.
                return (false, nil, s.dropped == 1 || s.dropped % 1000 == 0 ? s.dropped : nil)
            }
            s.queue.append(event)
            backlog.add(1, ordering: .relaxed)
            // The writer is woken once, when the backlog it waits for is there.
            guard s.queue.count >= s.wakeAt, let wake = s.wake else { return (true, nil, nil) }
            s.wake = nil
            return (true, wake, nil)
        }
        wake?.resume()
        if let droppedNow {
            problem(
                failurePolicy == .block
                    ? "audit queue over its limit (\(hardLimit) events, twice queue_size): \(droppedNow) events of work already done dropped so far"
                    : "audit queue full (\(capacity) events): \(droppedNow) events dropped so far")
        }
        return accepted
    }

    /// Whether new work can be audited right now (false once `capacity` events wait).
    public var accepting: Bool { backlog.load(ordering: .relaxed) < capacity }

    /// Whether new work may start: always under `continue`, under `block` while ``accepting``.
    public var admitsNewWork: Bool { failurePolicy != .block || accepting }

    /// Why a statement is refused while the queue is full under `block` (wire and HTTP alike).
    public static let statementsRefused =
        "the audit log cannot be written right now, so statements are refused; try again later"

    public var droppedCount: Int { state.withLock { $0.dropped } }
    public var writtenCount: Int { state.withLock { $0.written } }
    public var queuedCount: Int { state.withLock { $0.queue.count + $0.inFlight } }
    /// Why the last write failed, while writes are failing (nil once one succeeds).
    public var failure: String? { state.withLock { $0.failing } }

    /// Writes batches until ``shutdown()``; run it in its own task.
    public func run() async {
        var backoff: Duration = .milliseconds(100)
        var lastWrite = ContinuousClock.now - Self.gatherDelay
        // A backlog this large goes at once: half the queue (a small `queue_size` must not fill
        // while the window runs), at most `fullBatch`.
        let writeAt = min(Self.fullBatch, max(1, capacity / 2))
        while true {
            // Wait out the window; `record` cuts it short when the backlog reaches `writeAt`.
            let windowLeft = lastWrite + Self.gatherDelay - .now
            if windowLeft > .zero { await waitForEvents(count: writeAt, atMost: windowLeft) }
            // Take everything queued by swapping the array: O(1) under the lock, so event loops
            // recording events never wait behind a copy.
            let batch = state.withLock { s -> [AuditEvent] in
                let taken = s.queue
                s.queue = []
                s.inFlight = taken.count
                return taken
            }
            if batch.isEmpty {
                if state.withLock({ $0.stopping }) { return }
                await waitForEvents(count: 1, atMost: nil)
                continue
            }
            lastWrite = .now
            do {
                try await store.recordAudit(batch, instance: instance)
                let recovered = state.withLock { s -> Bool in
                    s.inFlight = 0
                    backlog.subtract(batch.count, ordering: .relaxed)
                    s.written += batch.count
                    defer { s.failing = nil }
                    return s.failing != nil
                }
                if recovered { problem("audit log writes recovered") }
                backoff = .milliseconds(100)
            } catch {
                let first = state.withLock { s -> Bool in
                    // Nothing is lost: the batch goes back in front of what arrived meanwhile.
                    s.queue = batch + s.queue
                    s.inFlight = 0
                    defer { s.failing = error.description }
                    return s.failing == nil
                }
                if first { problem("cannot write the audit log (will retry; \(batch.count)+ events queued): \(error)") }
                if state.withLock({ $0.stopping }) { return }
                await LoopSleep.sleep(for: backoff, on: timers)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// Returns once `count` events are queued, `limit` has passed (nil: no limit), or
    /// ``shutdown()`` was called. One wake-up, by `record` or by a timer on the event loop:
    /// no polling.
    private func waitForEvents(count: Int, atMost limit: Duration?) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let number = state.withLock { s -> Int? in
                if s.queue.count >= count || s.stopping { return nil }
                s.waitNumber += 1
                s.wake = continuation
                s.wakeAt = count
                return s.waitNumber
            }
            guard let number else { return continuation.resume() }
            guard let limit else { return }
            timers.scheduleTask(in: TimeAmount(limit)) {
                // Still the same wait (not one `record` ended before and a later one began)?
                let wake = self.state.withLock { s -> CheckedContinuation<Void, Never>? in
                    guard s.waitNumber == number, let wake = s.wake else { return nil }
                    s.wake = nil
                    return wake
                }
                wake?.resume()
            }
        }
    }

    /// Stops ``run()`` once everything queued is written (or the store fails); returns how
    /// many events could not be written.
    public func shutdown(waiting deadline: Duration = .seconds(10)) async -> Int {
        let wake = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.stopping = true
            defer { s.wake = nil }
            return s.wake
        }
        wake?.resume()
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end, state.withLock({ $0.queue.count + $0.inFlight > 0 && $0.failing == nil }) {
            await LoopSleep.sleep(for: .milliseconds(20), on: timers)
        }
        return state.withLock { $0.queue.count }
    }
}
