public import Foundation
public import RolegateCore
public import RolegateStore

/// Access requests under the policy's `access:` rules: who may ask for which grant, who may
/// approve it (never the requester, each approver once, `min_approvals` distinct ones), for how
/// long; the elevated token, picked up once by the requester, living only until the grant ends;
/// revocation, which ends its sessions on every instance; and the sweep that expires unanswered
/// requests and finishes granted ones. Every transition is an audit event (kind `access`, the
/// request id in `detail.access_request`) and a signed webhook delivery.
public struct AccessRequests: Sendable {
    public let store: any Store
    public let policy: Policy
    /// Receives the audit events of each transition (after it is stored).
    public let audit: (@Sendable ([AuditEvent]) async -> Void)?

    public init(store: any Store, policy: Policy, audit: (@Sendable ([AuditEvent]) async -> Void)?) {
        self.store = store
        self.policy = policy
        self.audit = audit
    }

    /// Who is calling, as their token says.
    public struct Caller: Sendable {
        public var login: String
        public var groups: [String]
        public var isService: Bool
        public var isAdmin: Bool

        public init(_ record: TokenRecord, policy: Policy) {
            login = record.service
            var groups = record.groups
            if let grant = record.grant, grant.hasPrefix("group:") { groups.append(String(grant.dropFirst(6))) }
            self.groups = groups
            let service = policy.service(named: record.service)
            isService = service != nil
            isAdmin = service?.admin == true
        }

        func isOne(of principals: [Principal]) -> Bool {
            principals.contains { $0.includes(login: login, groups: groups, isService: isService) }
        }
    }

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// Not allowed to (code: `not_a_requester`, `not_an_approver`, `self_approval`, `not_requester`).
        case forbidden(code: String, message: String)
        case notFound(String)
        /// The request's state does not allow it (already decided, not approved, expired, picked up).
        case conflict(String)
        /// The request itself is wrong (no reason where one is required, a duration past the maximum).
        case invalid(String)
        case store(String)

