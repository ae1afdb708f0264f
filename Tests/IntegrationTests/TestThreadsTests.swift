import Foundation
import RolegateTestSupport
import Synchronization
import Testing

/// The threads every suite runs on (see ``TestThreads``): tests that block there, more of them
/// than there are cores, leave Swift's cooperative pool to the code under test.
@Suite(.ownThreads) struct TestThreadsTests {
    @Test func blockedTestsLeaveThePoolFree() async throws {
        let blockers = ProcessInfo.processInfo.activeProcessorCount + 2
        let blocking = Count()
        let release = DispatchSemaphore(value: 0)
        // A task on the pool, as the code under test runs: it must run while every blocker
        // blocks, and it is what releases them. On the pool itself the blockers would hold
        // every thread, and this task would never run (each wait would time out).
        let releaser = Task {
            let deadline = ContinuousClock.now + .seconds(60)
            while blocking.value.load(ordering: .acquiring) < blockers, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            let sawAll = blocking.value.load(ordering: .acquiring)
            for _ in 0..<blockers { release.signal() }
            return sawAll
        }
        let released = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<blockers {
                group.addTask {
                    blocking.value.add(1, ordering: .releasing)
                    // Blocks the thread, as a synchronous psql or pgbench does.
                    return release.wait(timeout: .now() + 60) == .success
                }
            }
            return await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
        }
        #expect(try await releaser.value == blockers, "blocked side by side, not a few at a time")
        #expect(released == blockers, "only \(released) of \(blockers) blockers were released by a task on the pool")
    }

    @Test func blockingWorkOffTheseThreadsIsRefused() async throws {
        try TestThreads.requireForBlockingWork("this test")
        let onThePool = await Task { () -> String? in
            do {
                try TestThreads.requireForBlockingWork("psql")
                return nil
            } catch {
                return "\(error)"
            }
        }.value
        #expect(onThePool?.contains("give the suite the .ownThreads trait") == true, "\(onThePool ?? "accepted")")
    }
}

private final class Count: Sendable {
    let value = Atomic<Int>(0)
}
