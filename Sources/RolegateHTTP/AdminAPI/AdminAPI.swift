import Foundation
import HTTPTypes
import Hummingbird
import OpenAPIHummingbird
import OpenAPIRuntime
import RolegateCore
import RolegateGateway
import RolegateHTTPContract
import RolegateProvision
import RolegateStore
import RolegateTokens

/// The routes generated from the contract (`openapi.yaml`, see `scripts/generate-openapi.sh`):
/// the admin API (`/admin/v1/…`) and the operations routes (`/healthz`, `/readyz`, `/metrics`,
/// `/openapi.yaml`). The generated code decodes and checks every parameter and body against the
/// document (types, enums, required and unknown fields); ``ContractFormats`` checks what the
/// generator leaves to us (patterns and lengths), ``ContractAuthentication`` who may call, and
/// ``ContractProblems`` turns every failure into a problem.
extension HTTPAPI {
    func addContractRoutes(to router: Router<APIContext>) throws {
        try ContractHandlers(api: self).registerHandlers(
            on: router,
            configuration: Configuration(
                dateTranscoder: .iso8601WithFractionalSeconds,
                jsonEncodingOptions: [.sortedKeys, .withoutEscapingSlashes]),
            middlewares: [ContractProblems(), ContractAuthentication(api: self)])
    }
}

/// Who is calling a contract route: set by ``ContractAuthentication`` for the handler.
struct Caller: Sendable {
    /// The admin token's record (nil for a peer's signed call and on public routes).
    var admin: TokenRecord?
    /// Who acts: `service/token id` of the admin token, or `actor via instance` of a peer's call.
    var actor: String

    @TaskLocal static var current: Caller?
}

/// The request's id and client address while a contract route runs (set by ``RequestMiddleware``).
struct RequestScope: Sendable {
    var requestID: String
    var clientAddress: String?

    @TaskLocal static var current: RequestScope?
}

/// Who may call which operation, as the document says: the operations without security
/// (`security: []`) are public; the cross-instance session routes also take a peer's signed
/// call on `scope=local`; everything else needs an admin token. (A test holds these sets to the
/// document.)
struct ContractAuthentication: ServerMiddleware {
    let api: HTTPAPI

    static let publicOperations: Set<String> = [
        Operations.Health.id, Operations.Readiness.id, Operations.Metrics.id, Operations.OpenAPIDocument.id,
        Operations.ExchangeToken.id, Operations.IdentityProviders.id,
    ]
    static let peerOperations: Set<String> = [Operations.ListSessions.id, Operations.EndSession.id]
    /// Taken with any token, data or admin: who may do what is the policy's `access:` rules.
    static let anyTokenOperations: Set<String> = [
        Operations.ListAccessRequests.id, Operations.RequestAccess.id, Operations.ShowAccessRequest.id,
        Operations.ApproveAccess.id, Operations.DenyAccess.id, Operations.RevokeAccess.id, Operations.AccessToken.id,
    ]

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        if Self.publicOperations.contains(operationID) { return try await next(request, body, metadata) }
        let scope = RequestScope.current ?? RequestScope(requestID: "", clientAddress: nil)
        let caller: Caller
        if Self.peerOperations.contains(operationID),
            let signature = request.headerFields[HTTPField.Name(PeerRequestSignature.header)!]
        {
            let actor = request.headerFields[HTTPField.Name(PeerRequestSignature.actorHeader)!] ?? ""
            let path = request.path ?? "/"
            let verified = api.peerSigner.verify(
                signature, method: request.method.rawValue, path: path, actor: actor)
            let local = URLComponents(string: path)?.queryItems?.contains { $0.name == "scope" && $0.value == "local" }
            guard case .success(let peer) = verified, local == true else {
                let reason =
                    if case .failure(let failure) = verified { failure.description } else {
                        "not a local-scope request"
                    }
                throw Problem(status: .unauthorized, code: "peer_signature_invalid", message: reason)
            }
            caller = Caller(admin: nil, actor: "\(peer.actor) via \(peer.instance)")
        } else {
            switch await api.authenticate(
                authorization: request.headerFields[.authorization], admin: true,
                anyKind: Self.anyTokenOperations.contains(operationID), requestID: scope.requestID,
                clientAddress: scope.clientAddress)
            {
            case .failure(let problem): throw problem
            case .success(let record): caller = Caller(admin: record, actor: "\(record.service)/\(record.id)")
            }
        }
        return try await Caller.$current.withValue(caller) { try await next(request, body, metadata) }
    }
}