        public var description: String {
            switch self {
            case .forbidden(_, let message), .notFound(let message), .conflict(let message), .invalid(let message),
                .store(let message):
                message
            }
        }
    }

    // MARK: - Requesting

    public func request(
        access name: String, duration: Duration?, reason: String?, caller: Caller, now: Date = Date()
    ) async throws(Failure) -> AccessRequest {
        guard let grant = policy.access(named: name) else {
            let known = policy.access.map(\.name).joined(separator: ", ")
            throw .notFound("no requestable grant '\(name)' (access: \(known.isEmpty ? "none" : known))")
        }
        guard caller.isOne(of: grant.requesters) else {
            throw .forbidden(
                code: "not_a_requester",
                message:
                    "\(caller.login) may not request \(name) (requesters: \(grant.requesters.map(\.description).joined(separator: ", ")))"
            )
        }
        let duration = duration ?? grant.maxDuration
        guard duration > .zero, duration <= grant.maxDuration else {
            throw .invalid(
                "\(DurationText.format(duration)) is not a duration \(name) grants (more than zero, at most \(DurationText.format(grant.maxDuration)))"
            )
        }
        let reason = reason?.trimmingCharacters(in: .whitespacesAndNewlines)
        if grant.requireReason, reason?.isEmpty ?? true {
            throw .invalid("\(name) requires a reason (--reason \"INC-4411 wrong invoice total\")")
        }
        let created = now.wholeMilliseconds
        var request = AccessRequest(
            id: Self.newID(), access: name, role: grant.role, requester: caller.login,
            reason: reason?.isEmpty == true ? nil : reason, duration: duration, state: .pending,
            breakGlass: grant.isBreakGlass, createdAt: created,
            pendingUntil: created.addingTimeInterval(grant.pendingTimeout.timeInterval).wholeMilliseconds)
        if grant.isBreakGlass {
            // No approval: granted at once, and flagged wherever it shows.
            request.state = .approved
            request.decidedAt = created
            request.grantedUntil = created.addingTimeInterval(duration.timeInterval).wholeMilliseconds
        }
        do {
            try await store.insertAccessRequest(request)
        } catch {
            throw .store(error.description)
        }
        await record("requested", request, by: caller.login, now: created, detail: ["reason": request.reason ?? ""])
        if grant.isBreakGlass {
            await record("approved", request, by: "break-glass", now: created, detail: ["break_glass": "yes"])
        }
        return request
    }

    // MARK: - Deciding

    /// Whether `caller` may decide `request` now: it is pending, they are an approver of its
    /// grant, not its requester, and have not answered it yet (``decide(id:approve:comment:caller:now:)``
    /// says which of these failed).
    public func mayDecide(_ request: AccessRequest, caller: Caller) -> Bool {
        request.state == .pending && caller.login.lowercased() != request.requester.lowercased()
            && !request.decisions.contains { $0.approver.lowercased() == caller.login.lowercased() }
            && caller.isOne(of: policy.access(named: request.access)?.approvers ?? [])
    }

    public func decide(
        id: String, approve: Bool, comment: String?, caller: Caller, now: Date = Date()
    ) async throws(Failure) -> AccessRequest {
        let request = try await existing(id)
        guard let grant = policy.access(named: request.access) else {
            throw .conflict("the grant \(request.access) is no longer in the policy")
        }
        guard caller.isOne(of: grant.approvers) else {
            throw .forbidden(
                code: "not_an_approver",
                message:
                    "\(caller.login) may not decide requests for \(grant.name) (approvers: \(grant.approvers.map(\.description).joined(separator: ", ")))"
            )
        }
        guard caller.login.lowercased() != request.requester.lowercased() else {
            throw .forbidden(code: "self_approval", message: "a requester can never decide their own request")
        }
        if request.decisions.contains(where: { $0.approver.lowercased() == caller.login.lowercased() }) {
            throw .forbidden(code: "already_decided", message: "\(caller.login) already answered request \(id)")
        }
        let decided: AccessRequest
        do {
            decided = try await store.decideAccess(
                id: id,
                decision: AccessRequest.Decision(
                    approver: caller.login, approve: approve, comment: comment, at: now.wholeMilliseconds),
                minApprovals: grant.minApprovals, now: now.wholeMilliseconds)
        } catch .accessConflict(let message) {
            throw .conflict(message)
        } catch {
            throw .store(error.description)
        }
        let detail = [
            "comment": comment ?? "", "approvals": "\(decided.approvals.count)/\(grant.minApprovals)",
        ]
        switch decided.state {
        case .denied: await record("denied", decided, by: caller.login, now: now, detail: detail)
        case .approved: await record("approved", decided, by: caller.login, now: now, detail: detail)
        default: await record("approval", decided, by: caller.login, now: now, detail: detail, notify: false)
        }
        return decided
    }

    // MARK: - Using

    /// The elevated token for an approved request, to its requester, once: bound to the grant's
    /// role, living until the grant ends, carrying the request id into every statement's audit event.
    public func token(
        id: String, caller: Caller, subject: String?, now: Date = Date()
    ) async throws(Failure) -> (AccessRequest, TokenService.Issued) {
        var request = try await existing(id)
        guard caller.login.lowercased() == request.requester.lowercased() else {
            throw .forbidden(code: "not_requester", message: "only \(request.requester) may use request \(id)")
        }
        guard request.state == .approved, let until = request.grantedUntil, until > now else {
            throw .conflict(
                request.state == .pending
                    ? "request \(id) is pending: \(request.approvals.count) approval(s) so far"
                    : "request \(id) is \(request.state.rawValue): it grants nothing")
        }
        guard request.tokenID == nil else {
            throw .conflict(
                "request \(id)'s token was already picked up (token \(request.tokenID!)); revoke and ask again")
        }
        guard let grant = policy.access(named: request.access) else {
            throw .conflict("the grant \(request.access) is no longer in the policy")
        }
        let (tokenID, secret) = TokenFormat.generate()
        let (salt, iterations): ([UInt8], Int)
        do {
            (salt, iterations) = try await store.newTokenSCRAM(
                login: request.requester,
                fallback: policy.service(named: request.requester)?.scramIterations
                    ?? ServiceSpec.defaultSCRAMIterations,
                now: now)
        } catch {
            throw .store(error.description)
        }
        var elevated = TokenRecord(
            id: tokenID, service: request.requester, role: grant.role, issuedAt: now.wholeMilliseconds,
            expiresAt: until, issuer: "access:\(id)", note: "access request \(id) (\(grant.name))", subject: subject,
            grant: grant.grant,
            secret: TokenSecret(token: secret, salt: salt, iterations: iterations))
        elevated.accessRequest = id
        do throws(StoreError) {
            // The token first, then the request's claim on it: a failure in between leaves an
            // unclaimed token (revoked here), never a request pointing at no token.
            try await store.insertToken(elevated, exclusive: false, now: now.wholeMilliseconds)
            guard try await store.attachAccessToken(id: id, tokenID: tokenID) else {
                _ = try await store.revoke(
                    id: tokenID, reason: "request \(id) was picked up twice at once", now: now.wholeMilliseconds)
                throw StoreError.accessConflict("request \(id)'s token was already picked up")
            }
        } catch .accessConflict(let message) {
            throw .conflict(message)
        } catch {
            throw .store(error.description)
        }
        request.tokenID = tokenID
        await record("used", request, by: caller.login, now: now, detail: ["token_id": tokenID])
        return (request, TokenService.Issued(token: secret, record: elevated, superseded: []))
    }

    /// Ends a request early: its token is revoked (its sessions end on every instance). The
    /// requester, an approver of the grant, or an admin token may.
    public func revoke(
        id: String, reason: String?, caller: Caller, now: Date = Date()
    ) async throws(Failure)
        -> AccessRequest
    {
        let request = try await existing(id)
        let approvers = policy.access(named: request.access)?.approvers ?? []
        guard
            caller.isAdmin || caller.login.lowercased() == request.requester.lowercased()
                || caller.isOne(of: approvers)
        else {
            throw .forbidden(
                code: "not_allowed", message: "only the requester, an approver or an admin may revoke request \(id)")
        }
        let ended: AccessRequest?
        do {
            ended = try await store.endAccessRequest(
                id: id, from: nil, to: .revoked, reason: reason ?? "revoked by \(caller.login)",
                now: now.wholeMilliseconds)
            if let tokenID = (ended ?? request).tokenID {
                _ = try await store.revoke(
                    id: tokenID, reason: "access request \(id) revoked", now: now.wholeMilliseconds)
            }
        } catch {
            throw .store(error.description)
        }
        guard let ended else { throw .conflict("request \(id) is already \(request.state.rawValue)") }
        await record("revoked", ended, by: caller.login, now: now, detail: ["reason": reason ?? ""])
        return ended
    }

    /// Expires requests nobody answered in time, and finishes grants whose time is up (their
    /// tokens expire with them, which ends their sessions). Safe to run on every instance: a
    /// transition happens once.
    @discardableResult
    public func sweep(now: Date = Date()) async -> [AccessRequest] {
        guard let open = try? await store.accessRequests(states: [.pending, .approved], limit: 1000) else { return [] }
        var ended: [AccessRequest] = []
        for request in open {
            if request.state == .pending, request.pendingUntil <= now,
                let expired = try? await store.endAccessRequest(
                    id: request.id, from: [.pending], to: .expired, reason: "nobody answered in time",
                    now: now.wholeMilliseconds)
            {
                await record("expired", expired, by: "rolegate", now: now, detail: [:])
                ended.append(expired)
            } else if request.state == .approved, let until = request.grantedUntil, until <= now,
                let finished = try? await store.endAccessRequest(
                    id: request.id, from: [.approved], to: .finished, reason: "the granted time is up",
                    now: now.wholeMilliseconds)
            {
                await record("ended", finished, by: "rolegate", now: now, detail: [:])
                ended.append(finished)
            }
        }
        return ended
    }

    /// The requests a caller may see: an admin all of them; anyone else the ones they asked for
    /// and the ones they may decide.
    public func visible(to caller: Caller, states: [AccessRequest.State]?) async throws(Failure) -> [AccessRequest] {
        let all: [AccessRequest]
        do {
            all = try await store.accessRequests(states: states, limit: 500)
        } catch {
            throw .store(error.description)
        }
        if caller.isAdmin { return all }
        return all.filter { request in
            request.requester.lowercased() == caller.login.lowercased()
                || caller.isOne(of: policy.access(named: request.access)?.approvers ?? [])
        }
    }

    public func existing(_ id: String) async throws(Failure) -> AccessRequest {
        let found: AccessRequest?
        do {
            found = try await store.accessRequest(id: id)
        } catch {
            throw .store(error.description)
        }
        guard let found else { throw .notFound("no access request \(id)") }
        return found
    }

    // MARK: - Events

    /// The audit event of a transition, and its webhook deliveries (`notify`: the event is one
    /// webhooks receive).
    func record(
        _ action: String, _ request: AccessRequest, by actor: String, now: Date, detail extra: [String: String],
        notify: Bool = true
    ) async {
        var detail = extra
        detail["access_request"] = request.id
        detail["access"] = request.access
        detail["by"] = actor
        detail["state"] = request.state.rawValue
        if request.breakGlass { detail["break_glass"] = "yes" }
        await audit?([
            AuditEvent(
                at: now, kind: .access, action: action, service: request.requester, tokenID: request.tokenID,
                role: request.role, detail: detail)
        ])
        guard notify else { return }
        // A revocation is an end (early): receivers see `ended`, with the state `revoked`.
        let event = action == "revoked" ? "ended" : action
        let deliveries = policy.webhooks.filter { $0.events.contains(event) }.map { webhook in
            WebhookDelivery(
                webhook: webhook.name, event: event, requestID: request.id,
                body: WebhookPayload.body(
                    event: event, request: request, by: actor, detail: extra, at: now, format: webhook.format),
                createdAt: now.wholeMilliseconds, nextAttemptAt: now.wholeMilliseconds)
        }
        try? await store.enqueueWebhookDeliveries(deliveries)
    }

    static func newID() -> String {
        "ar-" + RandomID.make(length: 12)
    }
}

