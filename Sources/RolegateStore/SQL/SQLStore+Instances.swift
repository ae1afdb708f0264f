import Foundation
import RolegateCore

extension SQLStore {
    func registerInstance(
        id: String, wireAddress: String, httpAddress: String?, now: Date, staleAfter: Duration
    ) async throws(StoreError) -> GatewayInstance {
        try await run(transaction: true) { db in
            let staleBefore = now.addingTimeInterval(-staleAfter.timeInterval)
            let rows = try await db.query("SELECT instance, cancel_tag, seen_at FROM rolegate_instances", [])
            var tag = rows.first { $0[0].text == id }?[1].int.map(Int.init)
            if tag == nil {
                // The smallest tag no live instance holds; a stale holder gives its tag up.
                var held: [Int: (String, Date)] = [:]
                for row in rows {
                    if let t = row[1].int, let who = row[0].text, let seen = row[2].date { held[Int(t)] = (who, seen) }
                }
                guard
                    let free = (1...32767).first(where: { t in held[t].map { $0.1 < staleBefore } ?? true })
                else { throw StoreError.failed("no free cancel tag: 32,767 live gateway instances") }
                if let (stale, _) = held[free] {
                    try await db.execute("DELETE FROM rolegate_instances WHERE instance = $1", [.text(stale)])
                }
                tag = free
                try await db.execute(
                    """
                    INSERT INTO rolegate_instances (instance, cancel_tag, wire_address, http_address, started_at, seen_at)
                    VALUES ($1, $2, $3, $4, $5, $5)
                    """,
                    [
                        .text(id), .int(Int64(free)), .text(wireAddress), httpAddress.map { .text($0) } ?? .null,
                        SQLValue(now),
                    ])
            } else {
                try await db.execute(
                    """
                    UPDATE rolegate_instances SET wire_address = $2, http_address = $3, started_at = $4, seen_at = $4
                     WHERE instance = $1
                    """, [.text(id), .text(wireAddress), httpAddress.map { .text($0) } ?? .null, SQLValue(now)])
            }
            return GatewayInstance(
                id: id, cancelTag: tag!, wireAddress: wireAddress, httpAddress: httpAddress, startedAt: now, seenAt: now
            )
        }
    }

    func instanceHeartbeat(id: String, now: Date) async throws(StoreError) {
        try await run(transaction: false) { db in
            _ = try await db.execute(
                "UPDATE rolegate_instances SET seen_at = $2 WHERE instance = $1", [.text(id), SQLValue(now)])
        }
    }

    func instances() async throws(StoreError) -> [GatewayInstance] {
        try await read { db in
            let rows = try await db.query(
                """
                SELECT instance, cancel_tag, wire_address, http_address, started_at, seen_at
                  FROM rolegate_instances ORDER BY cancel_tag
                """, [])
            return rows.compactMap { row -> GatewayInstance? in
                guard let id = row[0].text, let tag = row[1].int, let wire = row[2].text, let started = row[4].date,
                    let seen = row[5].date
                else { return nil }
                return GatewayInstance(
                    id: id, cancelTag: Int(tag), wireAddress: wire, httpAddress: row[3].text, startedAt: started,
                    seenAt: seen)
            }
        }
    }

    func removeInstance(id: String) async throws(StoreError) {
        try await run(transaction: false) { db in
            _ = try await db.execute("DELETE FROM rolegate_instances WHERE instance = $1", [.text(id)])
        }
    }
}