/// Every failure of a contract route as a problem: what the handlers and the authentication
/// throw, and what the generated code refuses (a body or parameter that does not match the
/// document is 400, an unknown content type 415, an unacceptable `Accept` 406).
struct ContractProblems: ServerMiddleware {
    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        do {
            // An empty body is no body: an operation whose body is optional runs without one.
            return try await next(request, body?.length == .known(0) ? nil : body, metadata)
        } catch {
            let problem = Self.problem(for: error, operationID: operationID)
            let requestID = RequestScope.current?.requestID ?? ""
            return (
                HTTPResponse(status: problem.status, headerFields: [.contentType: Problem.contentType]),
                HTTPBody(Array(problem.body(requestID: requestID).readableBytesView))
            )
        }
    }

    static func problem(for error: any Error, operationID: String = "") -> Problem {
        let cause = (error as? ServerError)?.underlyingError ?? error
        switch cause {
        case let problem as Problem:
            return problem
        case let failure as TokenService.Failure:
            switch failure {
            case .refused(let message): return Problem(status: .conflict, code: "refused", message: message)
            case .notFound(let message): return Problem(status: .notFound, code: "token_unknown", message: message)
            case .identityRevoked(let message):
                return Problem(status: .unauthorized, code: "identity_revoked", message: message)
            case .store(let error):
                return Problem(status: .serviceUnavailable, code: "store_unavailable", message: error.description)
            }
        case let error as StoreError:
            return Problem(status: .serviceUnavailable, code: "store_unavailable", message: error.description)
        case let error as DecodingError:
            return .badRequest(describe(error, fields: ContractPaths.bodyFields[operationID] ?? []))
        default:
            guard let server = error as? ServerError else {
                return Problem(status: .internalServerError, code: "internal", message: "internal error")
            }
            switch server.httpStatus {
            case .badRequest: return .badRequest(server.causeDescription)
            case .unsupportedMediaType:
                return Problem(
                    status: .unsupportedMediaType, code: "unsupported_media_type",
                    message: "the request body must be application/json")
            case .notAcceptable:
                return Problem(
                    status: .notAcceptable, code: "not_acceptable",
                    message: "this route answers with application/json (or application/problem+json)")
            case .notFound: return Problem(status: .notFound, code: "not_found", message: "Not Found")
            default: return Problem(status: .internalServerError, code: "internal", message: "internal error")
            }
        }
    }

    /// A body that does not match the document, said as the data API says it: the key, what it
    /// must be, and what the body may hold (`fields`, from the document).
    static func describe(_ error: DecodingError, fields: [String]) -> String {
        func key(_ context: DecodingError.Context, _ last: (any CodingKey)? = nil) -> String {
            let keys = (context.codingPath + (last.map { [$0] } ?? [])).map {
                $0.intValue.map { "[\($0)]" } ?? $0.stringValue
            }
            return "\"" + keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[") + "\""
        }
        let expected = fields.isEmpty ? "" : " (expected \(fields.joined(separator: ", ")))"
        switch error {
        case .keyNotFound(let last, let context): return "missing key \(key(context, last))\(expected)"
        case .valueNotFound(let type, let context): return "\(key(context)) must be \(jsonType(type)), got null"
        case .typeMismatch(let type, let context):
            return "\(key(context)) must be \(jsonType(type)), got \(found(context.debugDescription))"
        case .dataCorrupted(let context):
            if context.debugDescription.hasPrefix("Additional properties are disabled") {
                return "unknown key \(key(context))\(expected)"
            }
            return context.codingPath.isEmpty
                ? "the body is not valid JSON" : "\(key(context)) is not valid: \(context.debugDescription)"
        @unknown default: return "the body does not match the document"
        }
    }

    private static func jsonType(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "a whole number"
        case is Double.Type: "a number"
        case is Bool.Type: "a boolean"
        case is [Any].Type: "an array"
        default: "an object"
        }
    }

    /// What a type mismatch found, from Foundation's description ("… but found number instead.").
    private static func found(_ description: String) -> String {
        guard let start = description.range(of: "but found "), let end = description.range(of: " instead") else {
            return "another type"
        }
        let word = description[start.upperBound..<end.lowerBound].lowercased()
        switch word {
        case "number", "a number": return "a number"
        case "bool", "boolean", "a boolean", "a bool": return "a boolean"
        case "array", "an array": return "an array"
        case "dictionary", "object", "a dictionary", "an object": return "an object"
        case "string", "a string": return "a string"
        case "null", "a null value": return "null"
        default: return String(word)
        }
    }
}

/// The contract's operations, implemented over the store, the policy and the gateway.
struct ContractHandlers: APIProtocol {
    let api: HTTPAPI

    // MARK: - Tokens

    func listTokens(_ input: Operations.ListTokens.Input) async throws -> Operations.ListTokens.Output {
        let now = Date()
        let all = input.query.all == true
        let records = try await api.store.tokens(service: input.query.service).filter {
            (all || $0.isUsable(at: now)) && (input.query.subject == nil || $0.subject == input.query.subject)
        }
        return .ok(.init(body: .json(.init(tokens: records.map { Self.token($0, now: now) }))))
    }