/// What a webhook receives: Rolegate's JSON event, or a Slack-compatible message.
public enum WebhookPayload {
    public static func body(
        event: String, request: AccessRequest, by: String, detail: [String: String], at: Date,
        format: WebhookSpec.Format
    ) -> String {
        let object: [String: Any]
        switch format {
        case .json:
            var described: [String: Any] = [
                "id": request.id, "access": request.access, "role": request.role, "requester": request.requester,
                "state": request.state.rawValue, "duration_seconds": Int(request.duration.timeInterval),
                "break_glass": request.breakGlass, "created_at": request.createdAt.rfc3339,
                "approvals": request.approvals.map { ["approver": $0.approver, "comment": $0.comment ?? ""] },
            ]
            described["reason"] = request.reason ?? NSNull()
            described["granted_until"] = request.grantedUntil?.rfc3339 ?? NSNull()
            object = [
                "event": event, "at": at.rfc3339, "by": by, "request": described,
                "comment": detail["comment"] ?? NSNull(),
            ]
        case .slack:
            let flag = request.breakGlass ? ":rotating_light: BREAK-GLASS " : ""
            let reason = request.reason.map { " — \"\($0)\"" } ?? ""
            object = [
                "text":
                    "\(flag)Access request \(request.id) (\(request.access), role \(request.role)) by \(request.requester) \(event) by \(by)\(reason)"
            ]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
