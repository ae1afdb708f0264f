import Foundation
import RolegateCore
import RolegateStore
import RolegateTestSupport
import Testing

/// Access requests and webhook deliveries in both stores: decisions are counted once per
/// approver inside the store's transaction, a final state is final, and a delivery is claimed
/// by one sender at a time.
@Suite(.ownThreads) struct AccessStoreTests {
    static func request(_ id: String, now: Date, pendingFor: TimeInterval = 600) -> AccessRequest {
        AccessRequest(
            id: id, access: "fix-billing", role: "writer", requester: "alice@example.com", reason: "INC-1",
            duration: .seconds(60), state: .pending, breakGlass: false, createdAt: now.wholeMilliseconds,
            pendingUntil: now.addingTimeInterval(pendingFor).wholeMilliseconds)
    }

    static func decision(_ who: String, approve: Bool = true, at: Date) -> AccessRequest.Decision {
        .init(approver: who, approve: approve, comment: nil, at: at.wholeMilliseconds)
    }

    @Test(arguments: Backend.allCases)
    func decisionsAreCountedOnceAndAFinalStateIsFinal(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let now = Date()
            try await store.insertAccessRequest(Self.request("ar-1", now: now))
            let one = try await store.decideAccess(
                id: "ar-1", decision: Self.decision("bob", at: now), minApprovals: 2, now: now)
            #expect(one.state == .pending && one.approvals.count == 1)
            await #expect(throws: StoreError.self) {
                _ = try await store.decideAccess(
                    id: "ar-1", decision: Self.decision("BOB", at: now), minApprovals: 2, now: now)
            }
            let two = try await store.decideAccess(
                id: "ar-1", decision: Self.decision("carol", at: now), minApprovals: 2, now: now + 1)
            #expect(two.state == .approved && two.grantedUntil == (now + 61).wholeMilliseconds)
            // Approved is no longer pending: a third answer is refused.
            await #expect(throws: StoreError.self) {
                _ = try await store.decideAccess(
                    id: "ar-1", decision: Self.decision("dave", approve: false, at: now), minApprovals: 2, now: now)
            }
            #expect(try await store.attachAccessToken(id: "ar-1", tokenID: "t1"))
            #expect(try await !store.attachAccessToken(id: "ar-1", tokenID: "t2"))
            let finished = try await store.endAccessRequest(
                id: "ar-1", from: [.approved], to: .finished, reason: "time", now: now + 70)
            #expect(finished?.state == .finished && finished?.tokenID == "t1")
            // Once final, nothing moves it (a second instance's sweep, a late revoke).
            #expect(try await store.endAccessRequest(id: "ar-1", from: nil, to: .revoked, reason: nil, now: now) == nil)
            #expect(try await store.accessRequest(id: "ar-1")?.decisions.map(\.approver) == ["bob", "carol"])
        }
    }

    @Test(arguments: Backend.allCases)
    func aDenialDeniesAndALateAnswerFindsItExpired(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let now = Date()
            try await store.insertAccessRequest(Self.request("ar-2", now: now))
            let denied = try await store.decideAccess(
                id: "ar-2", decision: Self.decision("bob", approve: false, at: now), minApprovals: 1, now: now)
            #expect(denied.state == .denied)
            try await store.insertAccessRequest(Self.request("ar-3", now: now, pendingFor: 1))
            do {
                _ = try await store.decideAccess(
                    id: "ar-3", decision: Self.decision("bob", at: now + 2), minApprovals: 1, now: now + 2)
                Issue.record("a request past its pending time was approved")
            } catch {
                #expect("\(error)".contains("expired"))
            }
            let pending = try await store.accessRequests(states: [.pending], limit: 10)
            #expect(pending.map(\.id) == ["ar-3"])
        }
    }

    @Test(arguments: Backend.allCases)
    func aDeliveryIsClaimedByOneSenderAndItsAttemptsAreKept(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let now = Date()
            try await store.enqueueWebhookDeliveries([
                WebhookDelivery(
                    webhook: "hook", event: "requested", requestID: "ar-1", body: "{}", createdAt: now,
                    nextAttemptAt: now)
            ])
            var claimed = try await store.claimDueWebhookDeliveries(now: now, claimFor: .seconds(60), limit: 10)
            #expect(claimed.count == 1)
            // Claimed: another sender finds nothing due until the claim runs out.
            #expect(try await store.claimDueWebhookDeliveries(now: now + 1, claimFor: .seconds(60), limit: 10).isEmpty)
            claimed[0].attempts = 1
            claimed[0].lastStatus = 503
            claimed[0].nextAttemptAt = now + 2
            try await store.recordWebhookAttempt(claimed[0])
            var again = try await store.claimDueWebhookDeliveries(now: now + 3, claimFor: .seconds(60), limit: 10)
            #expect(again.count == 1 && again[0].attempts == 1 && again[0].lastStatus == 503)
            again[0].attempts = 2
            again[0].state = .delivered
            again[0].deliveredAt = now + 3
            try await store.recordWebhookAttempt(again[0])
            #expect(
                try await store.claimDueWebhookDeliveries(now: now + 100, claimFor: .seconds(60), limit: 10).isEmpty)
            #expect(try await store.webhookDeliveries(limit: 10).first?.state == .delivered)
        }
    }
}
