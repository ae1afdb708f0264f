import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

@testable import RolegateGateway

/// A role's cap on server connections, shared by the pools of two event loops, against a
/// real PostgreSQL: sessions waiting at the cap are served in arrival order, whichever
/// loop they wait on, and a wait that runs out leaves the queue.
@Suite(.serialized, .ownThreads) struct UpstreamPoolTests {
    /// Two event loops, each with its pool, sharing one cap of `limit` connections for the role.
    final class TwoLoops: Sendable {
        let cluster: PostgresCluster
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let counts: RoleConnectionCounts
        let pools: [NIOLoopBound<UpstreamPool>]
        let key: UpstreamKey
        static let role = "pool_user"
        static let password = "pool-test-secret"

        /// `answerTimeouts`: each loop's pool's (a short one fails real logins on a loaded machine).
        init(limit: Int, answerTimeouts: [TimeAmount] = [.seconds(10), .seconds(10)]) async throws {
            try TestThreads.requireForBlockingWork("a test's PostgreSQL cluster")
            cluster = try PostgresCluster.start()
            _ = try cluster.psql("CREATE ROLE \(Self.role) LOGIN PASSWORD '\(Self.password)'")
            key = UpstreamKey(
                host: "127.0.0.1", port: cluster.port, socketPath: nil, database: "postgres", role: Self.role,
                tls: UpstreamTLS(mode: .disable), parameters: [])
            let counts = RoleConnectionCounts(limit: limit)
            self.counts = counts
            let tls = try UpstreamTLSContexts(policy: Policy(databases: [], roles: [], services: []))
            let salted = SaltedPasswordCache()
            let all = NIOLockedValueBox([NIOLoopBound<UpstreamPool>]())
            var pools: [NIOLoopBound<UpstreamPool>] = []
            for (loop, answerTimeout) in zip(group.makeIterator(), answerTimeouts) {
                pools.append(
                    try await loop.submit {
                        let pool = UpstreamPool(
                            eventLoop: loop, limits: counts, metrics: Metrics(), lifetime: .hours(1),
                            idleTimeout: .hours(1), saltedPasswords: salted, tlsContexts: tls,
                            answerTimeout: answerTimeout
                        ) { role, from in
                            // As the gateway does: the other loops close an idle connection of the role.
                            for other in all.withLockedValue({ $0 }) where other.eventLoop !== from {
                                other.eventLoop.execute { other.value.closeOneIdle(role: role) }
                            }
                        }
                        return NIOLoopBound(pool, eventLoop: loop)
                    }.get())
            }
            all.withLockedValue { $0 = pools }
            self.pools = pools
        }

        /// `waitLimit` is long by default: a queued session waits for other sessions' logins
        /// to PostgreSQL, which take seconds on a loaded CI machine (10 s ran out there once).
        func acquire(
            on index: Int, key: UpstreamKey? = nil, waitLimit: TimeAmount = .seconds(90)
        ) -> EventLoopFuture<UpstreamConnection> {
            let pool = pools[index]
            let key = key ?? self.key
            return pool.eventLoop.flatSubmit {
                pool.value.acquire(key: key, password: Self.password, cap: .max, waitLimit: waitLimit)
            }
        }

        func release(_ connection: UpstreamConnection, on index: Int) {
            let pool = pools[index]
            pool.eventLoop.execute { pool.value.release(connection) }
        }

        /// Waits until `count` sessions queue for the role.
        func waitForQueue(_ count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while counts.waitingSnapshot[Self.role, default: 0] != count, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(counts.waitingSnapshot[Self.role, default: 0] == count)
        }

        /// Waits until loop `index`'s pool holds `count` idle connections (a released one is
        /// idle once its reset has been answered).
        func waitForIdle(_ count: Int, on index: Int) async throws {
            let pool = pools[index]
            let deadline = ContinuousClock.now + .seconds(30)
            while try await pool.eventLoop.submit({ pool.value.idleCount }).get() != count,
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(try await pool.eventLoop.submit({ pool.value.idleCount }).get() == count)
        }

        func stop() async {
            try? await group.shutdownGracefully()
            cluster.stop()
        }
    }

    /// One connection allowed. A session on loop 1 waits for the one that loop 0 holds; then
    /// a newcomer on loop 0 asks too. When loop 0's connection comes back, the waiter on
    /// loop 1 gets the slot (loop 0's connection is closed for it), not the newcomer that
    /// could have reused it at once; the newcomer is next.
    @Test func aWaiterOnAnotherLoopIsServedBeforeLaterSessions() async throws {
        let setup = try await TwoLoops(limit: 1)
        defer { Task(executorPreference: TestThreads.shared) { await setup.stop() } }
        let first = try await setup.acquire(on: 0).get()
        let second = setup.acquire(on: 1)
        try await setup.waitForQueue(1)
        let third = setup.acquire(on: 0)
        try await setup.waitForQueue(2)
        setup.release(first, on: 0)

        let secondConnection = try await second.get()
        #expect(secondConnection.processID != first.processID, "loop 1 cannot use loop 0's connection")
        #expect(secondConnection.channel.eventLoop === setup.pools[1].eventLoop)
        try await setup.waitForQueue(1)
        #expect(setup.counts.snapshot[TwoLoops.role] == 1, "more server connections than the cap")
        setup.release(secondConnection, on: 1)
        let thirdConnection = try await third.get()
        #expect(thirdConnection.channel.eventLoop === setup.pools[0].eventLoop)
        try await setup.waitForQueue(0)
        #expect(setup.counts.snapshot[TwoLoops.role] == 1)
        setup.release(thirdConnection, on: 0)
    }

