public import Foundation
public import RolegateCore
public import RolegateStore

#if canImport(FoundationNetworking)
    public import FoundationNetworking
#endif

/// Delivers queued webhook events: each POST signed (``WebhookSignature``), retried with
/// exponential backoff (2 s, 4 s, … capped at 5 minutes) until the receiver answers 2xx or eight
/// attempts failed. Deliveries are claimed in the store before they are sent, so instances
/// sharing it do not send one twice; the status of each is kept (`rolegate access webhooks`).
public struct WebhookDispatcher: Sendable {
    public let store: any Store
    public let webhooks: [WebhookSpec]
    public static let maxAttempts = 8

    /// Sends one delivery: the HTTP status, or why there was none.
    public typealias Send = @Sendable (URLRequest) async -> (status: Int?, error: String?)

    let send: Send

    public init(store: any Store, webhooks: [WebhookSpec], send: Send? = nil) {
        self.store = store
        self.webhooks = webhooks
        self.send = send ?? Self.post
    }

    /// One pass: every due delivery attempted once. Returns how many were attempted.
    @discardableResult
    public func deliverDue(now: Date = Date()) async -> Int {
        guard let due = try? await store.claimDueWebhookDeliveries(now: now, claimFor: .seconds(60), limit: 50) else {
            return 0
        }
        for var delivery in due {
            guard let webhook = webhooks.first(where: { $0.name == delivery.webhook }),
                let url = URL(string: webhook.url)
            else {
                delivery.state = .failed
                delivery.lastError = "webhook \(delivery.webhook) is no longer in the policy"
                try? await store.recordWebhookAttempt(delivery)
                continue
            }
            var request = URLRequest(url: url, timeoutInterval: 10)
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.setValue(
                WebhookSignature.sign(body: delivery.body, secret: webhook.secret, at: Date()),
                forHTTPHeaderField: WebhookSignature.header)
            request.setValue(String(delivery.id), forHTTPHeaderField: WebhookSignature.deliveryHeader)
            request.setValue(delivery.event, forHTTPHeaderField: WebhookSignature.eventHeader)
            request.httpBody = Data(delivery.body.utf8)
            let (status, error) = await send(request)
            delivery.attempts += 1
            delivery.lastStatus = status
            delivery.lastError = error
            let attempted = Date()
            if let status, (200..<300).contains(status) {
                delivery.state = .delivered
                delivery.deliveredAt = attempted
                delivery.lastError = nil
            } else if delivery.attempts >= Self.maxAttempts {
                delivery.state = .failed
            } else {
                let backoff = min(pow(2, Double(delivery.attempts)), 300)
                delivery.nextAttemptAt = attempted.addingTimeInterval(backoff)
            }
            try? await store.recordWebhookAttempt(delivery)
        }
        return due.count
    }

    static let post: Send = { request in
        do {
            let (_, response) = try await URLSession.shared.data(for: request)
            return ((response as? HTTPURLResponse)?.statusCode, nil)
        } catch {
            return (nil, error.localizedDescription)
        }
    }
}
