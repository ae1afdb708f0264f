import Foundation
import RolegateAudit
import RolegateGateway
import RolegateStore

/// What statement audit costs per statement, for bench/run.py: on the event loop (the
/// statement tracker alone, then with the event built and queued while the audit writer
/// runs) and on the writer (group commits of 1,500 events, a 100 ms window at 15,000
/// statements a second), on a SQLite store opened as `serve` opens it.
///
/// Arguments: `[statements [rounds]]`, per round; the three measurements alternate within
/// each round and each figure is the median of its rounds. Prints one JSON object.
/// `store N` instead measures the storage itself (``AuditStoreBench``).
@main
struct AuditBench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.first == "store" {
            guard arguments.count == 2, let events = Int(arguments.last!), events > 0 else {
                FileHandle.standardError.write(Data("usage: AuditBench store EVENTS\n".utf8))
                exit(2)
            }
            let directory = NSTemporaryDirectory() + "rolegate-audit-store-bench-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let result = try await AuditStoreBench.run(events: events, directory: directory)
            let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: json, as: UTF8.self))
            return
        }
        guard let statements = Int(arguments.first ?? "50000"), statements > 0,
            let rounds = Int(arguments.dropFirst().first ?? "5"), rounds > 0, arguments.count <= 2
        else {
            FileHandle.standardError.write(Data("usage: AuditBench [statements-per-round [rounds]]\n".utf8))
            exit(2)
        }
        let directory = NSTemporaryDirectory() + "rolegate-audit-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await StoreLocation.sqlite(path: directory + "/state.db").open(forAudit: true)
        let writer = AuditWriter(store: store, instance: "bench-gateway", capacity: 100_000)
        let running = Task { await writer.run() }
        let events = StatementAuditBench.statementEvents(statements)

        var tracking: [Double] = []
        var queueing: [Double] = []
        var writing: [Double] = []
        for _ in 0..<rounds {
            tracking.append(
                await onThread {
                    StatementAuditBench.eventLoopSide(statements: statements, burst: 500, recordingTo: nil)
                })
            queueing.append(
                await onThread {
                    StatementAuditBench.eventLoopSide(statements: statements, burst: 500, recordingTo: writer)
                })
            // The gateway's writer drains what was queued first: its work is not measured here.
            while writer.queuedCount > 0 {
                if let failure = writer.failure {
                    FileHandle.standardError.write(Data("the audit writer cannot write: \(failure)\n".utf8))
                    exit(1)
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            writing.append(
                try await StatementAuditBench.writerSide(
                    events: events, batch: 1_500, store: store, instance: "bench-writer"))
        }
        _ = await writer.shutdown()
        await running.value
        guard writer.droppedCount == 0, writer.writtenCount == statements * rounds else {
            FileHandle.standardError.write(
                Data(
                    "the audit writer wrote \(writer.writtenCount) of \(statements * rounds) events (\(writer.droppedCount) dropped)\n"
                        .utf8))
            exit(1)
        }
        await store.close()
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        let result: [String: Double] = [
            "rounds": Double(rounds), "statements_per_round": Double(statements),
            "tracking_ns": median(tracking), "event_loop_ns": median(queueing), "writer_ns": median(writing),
            "writer_lowest_round_ns": writing.min()!, "writer_highest_round_ns": writing.max()!,
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }

    /// Runs `body` on a thread of its own: it sleeps between bursts, which must block no
    /// thread the audit writer needs.
    static func onThread(_ body: @escaping @Sendable () -> Double) async -> Double {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }
}