    func issueToken(_ input: Operations.IssueToken.Input) async throws -> Operations.IssueToken.Output {
        guard case .json(let body) = input.body else { throw Problem.badRequest("expected a JSON body") }
        guard !body.service.isEmpty else { throw Problem.badRequest("'service' must not be empty") }
        let issued = try await tokens().issue(
            service: body.service, ttl: try ContractFormats.duration(body.ttl, "ttl"),
            note: try ContractFormats.text(body.note, "note"))
        return .created(.init(body: .json(Self.issued(issued))))
    }

    func revokeToken(_ input: Operations.RevokeToken.Input) async throws -> Operations.RevokeToken.Output {
        var reason: String?
        if case .json(let body)? = input.body { reason = try ContractFormats.text(body.reason, "reason") }
        if let admin = Caller.current?.admin, admin.id == input.path.id {
            throw Problem(
                status: .conflict, code: "self_revocation",
                message:
                    "an admin token cannot revoke itself over the API (the caller would lose the API mid-work): use another admin token or `rolegate token revoke`"
            )
        }
        let record = try await tokens().revoke(id: input.path.id, reason: reason)
        return .ok(.init(body: .json(Self.token(record))))
    }

    func revokeSubject(_ input: Operations.RevokeSubject.Input) async throws -> Operations.RevokeSubject.Output {
        guard case .json(let body) = input.body else { throw Problem.badRequest("expected a JSON body") }
        guard !body.subject.isEmpty else { throw Problem.badRequest("'subject' must not be empty") }
        if let admin = Caller.current?.admin, admin.subject == body.subject,
            body.service == nil || body.service == admin.service
        {
            throw Problem(
                status: .conflict, code: "self_revocation",
                message:
                    "the calling admin token was exchanged for this subject and would be revoked mid-work: use another admin token or `rolegate token revoke --subject`"
            )
        }
        let revoked = try await tokens().revokeAll(
            subject: body.subject, service: body.service, reason: try ContractFormats.text(body.reason, "reason"))
        return .ok(.init(body: .json(.init(tokens: revoked.map { Self.token($0) }))))
    }

    func rotateService(_ input: Operations.RotateService.Input) async throws -> Operations.RotateService.Output {
        var body = Components.Schemas.RotateRequest()
        if case .json(let given)? = input.body { body = given }
        let issued = try await tokens().rotate(
            service: input.path.service, grace: try ContractFormats.duration(body.grace, "grace"),
            ttl: try ContractFormats.duration(body.ttl, "ttl"), note: try ContractFormats.text(body.note, "note"))
        return .created(.init(body: .json(Self.issued(issued))))
    }

    /// Token operations in the caller's name (recorded as the issuer and in the audit log).
    private func tokens() -> TokenService {
        let audit = api.audit
        let issuer = Caller.current.map { "http:\($0.actor)" } ?? "http"
        return TokenService(store: api.store, policy: api.policy, issuer: issuer) { events in
            for event in events { audit?.record(event) }
        }
    }

    // MARK: - Audit

    func listAuditEvents(_ input: Operations.ListAuditEvents.Input) async throws -> Operations.ListAuditEvents.Output {
        var query = AuditQuery()
        query.service = input.query.service
        query.tokenID = input.query.token
        query.kinds = (input.query.kind ?? []).compactMap { AuditEvent.Kind(rawValue: $0.rawValue) }
        query.since = try ContractFormats.pointInTime(input.query.since, "since")
        query.until = try ContractFormats.pointInTime(input.query.until, "until")
        if let limit = input.query.limit {
            guard (1...10_000).contains(limit) else { throw Problem.badRequest("'limit' must be 1 to 10000") }
            query.limit = limit
        }
        let events = try await api.store.auditEvents(query).reversed().map(Self.event)
        return .ok(.init(body: .json(.init(events: events))))
    }

    // MARK: - Sessions

    func listSessions(_ input: Operations.ListSessions.Input) async throws -> Operations.ListSessions.Output {
        let gateway = api.gateway
        var sessions = gateway.liveSessions.map { s in
            Components.Schemas.Session(
                id: s.id, service: s.service, role: s.role, tokenId: s.tokenID, database: s.database, client: s.client,
                startedAt: s.startedAt, statement: s.statement, statementRunning: s.statementRunning,
                statementMs: s.statementDuration.map {
                    Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15
                },
                subject: s.subject, instance: gateway.instanceID)
        }
        // Every instance's sessions, unless a peer is asking for this one's alone.
        guard input.query.scope != .local, let peers = gateway.peers else {
            return .ok(.init(body: .json(.init(sessions: sessions))))
        }
        let actor = Caller.current?.actor ?? ""
        var instances = [Components.Schemas.InstanceAnswer(id: peers.me.id, ok: true)]
        for peer in peers.others {
            let answer = await PeerCall.send(
                to: peer, method: "GET", path: "/admin/v1/sessions?scope=local", signer: api.peerSigner,
                from: peers.me.id, actor: actor)
            if let answer, answer.status == 200,
                let theirs = try? PeerCall.decoder.decode(Components.Schemas.SessionList.self, from: answer.body)
            {
                sessions += theirs.sessions
                instances.append(.init(id: peer.id, ok: true))
            } else {
                let detail =
                    answer.map { "answered \($0.status)" } ?? "unreachable at \(peer.httpAddress ?? "(no HTTP API)")"
                instances.append(.init(id: peer.id, ok: false, detail: detail))
            }
        }
        return .ok(.init(body: .json(.init(sessions: sessions, instances: instances))))
    }

