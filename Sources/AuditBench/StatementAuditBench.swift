import Foundation
import NIOCore
import RolegateAudit
import RolegateCore
import RolegateGateway
import RolegateStore

/// What statement audit costs per statement, apart from sockets and from the machine's other
/// processes, for `Sources/AuditBench` (run by bench/run.py). It runs the gateway's own code:
/// the ``StatementTracker`` following one `pgbench -S -M prepared` transaction's messages,
/// ``SessionAudit/statementEvent(_:who:sessionID:detail:)`` and ``AuditWriter/record(_:)`` on
/// the event loop's side; ``Store/recordAudit(_:instance:)`` in group commits on the writer's.
enum StatementAuditBench {
    /// CPU time of the calling thread per statement, in nanoseconds, for `count` statements
    /// sent in bursts of `burst` every 10 ms (a gateway's pace, so the writer, when `writer` is
    /// given and running, takes windows of the size it takes under load, not one huge backlog).
    /// Without `writer` only the tracker runs: its share of the cost.
    static func eventLoopSide(statements count: Int, burst: Int, recordingTo writer: AuditWriter?) -> Double {
        var session = Session()
        var finished = 0
        var cpu: UInt64 = 0
        var sent = 0
        while sent < count {
            let inBurst = min(burst, count - sent)
            let started = threadCPU()
            for _ in 0..<inBurst {
                // One clock reading per read, as the relay does.
                session.transaction(sent: NIODeadline.now().uptimeNanoseconds) {
                    NIODeadline.now().uptimeNanoseconds
                } finished: { event in
                    finished += 1
                    if let writer { writer.record(event()) }
                }
            }
            cpu += threadCPU() - started
            sent += inBurst
            Thread.sleep(forTimeInterval: 0.01)
        }
        precondition(finished == count, "the tracker finished \(finished) of \(count) statements")
        return Double(cpu) / Double(count)
    }

    /// The events `eventLoopSide` records, for ``writerSide(events:batch:store:instance:)``.
    static func statementEvents(_ count: Int) -> [AuditEvent] {
        var session = Session()
        var events: [AuditEvent] = []
        events.reserveCapacity(count)
        for i in 0..<count {
            let sent = UInt64(i) * 80_000
            session.transaction(sent: sent) {
                sent + 40_000
            } finished: {
                events.append($0())
            }
        }
        return events
    }

    /// The writer's side: the process's CPU time (user and system) per event, in nanoseconds,
    /// to append `events` to `store` in group commits of `batch` (the audit writer's transactions).
    static func writerSide(
        events: [AuditEvent], batch: Int, store: any Store, instance: String
    ) async throws
        -> Double
    {
        let started = processCPU()
        var start = 0
        while start < events.count {
            let end = min(events.count, start + batch)
            try await store.recordAudit(Array(events[start..<end]), instance: instance)
            start = end
        }
        return Double(processCPU() - started) / Double(events.count)
    }

    /// One audited session running `pgbench -S -M prepared`'s transaction again and again.
    private struct Session {
        var tracker = StatementTracker(captureParameters: false)
        let messages = PreparedTransaction()
        /// What the session handler (a class) keeps for its statement events.
        final class Handler {
            let who = SessionAudit.Identity(
                service: "bench", tokenID: "r0a1b2c3d4e5f6g7", role: "bench_reader", database: "bench")
            let sessionID = SessionAudit.newID()
            var statementDetail = StatementDetail()
        }
        let handler = Handler()

        init() {
            tracker.client(type: UInt8(ascii: "P"), body: messages.parse, now: 0)
        }

        /// The client's Bind, Execute and Sync at `sent`, the server's CommandComplete and
        /// ReadyForQuery at `answered()`; `finished` is given the statement's event to build.
        mutating func transaction(
            sent: UInt64, answered: () -> UInt64, finished: (() -> AuditEvent) -> Void
        ) {
            tracker.client(type: UInt8(ascii: "B"), body: messages.bind, now: sent)
            tracker.client(type: UInt8(ascii: "E"), body: messages.execute, now: sent)
            tracker.client(type: UInt8(ascii: "S"), body: messages.sync, now: sent)
            let now = answered()
            let handler = handler
            tracker.server(type: UInt8(ascii: "C"), body: messages.complete, now: now) { statement in
                finished {
                    SessionAudit.statementEvent(
                        statement, who: handler.who, sessionID: handler.sessionID, detail: &handler.statementDetail)
                }
            }
            tracker.server(type: UInt8(ascii: "Z"), body: messages.ready, now: now) { _ in }
        }
    }

    /// The messages of one transaction of `pgbench -S -M prepared` (its statement parsed once).
    private struct PreparedTransaction {
        let parse = ByteBuffer(
            bytes: Array("P0_1\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0".utf8) + [0, 0])
        /// Portal "", statement P0_1, no format codes, one text parameter, no result formats.
        let bind = ByteBuffer(bytes: Array("\0P0_1\0".utf8) + [0, 0, 0, 1, 0, 0, 0, 5] + Array("42817".utf8) + [0, 0])
        /// Portal "", no row limit.
        let execute = ByteBuffer(bytes: [0, 0, 0, 0, 0])
        let sync = ByteBuffer()
        let complete = ByteBuffer(bytes: Array("SELECT 1\0".utf8))
        let ready = ByteBuffer(bytes: [UInt8(ascii: "I")])
    }

    private static func threadCPU() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    private static func processCPU() -> UInt64 {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func nanos(_ t: timeval) -> UInt64 { UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_usec) * 1000 }
        return nanos(usage.ru_utime) + nanos(usage.ru_stime)
    }
}
