import Foundation
import HTTPTypes
import Hummingbird
import RolegateCore
import RolegateGateway
import RolegateProvision
import RolegateStore
import RolegateTokens

/// `/admin/v1/…`: tokens, the audit log, live sessions and drift, for admin tokens only.
extension HTTPAPI {
    func addAdminRoutes(to router: Router<APIContext>) {
        router.post("/admin/v1/tokens") { request, context in
            await self.admin(request, context) { admin, tokens in
                let shape = #"{"service": "…", "ttl": "1h"?, "note": "…"?}"#
                let body = try await self.fields(request, context, allowed: ["service", "ttl", "note"], shape: shape)
                let issued = try await tokens.issue(
                    service: try body.requiredString("service", shape: shape),
                    ttl: try Self.duration(body.string("ttl"), "ttl"), note: body.string("note"))
                return jsonResponse(self.issuedObject(issued), status: .created)
            }
        }
        router.post("/admin/v1/tokens/:id/revoke") { request, context in
            await self.admin(request, context) { _, tokens in
                let body = try await self.fields(
                    request, context, allowed: ["reason"], shape: #"{"reason": "…"?}"#, allowEmpty: true)
                let id = context.parameters.get("id") ?? ""
                let record = try await tokens.revoke(id: id, reason: body.string("reason"))
                return jsonResponse(Self.tokenObject(record))
            }
        }
        router.post("/admin/v1/services/:service/rotate") { request, context in
            await self.admin(request, context) { _, tokens in
                let body = try await self.fields(
                    request, context, allowed: ["grace", "ttl", "note"],
                    shape: #"{"grace": "10m"?, "ttl": "1h"?, "note": "…"?}"#, allowEmpty: true)
                let issued = try await tokens.rotate(
                    service: context.parameters.get("service") ?? "",
                    grace: try Self.duration(body.string("grace"), "grace"),
                    ttl: try Self.duration(body.string("ttl"), "ttl"), note: body.string("note"))
                return jsonResponse(self.issuedObject(issued), status: .created)
            }
        }
        router.get("/admin/v1/tokens") { request, context in
            await self.admin(request, context) { _, _ in
                let service = request.uri.queryParameters.get("service")
                let all = request.uri.queryParameters.get("all") == "true"
                let now = Date()
                let records = try await self.store.tokens(service: service).filter { all || $0.isUsable(at: now) }
                return jsonResponse(["tokens": records.map { Self.tokenObject($0, now: now) }])
            }
        }
        router.get("/admin/v1/audit") { request, context in
            await self.admin(request, context) { _, _ in
                let query = try Self.auditQuery(request.uri.queryParameters)
                let events = try await self.store.auditEvents(query).reversed().map(\.jsonObject)
                return jsonResponse(["events": Array(events)])
            }
        }
        router.get("/admin/v1/sessions") { request, context in
            await self.adminOrPeer(request, context) { actor in
                let me: Any = self.gateway.instanceID ?? NSNull()
                var sessions: [[String: Any]] = self.gateway.liveSessions.map { s in
                    [
                        "id": s.id, "service": s.service, "role": s.role, "token_id": s.tokenID, "database": s.database,
                        "client": s.client ?? NSNull(), "started_at": s.startedAt.rfc3339,
                        "statement": s.statement ?? NSNull(), "instance": me,
                    ]
                }
                // Every instance's sessions, unless a peer is asking for this one's alone.
                guard request.uri.queryParameters["scope"] != "local", let peers = self.gateway.peers else {
                    return jsonResponse(["sessions": sessions])
                }
                var instances: [[String: Any]] = [["id": peers.me.id, "ok": true]]
                for peer in peers.others {
                    let answer = await PeerCall.send(
                        to: peer, method: "GET", path: "/admin/v1/sessions?scope=local", signer: self.peerSigner,
                        from: peers.me.id, actor: actor)
                    if let answer, answer.status == 200,
                        let object = try? JSONSerialization.jsonObject(with: answer.body) as? [String: Any],
                        let theirs = object["sessions"] as? [[String: Any]]
                    {
                        sessions += theirs
                        instances.append(["id": peer.id, "ok": true])
                    } else {
                        instances.append([
                            "id": peer.id, "ok": false,
                            "detail": answer.map { "answered \($0.status)" }
                                ?? "unreachable at \(peer.httpAddress ?? "(no HTTP API)")",
                        ])
                    }
                }
                return jsonResponse(["sessions": sessions, "instances": instances])
            }
        }
        router.delete("/admin/v1/sessions/:id") { request, context in
            await self.adminOrPeer(request, context) { actor in
                let id = context.parameters.get("id") ?? ""
                guard !id.isEmpty, id.allSatisfy({ $0.isLetter || $0.isNumber }) else {
                    throw Problem(status: .notFound, code: "session_unknown", message: "no live session \(id)")
                }
                if self.gateway.endSession(id: id, by: actor) {
                    return Response(status: .noContent)
                }
                // Held by another instance: ask each peer to end it there.
                if request.uri.queryParameters["scope"] != "local", let peers = self.gateway.peers {
                    for peer in peers.others {
                        let answer = await PeerCall.send(
                            to: peer, method: "DELETE", path: "/admin/v1/sessions/\(id)?scope=local",
                            signer: self.peerSigner, from: peers.me.id, actor: actor)
                        if answer?.status == 204 { return Response(status: .noContent) }
                    }
                }
                throw Problem(status: .notFound, code: "session_unknown", message: "no live session \(id)")
            }
        }
        router.get("/admin/v1/plan") { request, context in
            await self.admin(request, context) { _, _ in
                let provisioner = Provisioner(policy: self.policy, key: self.masterKey)
                var databases: [[String: Any]] = []
                for database in self.policy.databases {
                    do {
                        let plan = try await provisioner.plan(database)
                        databases.append([
                            "name": database.name, "in_sync": plan.inSync,
                            "statements": plan.statements.map(\.display),
                        ])
                    } catch {
                        databases.append(["name": database.name, "error": "\(error)"])
                    }
                }
                let inSync = databases.allSatisfy { $0["in_sync"] as? Bool == true }
                return jsonResponse(["in_sync": inSync, "databases": databases])
            }
        }
    }

    /// The cross-instance routes: an admin token, or, for this instance's own part of the answer
    /// (`scope=local`), a peer's signed request (``PeerRequestSignature``). `body` gets who acts:
    /// `service/token id` of the admin token, as the instance that received it said.
    private func adminOrPeer(
        _ request: Request, _ context: APIContext, _ body: @escaping (String) async throws -> Response
    ) async -> Response {
        guard let signature = request.headers[HTTPField.Name(PeerRequestSignature.header)!] else {
            return await admin(request, context) { admin, _ in try await body("\(admin.service)/\(admin.id)") }
        }
        let actor = request.headers[HTTPField.Name(PeerRequestSignature.actorHeader)!] ?? ""
        let verified = peerSigner.verify(
            signature, method: request.method.rawValue, path: request.uri.description, actor: actor)
        guard case .success(let peer) = verified, request.uri.queryParameters["scope"] == "local" else {
            let reason =
                if case .failure(let failure) = verified { failure.description } else { "not a local-scope request" }
            return Problem(status: .unauthorized, code: "peer_signature_invalid", message: reason)
                .response(requestID: context.requestID)
        }
        do {
            return try await body("\(peer.actor) via \(peer.instance)")
        } catch let problem as Problem {
            return problem.response(requestID: context.requestID)
        } catch {
            return Problem(status: .internalServerError, code: "internal", message: "\(error)")
                .response(requestID: context.requestID)
        }
    }

    /// Authenticates an admin token, runs `body`, and turns what it throws into problems.
    private func admin(
        _ request: Request, _ context: APIContext, _ body: (TokenRecord, TokenService) async throws -> Response
    ) async -> Response {
        let requestID = context.requestID
        let admin: TokenRecord
        switch await authenticate(request, admin: true, context: context) {
        case .failure(let problem): return problem.response(requestID: requestID)
        case .success(let record): admin = record
        }
        let audit = self.audit
        let tokens = TokenService(store: store, policy: policy, issuer: "http:\(admin.service)/\(admin.id)") { events in
            for event in events { audit?.record(event) }
        }
        do {
            return try await body(admin, tokens)
        } catch let invalid as JSONFields.Invalid {
            return Problem.badRequest(invalid.message).response(requestID: requestID)
        } catch let problem as Problem {
            return problem.response(requestID: requestID)
        } catch let failure as TokenService.Failure {
            let problem: Problem =
                switch failure {
                case .refused(let message): Problem(status: .conflict, code: "refused", message: message)
                case .notFound(let message): Problem(status: .notFound, code: "token_unknown", message: message)
                case .store(let error):
                    Problem(status: .serviceUnavailable, code: "store_unavailable", message: error.description)
                }
            return problem.response(requestID: requestID)
        } catch let error as StoreError {
            return Problem(status: .serviceUnavailable, code: "store_unavailable", message: error.description)
                .response(requestID: requestID)
        } catch {
            return Problem(status: .internalServerError, code: "internal", message: "\(error)")
                .response(requestID: requestID)
        }
    }

    /// The body's fields, read strictly (``JSONFields``); an empty body is `{}` where `allowEmpty`.
    private func fields(
        _ request: Request, _ context: APIContext, allowed: [String], shape: String, allowEmpty: Bool = false
    ) async throws -> JSONFields {
        let data: Data
        switch await body(request, context, limit: settings.maxBodyBytes) {
        case .failure(let problem): throw problem
        case .success(let bytes): data = bytes
        }
        if data.isEmpty && allowEmpty { return JSONFields(allowed: allowed) }
        switch JSONFields.document(data).flatMap({ value in
            Result { () throws(JSONFields.Invalid) in try JSONFields(value, allowed: allowed, shape: shape) }
        }) {
        case .success(let fields): return fields
        case .failure(let invalid): throw Problem.badRequest(invalid.message)
        }
    }

    static func duration(_ text: String?, _ name: String) throws -> Duration? {
        guard let text else { return nil }
        do {
            return try DurationText.parse(text)
        } catch {
            throw Problem.badRequest("\(name): \(error.description)")
        }
    }

    static func tokenObject(_ record: TokenRecord, now: Date = Date()) -> [String: Any] {
        let data = (try? JSONEncoder().encode(TokenJSON(record, now: now))) ?? Data("{}".utf8)
        return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    func issuedObject(_ issued: TokenService.Issued) -> [String: Any] {
        var object = Self.tokenObject(issued.record)
        object["token"] = issued.token
        object["superseded"] = issued.superseded.map { Self.tokenObject($0) }
        return object
    }

    static func auditQuery(_ parameters: Parameters) throws -> AuditQuery {
        var query = AuditQuery()
        query.service = parameters.get("service")
        query.tokenID = parameters.get("token")
        for kind in parameters.getAll("kind") {
            guard let value = AuditEvent.Kind(rawValue: kind) else {
                throw Problem.badRequest("unknown kind '\(kind)'")
            }
            query.kinds.append(value)
        }
        func time(_ name: String) throws -> Date? {
            guard let text = parameters.get(name) else { return nil }
            if let date = PointInTime.parse(text) { return date }
            throw Problem.badRequest("\(name): expected a duration (1h) or an RFC 3339 time")
        }
        query.since = try time("since")
        query.until = try time("until")
        if let limit = parameters.get("limit") {
            guard let value = Int(limit), (1...10_000).contains(value) else {
                throw Problem.badRequest("limit must be 1 to 10000")
            }
            query.limit = value
        }
        return query
    }
}