    func endSession(_ input: Operations.EndSession.Input) async throws -> Operations.EndSession.Output {
        let id = input.path.id
        let unknown = Problem(status: .notFound, code: "session_unknown", message: "no live session \(id)")
        guard !id.isEmpty, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else { throw unknown }
        let actor = Caller.current?.actor ?? ""
        if api.gateway.endSession(id: id, by: actor) { return .noContent(.init()) }
        // Held by another instance: ask each peer to end it there.
        if input.query.scope != .local, let peers = api.gateway.peers {
            for peer in peers.others {
                let answer = await PeerCall.send(
                    to: peer, method: "DELETE", path: "/admin/v1/sessions/\(id)?scope=local", signer: api.peerSigner,
                    from: peers.me.id, actor: actor)
                if answer?.status == 204 { return .noContent(.init()) }
            }
        }
        throw unknown
    }

    // MARK: - Drift

    func plan(_ input: Operations.Plan.Input) async throws -> Operations.Plan.Output {
        let provisioner = Provisioner(policy: api.policy, key: api.masterKey)
        var databases: [Components.Schemas.DatabasePlan] = []
        for database in api.policy.databases {
            do {
                let plan = try await provisioner.plan(database)
                databases.append(
                    .init(name: database.name, inSync: plan.inSync, statements: plan.statements.map(\.display)))
            } catch {
                databases.append(.init(name: database.name, error: "\(error)"))
            }
        }
        return .ok(.init(body: .json(.init(inSync: databases.allSatisfy { $0.inSync == true }, databases: databases))))
    }

    // MARK: - Operations

    func health(_ input: Operations.Health.Input) async throws -> Operations.Health.Output {
        .ok(.init(body: .json(.init(status: .ok))))
    }

    func readiness(_ input: Operations.Readiness.Input) async throws -> Operations.Readiness.Output {
        let readiness = await api.readiness()
        return readiness.status == .ready
            ? .ok(.init(body: .json(readiness))) : .serviceUnavailable(.init(body: .json(readiness)))
    }

    func metrics(_ input: Operations.Metrics.Input) async throws -> Operations.Metrics.Output {
        .ok(.init(body: .plainText(HTTPBody(api.renderMetrics()))))
    }

    func openAPIDocument(_ input: Operations.OpenAPIDocument.Input) async throws -> Operations.OpenAPIDocument.Output {
        .ok(.init(body: .yaml(HTTPBody(OpenAPIDocument.yaml))))
    }

    // MARK: - The contract's shapes

    static func token(_ record: TokenRecord, now: Date = Date()) -> Components.Schemas.Token {
        Components.Schemas.Token(
            id: record.id, service: record.service, role: record.role,
            state: .init(rawValue: record.state(at: now).rawValue) ?? .revoked, issuedAt: record.issuedAt,
            expiresAt: record.expiresAt, revokedAt: record.revokedAt, revokeReason: record.revokeReason,
            lastUsedAt: record.lastUsedAt, supersededBy: record.supersededBy, issuer: record.issuer, note: record.note,
            subject: record.subject, grant: record.grant)
    }

    static func issued(_ issued: TokenService.Issued) -> Components.Schemas.IssuedToken {
        Components.Schemas.IssuedToken(
            value1: token(issued.record),
            value2: .init(token: issued.token, superseded: issued.superseded.map { token($0) }))
    }

    static func event(_ event: AuditEvent) -> Components.Schemas.AuditEvent {
        Components.Schemas.AuditEvent(
            id: Int(event.id ?? 0), instance: event.instance, sequence: Int(event.sequence), at: event.at,
            kind: .init(rawValue: event.kind.rawValue) ?? .policy, action: event.action, service: event.service,
            tokenId: event.tokenID, role: event.role, database: event.database, sessionId: event.sessionID,
            client: event.client, sql: event.sql, sqlState: event.sqlState, rows: event.rows.map(Int.init),
            durationMs: event.durationMicros.map { Double($0) / 1000 },
            detail: .init(additionalProperties: event.detail), previousHash: event.previousHash, hash: event.hash)
    }
}
