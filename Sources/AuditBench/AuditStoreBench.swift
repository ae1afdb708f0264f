import Foundation
import RolegateCore
import RolegateStore

/// What the audit log's storage gives back, for `AuditBench store N` (bench/run.py's `auditstore`
/// group): a SQLite store filled with `N` statement events the way a busy gateway writes them
/// (16 sessions at a time running `pgbench -S -M prepared`'s statement, new sessions and tokens
/// as it goes, group commits of 4,000 events), then its size per event, the verification walk's
/// events per second, and how long `rolegate audit --token X` takes to answer.
enum AuditStoreBench {
    static func run(events total: Int, directory: String) async throws -> [String: Double] {
        let path = directory + "/store.db"
        let store = try await StoreLocation.sqlite(path: path).open(forAudit: true)
        let commit = 4_000
        // A token serves 4 sessions; every 64 commits the 16 sessions give way to 16 new ones.
        func session(_ index: Int, generation: Int) -> (id: String, token: String, client: String) {
            let number = generation * 16 + index
            return (
                "s\(number)-\(String(number * 2_654_435_761 % 1_000_000_007, radix: 36))",
                "r\(String(number / 4, radix: 36))tok",
                "10.0.\(number % 250).\(number % 200):\(40_000 + number % 20_000)"
            )
        }
        var written = 0
        var commits = 0
        var writeCPU: UInt64 = 0
        var at = Date(timeIntervalSince1970: 1_800_000_000)
        while written < total {
            let generation = commits / 64
            var batch: [AuditEvent] = []
            batch.reserveCapacity(commit)
            for i in 0..<min(commit, total - written) {
                let s = session(i % 16, generation: generation)
                at += 0.000_025
                batch.append(
                    AuditEvent(
                        at: at, kind: .statement, action: "ok", service: "bench", tokenID: s.token, role: "bench_ro",
                        database: "bench", sessionID: s.id, client: s.client,
                        sql: "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", rows: 1,
                        durationMicros: Int64(30 + i % 90), detail: ["command": "SELECT", "prepared": "P0_1"]))
            }
            let started = processCPU()
            try await store.recordAudit(batch, instance: "bench-gateway")
            writeCPU += processCPU() - started
            written += batch.count
            commits += 1
        }
        await store.close()
        let bytes = [path, path + "-wal"].reduce(0) { sum, file in
            sum + ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0)
        }

        let reader = try await StoreLocation.sqlite(path: path).open()
        let verifyStarted = ContinuousClock.now
        let reports = try await reader.verifyAuditChains()
        let verifySeconds = seconds(ContinuousClock.now - verifyStarted)
        guard reports.count == 1, reports[0].problem == nil, reports[0].events == total else {
            throw Failure(description: "the chain did not verify: \(reports)")
        }
        // A token from the middle of the log: the newest 100 of its events, as `rolegate audit --token` asks.
        let token = session(0, generation: commits / 2 / 64).token
        var query = AuditQuery()
        query.tokenID = token
        query.limit = 100
        let queryStarted = ContinuousClock.now
        let found = try await reader.auditEvents(query)
        let tokenSeconds = seconds(ContinuousClock.now - queryStarted)
        guard found.count == 100, found.allSatisfy({ $0.tokenID == token }) else {
            throw Failure(description: "--token \(token) found \(found.count) events")
        }
        // And one that is not there at all.
        query.tokenID = "no-such-token"
        let absentStarted = ContinuousClock.now
        let none = try await reader.auditEvents(query)
        let absentSeconds = seconds(ContinuousClock.now - absentStarted)
        guard none.isEmpty else { throw Failure(description: "an unknown token found events") }
        await reader.close()
        return [
            "events": Double(total), "bytes_per_event": Double(bytes) / Double(total),
            "writer_ns_per_event": Double(writeCPU) / Double(total),
            "verify_events_per_second": Double(total) / verifySeconds, "verify_seconds": verifySeconds,
            "token_query_seconds": tokenSeconds, "absent_token_query_seconds": absentSeconds,
        ]
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func processCPU() -> UInt64 {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func nanos(_ t: timeval) -> UInt64 { UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_usec) * 1000 }
        return nanos(usage.ru_utime) + nanos(usage.ru_stime)
    }
}
