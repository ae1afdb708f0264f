import Foundation
import RolegateCore

/// Access requests, their decisions, and webhook deliveries, in both stores.
extension SQLStore {
    static let accessColumns = """
        id, access, role, requester, reason, duration_ms, state, break_glass, created_at, pending_until, decided_at, \
        granted_until, token_id, ended_at, end_reason
        """

    func insertAccessRequest(_ request: AccessRequest) async throws(StoreError) {
        _ = try await run(transaction: true) { db in
            try await db.execute(
                """
                INSERT INTO rolegate_access_requests (\(Self.accessColumns))
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                """,
                [
                    .text(request.id), .text(request.access), .text(request.role), .text(request.requester),
                    SQLValue(request.reason), .int(request.duration.milliseconds), .text(request.state.rawValue),
                    .int(request.breakGlass ? 1 : 0), SQLValue(request.createdAt), SQLValue(request.pendingUntil),
                    SQLValue(request.decidedAt), SQLValue(request.grantedUntil), SQLValue(request.tokenID),
                    SQLValue(request.endedAt), SQLValue(request.endReason),
                ])
        }
    }

    func accessRequest(id: String) async throws(StoreError) -> AccessRequest? {
        try await read { db in try await Self.fetchAccess(id: id, db) }
    }

    func accessRequests(states: [AccessRequest.State]?, limit: Int) async throws(StoreError) -> [AccessRequest] {
        try await read { db in
            var arguments: [SQLValue] = [.int(Int64(limit))]
            var filter = ""
            if let states, !states.isEmpty {
                filter = "WHERE state IN (" + states.indices.map { "$\($0 + 2)" }.joined(separator: ", ") + ")"
                arguments += states.map { .text($0.rawValue) }
            }
            let rows = try await db.query(
                "SELECT \(Self.accessColumns) FROM rolegate_access_requests \(filter) ORDER BY created_at DESC, id LIMIT $1",
                arguments)
            var result: [AccessRequest] = []
            for row in rows {
                guard var request = Self.accessRecord(row) else { continue }
                request.decisions = try await Self.decisions(request.id, db)
                result.append(request)
            }
            return result
        }
    }

    func decideAccess(
        id: String, decision: AccessRequest.Decision, minApprovals: Int, now: Date
    ) async throws(StoreError) -> AccessRequest {
        try await run(transaction: true) { db in
            guard var request = try await Self.fetchAccess(id: id, db) else {
                throw StoreError.accessConflict("no access request \(id)")
            }
            guard request.state == .pending else {
                throw StoreError.accessConflict("access request \(id) is \(request.state.rawValue), not pending")
            }
            guard request.pendingUntil > now else {
                throw StoreError.accessConflict(
                    "access request \(id) went unanswered past \(request.pendingUntil.rfc3339): it has expired")
            }
            if request.decisions.contains(where: { $0.approver.lowercased() == decision.approver.lowercased() }) {
                throw StoreError.accessConflict("\(decision.approver) already answered access request \(id)")
            }
            try await db.execute(
                "INSERT INTO rolegate_access_decisions (request_id, approver, approve, comment, at) VALUES ($1, $2, $3, $4, $5)",
                [
                    .text(id), .text(decision.approver), .int(decision.approve ? 1 : 0), SQLValue(decision.comment),
                    SQLValue(decision.at),
                ])
            request.decisions.append(decision)
            if !decision.approve {
                request.state = .denied
                request.decidedAt = now
                request.endedAt = now
            } else if request.approvals.count >= minApprovals {
                request.state = .approved
                request.decidedAt = now
                request.grantedUntil = now.addingTimeInterval(request.duration.timeInterval).wholeMilliseconds
            }
            try await db.execute(
                "UPDATE rolegate_access_requests SET state = $1, decided_at = $2, granted_until = $3, ended_at = $4 WHERE id = $5",
                [
                    .text(request.state.rawValue), SQLValue(request.decidedAt), SQLValue(request.grantedUntil),
                    SQLValue(request.endedAt), .text(id),
                ])
            return request
        }
    }

    func attachAccessToken(id: String, tokenID: String) async throws(StoreError) -> Bool {
        try await run(transaction: true) { db in
            let rows = try await db.query(
                "SELECT token_id FROM rolegate_access_requests WHERE id = $1", [.text(id)])
            guard let row = rows.first, row[0].text == nil else { return false }
            try await db.execute(
                "UPDATE rolegate_access_requests SET token_id = $1 WHERE id = $2", [.text(tokenID), .text(id)])
            return true
        }
    }

    func endAccessRequest(
        id: String, from: [AccessRequest.State]?, to state: AccessRequest.State, reason: String?, now: Date
    ) async throws(StoreError) -> AccessRequest? {
        try await run(transaction: true) { db in
            guard var request = try await Self.fetchAccess(id: id, db), !request.state.isFinal else { return nil }
            if let from, !from.contains(request.state) { return nil }
            request.state = state
            request.endedAt = now
            request.endReason = reason
            try await db.execute(
                "UPDATE rolegate_access_requests SET state = $1, ended_at = $2, end_reason = $3 WHERE id = $4",
                [.text(state.rawValue), SQLValue(now), SQLValue(reason), .text(id)])
            return request
        }
    }

