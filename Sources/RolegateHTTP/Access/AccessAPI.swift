import Foundation
import HTTPTypes
import RolegateCore
import RolegateHTTPContract
import RolegateTokens

/// `/v1/access/requests…`: access requests over HTTP, with the caller's own token (a person's,
/// a service's, or an admin token standing for a person). ``AccessRequests`` decides who may do
/// what; these handlers only translate.
extension ContractHandlers {
    func listAccessRequests(
        _ input: Operations.ListAccessRequests.Input
    ) async throws -> Operations.ListAccessRequests.Output {
        let states = input.query.state.flatMap { AccessRequest.State(rawValue: $0.rawValue) }.map { [$0] }
        let requests = try await access { try await $0.visible(to: $1, states: states) }
        return .ok(.init(body: .json(.init(requests: requests.map(Self.accessRequest)))))
    }

    func requestAccess(_ input: Operations.RequestAccess.Input) async throws -> Operations.RequestAccess.Output {
        guard case .json(let body) = input.body else { throw Problem.badRequest("expected a JSON body") }
        let duration = try ContractFormats.duration(body.duration, "duration")
        let reason = try ContractFormats.text(body.reason, "reason")
        let request = try await access {
            try await $0.request(access: body.access, duration: duration, reason: reason, caller: $1)
        }
        return .created(.init(body: .json(Self.accessRequest(request))))
    }

    func showAccessRequest(
        _ input: Operations.ShowAccessRequest.Input
    ) async throws -> Operations.ShowAccessRequest.Output {
        let request = try await access { service, caller in
            let request = try await service.existing(input.path.id)
            let visible = try await service.visible(to: caller, states: nil).contains { $0.id == request.id }
            guard visible else { throw AccessRequests.Failure.notFound("no access request \(input.path.id)") }
            return request
        }
        return .ok(.init(body: .json(Self.accessRequest(request))))
    }

    func approveAccess(_ input: Operations.ApproveAccess.Input) async throws -> Operations.ApproveAccess.Output {
        var body: Components.Schemas.AccessComment?
        if case .json(let given)? = input.body { body = given }
        return .ok(.init(body: .json(try await decide(input.path.id, body, approve: true))))
    }

    func denyAccess(_ input: Operations.DenyAccess.Input) async throws -> Operations.DenyAccess.Output {
        var body: Components.Schemas.AccessComment?
        if case .json(let given)? = input.body { body = given }
        return .ok(.init(body: .json(try await decide(input.path.id, body, approve: false))))
    }

    /// An approval or a denial, with its optional comment.
    private func decide(
        _ id: String, _ body: Components.Schemas.AccessComment?, approve: Bool
    ) async throws -> Components.Schemas.AccessRequest {
        let comment = try ContractFormats.text(body?.comment, "comment")
        return Self.accessRequest(
            try await access { try await $0.decide(id: id, approve: approve, comment: comment, caller: $1) })
    }

    func revokeAccess(_ input: Operations.RevokeAccess.Input) async throws -> Operations.RevokeAccess.Output {
        var reason: String?
        if case .json(let body)? = input.body { reason = try ContractFormats.text(body.reason, "reason") }
        let request = try await access { try await $0.revoke(id: input.path.id, reason: reason, caller: $1) }
        return .ok(.init(body: .json(Self.accessRequest(request))))
    }

    func accessToken(_ input: Operations.AccessToken.Input) async throws -> Operations.AccessToken.Output {
        let subject = Caller.current?.admin?.subject
        let (request, issued) = try await access { try await $0.token(id: input.path.id, caller: $1, subject: subject) }
        return .created(
            .init(
                body: .json(
                    .init(
                        accessToken: issued.token, tokenId: issued.record.id, user: issued.record.service,
                        role: issued.record.role, database: api.policy.role(named: issued.record.role)?.database,
                        expiresAt: issued.record.expiresAt, request: Self.accessRequest(request)))))
    }

    /// Runs `body` with the access service and the caller; its refusals become problems.
    private func access<T: Sendable>(
        _ body: (AccessRequests, AccessRequests.Caller) async throws -> T
    ) async throws -> T {
        guard let record = Caller.current?.admin else { throw Problem.missingCaller }
        do {
            return try await body(api.accessRequests, AccessRequests.Caller(record, policy: api.policy))
        } catch let failure as AccessRequests.Failure {
            switch failure {
            case .forbidden(let code, let message): throw Problem(status: .forbidden, code: code, message: message)
            case .notFound(let message): throw Problem(status: .notFound, code: "access_unknown", message: message)
            case .conflict(let message): throw Problem(status: .conflict, code: "access_conflict", message: message)
            case .invalid(let message): throw Problem.badRequest(message)
            case .store(let message):
                throw Problem(status: .serviceUnavailable, code: "store_unavailable", message: message)
            }
        }
    }

    static func accessRequest(_ request: AccessRequest) -> Components.Schemas.AccessRequest {
        Components.Schemas.AccessRequest(
            id: request.id, access: request.access, role: request.role, requester: request.requester,
            reason: request.reason, durationSeconds: Int(request.duration.timeInterval),
            state: .init(rawValue: request.state.rawValue) ?? .expired, breakGlass: request.breakGlass,
            createdAt: request.createdAt, pendingUntil: request.pendingUntil, decidedAt: request.decidedAt,
            grantedUntil: request.grantedUntil, tokenId: request.tokenID, endedAt: request.endedAt,
            endReason: request.endReason,
            decisions: request.decisions.map {
                .init(approver: $0.approver, approve: $0.approve, comment: $0.comment, at: $0.at)
            })
    }
}

extension Problem {
    /// A route that needs a caller ran without one (a wiring mistake, not the client's).
    static let missingCaller = Problem(status: .unauthorized, code: "token_invalid", message: "invalid token")
}
