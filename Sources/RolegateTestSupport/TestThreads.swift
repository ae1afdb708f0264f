import Foundation
public import Testing

/// Threads of their own for tests, which block: they wait for `psql`, `pgbench`, `initdb` and
/// the `rolegate` binary synchronously, often for seconds (a contract or load test for
/// minutes), and some compute for seconds without a suspension point.
///
/// Swift's global executor on Linux runs every task on a pool of one thread per core (two on
/// the CI machine) and never adds one when a thread blocks. Tests run side by side on that pool,
/// so two blocked tests stopped everything else in the process: an audit writer under test, a
/// store's answers, and other tests' polling loops with their deadlines. CI runs lost a minute
/// to it, and timing checks failed that had nothing to do with their own code.
///
/// Every suite has the ``Testing/Trait/ownThreads`` trait and runs its tests here instead. This
/// executor starts another thread whenever every thread it has is busy, so a test never waits
/// for another test to give a thread back: blocked tests wait in the kernel, busy ones share
/// the cores through the kernel's scheduler, fairly, rather than in one queue behind each other.
/// The pool is left to the code under test (and to the tasks tests start with `Task {}`).
public final class TestThreads: TaskExecutor, @unchecked Sendable {
    /// The executor the trait puts tests on.
    public static let shared = TestThreads(maximumThreads: 512)

    /// Past this many threads, jobs wait for one to come free: a bound against a runaway, far
    /// above the hundred or so tests a full run has in flight at once.
    public let maximumThreads: Int
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var threads = 0
    private var idle = 0

    public init(maximumThreads: Int) {
        self.maximumThreads = maximumThreads
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        // A thread waiting in `work` takes each queued job; start one when none is waiting.
        let start = jobs.count > idle && threads < maximumThreads
        if start { threads += 1 }
        let number = threads
        condition.signal()
        condition.unlock()
        if start {
            let thread = Thread { [self] in work() }
            thread.name = "rolegate-test-\(number)"
            thread.start()
        }
    }

    private func work() {
        let executor = asUnownedTaskExecutor()
        condition.lock()
        while true {
            while jobs.isEmpty {
                idle += 1
                condition.wait()
                idle -= 1
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: executor)
            condition.lock()
        }
    }

    /// Throws unless the calling test runs on these threads (its suite has `.ownThreads`):
    /// called by the fixtures that start servers and processes, so a suite that forgets the
    /// trait fails at once with what to add rather than now and then on a loaded machine.
    public static func requireForBlockingWork(_ what: String) throws {
        let onTheseThreads = withUnsafeCurrentTask { task in
            task.map { $0.unownedTaskExecutor == shared.asUnownedTaskExecutor() } ?? true
        }
        guard onTheseThreads else {
            throw Failure(
                description:
                    "\(what) blocks its thread: give the suite the .ownThreads trait, or Swift's cooperative pool (one thread per core) stalls every other test meanwhile"
            )
        }
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }
}

/// Runs a suite's tests, and the suites nested in it, on ``TestThreads`` (see there why).
public struct OwnThreadsTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(TestThreads.shared) { try await function() }
    }
}

extension Trait where Self == OwnThreadsTrait {
    /// Runs the suite's tests on threads of their own (``TestThreads``); every suite has it.
    public static var ownThreads: Self { Self() }
}