    private static func fetchAccess(id: String, _ db: any SQLExecutor) async throws -> AccessRequest? {
        let rows = try await db.query(
            "SELECT \(accessColumns) FROM rolegate_access_requests WHERE id = $1", [.text(id)])
        guard let row = rows.first, var request = accessRecord(row) else { return nil }
        request.decisions = try await decisions(id, db)
        return request
    }

    private static func decisions(_ id: String, _ db: any SQLExecutor) async throws -> [AccessRequest.Decision] {
        try await db.query(
            "SELECT approver, approve, comment, at FROM rolegate_access_decisions WHERE request_id = $1 ORDER BY at, approver",
            [.text(id)]
        ).compactMap { row in
            guard let approver = row[0].text, let approve = row[1].int, let at = row[3].date else { return nil }
            return AccessRequest.Decision(approver: approver, approve: approve == 1, comment: row[2].text, at: at)
        }
    }

    private static func accessRecord(_ row: [SQLValue]) -> AccessRequest? {
        guard row.count == 15, let id = row[0].text, let access = row[1].text, let role = row[2].text,
            let requester = row[3].text, let duration = row[5].int,
            let state = row[6].text.flatMap(AccessRequest.State.init), let breakGlass = row[7].int,
            let created = row[8].date, let pendingUntil = row[9].date
        else { return nil }
        return AccessRequest(
            id: id, access: access, role: role, requester: requester, reason: row[4].text,
            duration: .milliseconds(duration), state: state, breakGlass: breakGlass == 1, createdAt: created,
            pendingUntil: pendingUntil, decidedAt: row[10].date, grantedUntil: row[11].date, tokenID: row[12].text,
            endedAt: row[13].date, endReason: row[14].text)
    }

    // MARK: - Webhook deliveries

    static let deliveryColumns = """
        id, webhook, event, request_id, body, created_at, attempts, next_attempt_at, state, last_status, last_error, \
        delivered_at
        """

    func enqueueWebhookDeliveries(_ deliveries: [WebhookDelivery]) async throws(StoreError) {
        guard !deliveries.isEmpty else { return }
        try await run(transaction: true) { db in
            for delivery in deliveries {
                try await db.execute(
                    """
                    INSERT INTO rolegate_webhook_deliveries
                        (webhook, event, request_id, body, created_at, attempts, next_attempt_at, state)
                    VALUES ($1, $2, $3, $4, $5, 0, $6, 'pending')
                    """,
                    [
                        .text(delivery.webhook), .text(delivery.event), SQLValue(delivery.requestID),
                        .text(delivery.body), SQLValue(delivery.createdAt), SQLValue(delivery.nextAttemptAt),
                    ])
            }
        }
    }

    func claimDueWebhookDeliveries(
        now: Date, claimFor: Duration, limit: Int
    ) async throws(StoreError)
        -> [WebhookDelivery]
    {
        // Asked every second by every instance: a read first, so an empty queue takes no write lock.
        let anyDue = try await read { db in
            try await db.query(
                "SELECT id FROM rolegate_webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 LIMIT 1",
                [SQLValue(now)]
            ).isEmpty == false
        }
        guard anyDue else { return [] }
        return try await run(transaction: true) { db in
            let due = try await db.query(
                """
                SELECT \(Self.deliveryColumns) FROM rolegate_webhook_deliveries
                 WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2
                """, [SQLValue(now), .int(Int64(limit))]
            ).compactMap(Self.deliveryRecord)
            let claimedUntil = now.addingTimeInterval(claimFor.timeInterval)
            for delivery in due {
                try await db.execute(
                    "UPDATE rolegate_webhook_deliveries SET next_attempt_at = $1 WHERE id = $2",
                    [SQLValue(claimedUntil), .int(delivery.id)])
            }
            return due
        }
    }

    func recordWebhookAttempt(_ delivery: WebhookDelivery) async throws(StoreError) {
        _ = try await run(transaction: true) { db in
            try await db.execute(
                """
                UPDATE rolegate_webhook_deliveries
                   SET attempts = $1, next_attempt_at = $2, state = $3, last_status = $4, last_error = $5, delivered_at = $6
                 WHERE id = $7
                """,
                [
                    .int(Int64(delivery.attempts)), SQLValue(delivery.nextAttemptAt), .text(delivery.state.rawValue),
                    SQLValue(delivery.lastStatus.map(Int64.init)), SQLValue(delivery.lastError),
                    SQLValue(delivery.deliveredAt), .int(delivery.id),
                ])
        }
    }

    func webhookDeliveries(limit: Int) async throws(StoreError) -> [WebhookDelivery] {
        try await read { db in
            try await db.query(
                "SELECT \(Self.deliveryColumns) FROM rolegate_webhook_deliveries ORDER BY id DESC LIMIT $1",
                [.int(Int64(limit))]
            ).compactMap(Self.deliveryRecord)
        }
    }

    private static func deliveryRecord(_ row: [SQLValue]) -> WebhookDelivery? {
        guard row.count == 12, let id = row[0].int, let webhook = row[1].text, let event = row[2].text,
            let body = row[4].text, let created = row[5].date, let attempts = row[6].int, let next = row[7].date,
            let state = row[8].text.flatMap(WebhookDelivery.State.init)
        else { return nil }
        return WebhookDelivery(
            id: id, webhook: webhook, event: event, requestID: row[3].text, body: body, createdAt: created,
            attempts: Int(attempts), nextAttemptAt: next, state: state, lastStatus: row[9].int.map(Int.init),
            lastError: row[10].text, deliveredAt: row[11].date)
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