    /// On one loop, a connection coming back goes straight to the session waiting for it:
    /// the same server connection, reset, without a new login.
    @Test func aWaiterOnTheSameLoopGetsTheConnectionItself() async throws {
        let setup = try await TwoLoops(limit: 1)
        defer { Task(executorPreference: TestThreads.shared) { await setup.stop() } }
        let first = try await setup.acquire(on: 0).get()
        let second = setup.acquire(on: 0)
        try await setup.waitForQueue(1)
        setup.release(first, on: 0)
        let secondConnection = try await second.get()
        #expect(secondConnection === first)
        #expect(setup.counts.snapshot[TwoLoops.role] == 1)
        setup.release(secondConnection, on: 0)
    }

    /// A wait that runs out fails with 53300 naming the role and leaves the queue: the
    /// connection that comes back afterwards stays idle for the next session.
    @Test func aWaitThatRunsOutFailsWith53300AndLeavesTheQueue() async throws {
        let setup = try await TwoLoops(limit: 1)
        defer { Task(executorPreference: TestThreads.shared) { await setup.stop() } }
        let first = try await setup.acquire(on: 0).get()
        let error = await #expect(throws: UpstreamError.self) {
            try await setup.acquire(on: 1, waitLimit: .milliseconds(200)).get()
        }
        #expect(error?.code == .busy && error?.sqlState == "53300")
        #expect(error?.description == "all server connections of role pool_user are busy (cap 1)")
        #expect(setup.counts.waitingSnapshot.isEmpty)
        setup.release(first, on: 0)
        try await setup.waitForIdle(1, on: 0)
        let again = try await setup.acquire(on: 0).get()
        #expect(again === first, "the connection was not kept for reuse")
        setup.release(again, on: 0)
    }

    /// A server (or a balancer in front of it) that takes the connection and never answers:
    /// the login is given up after the answer timeout, with a clear error, and its slot under
    /// the cap is free again. (Loop 0, which logs in to the silent server, waits 300 ms; loop 1,
    /// which logs in to PostgreSQL afterwards, the usual 10 s.)
    @Test func aServerThatNeverAnswersTheLoginGivesItsSlotBack() async throws {
        let setup = try await TwoLoops(limit: 1, answerTimeouts: [.milliseconds(300), .seconds(10)])
        defer { Task(executorPreference: TestThreads.shared) { await setup.stop() } }
        let silent = try await ServerBootstrap(group: setup.group).bind(host: "127.0.0.1", port: 0).get()
        defer { silent.close(promise: nil) }
        let key = UpstreamKey(
            host: "127.0.0.1", port: try #require(silent.localAddress?.port), socketPath: nil, database: "postgres",
            role: TwoLoops.role, tls: UpstreamTLS(mode: .disable), parameters: [])
        // Raced against 30 s, so that a login waiting for ever fails the test (with its own error)
        // instead of hanging it. No wall-clock check beside it: on a loaded CI machine the 300 ms
        // answer can take seconds to be delivered, and the error already says which came first.
        let loop = setup.pools[0].eventLoop
        let outcome = loop.makePromise(of: UpstreamConnection.self)
        setup.acquire(on: 0, key: key).cascade(to: outcome)
        loop.scheduleTask(in: .seconds(30)) {
            outcome.fail(UpstreamError(.closed, "still waiting after 30 s", serverSQLState: "none"))
        }
        let error = await #expect(throws: UpstreamError.self) { try await outcome.futureResult.get() }
        #expect(error?.code == .timeout && error?.sqlState == "08006")
        #expect(error?.description == "the server did not complete the login within 300 ms")
        #expect(setup.counts.snapshot[TwoLoops.role] == 0, "the silent server kept its slot")
        let working = try await setup.acquire(on: 1).get()
        setup.release(working, on: 1)
    }

    /// A server process that stops answering while its connection is reset after use: the
    /// connection is closed after the answer timeout (the usual 10 s: the login before it must
    /// not time out on a loaded machine) instead of holding its slot.
    @Test func aResetThatIsNeverAnsweredGivesTheSlotBack() async throws {
        let setup = try await TwoLoops(limit: 1)
        defer { Task(executorPreference: TestThreads.shared) { await setup.stop() } }
        let connection = try await setup.acquire(on: 0).get()
        let backend = connection.processID
        #expect(kill(backend, SIGSTOP) == 0)
        defer { kill(backend, SIGCONT) }
        setup.release(connection, on: 0)
        let deadline = ContinuousClock.now + .seconds(60)
        while setup.counts.snapshot[TwoLoops.role] != 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(setup.counts.snapshot[TwoLoops.role] == 0, "a reset without an answer kept the slot")
        #expect(!connection.isOpen)
        kill(backend, SIGCONT)
        let next = try await setup.acquire(on: 0).get()
        #expect(next.processID != backend)
        setup.release(next, on: 0)
    }
}
