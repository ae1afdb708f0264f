import Foundation
import NIOCore
import PostgresWire
import RolegateAudit
package import RolegateCore

/// What one session has done, for its audit events.
package struct SessionAudit {
    var id = SessionAudit.newID()
    var started: NIODeadline?
    var tracker: StatementTracker?
    var bytesIn = 0
    var bytesOut = 0
    /// Why the session ended, when the gateway knows (otherwise the client went away).
    var endReason: String?
    /// Who ended it (an administrator's or console person's actor), when someone did.
    var endedBy: String?
    /// Server messages forwarded to the client whose statements the tracker has yet to follow,
    /// and when they were read (see ``ClientSessionHandler/upstream(_:forward:status:statementsEnded:)``).
    var unfollowedAnswers: (messages: ByteBuffer, now: UInt64)?
    var backendPID: Int32 = 0
    /// The tracker's statement count when the session's status last heard of a statement.
    var statusCount = 0
    /// This session's statement counters (looked up once, added to atomically).
    var statements: Counter?
    var statementErrors: Counter?
    /// Who the session runs as, copied once at its start for every statement event.
    var who: Identity?

    package struct Identity {
        var service: String
        var tokenID: String
        var role: String
        var database: String?
        /// Who an exchanged token was exchanged for (recorded on each of the session's events).
        var subject: String?
        /// The access request an elevated token was granted by (recorded on each event, too).
        var accessRequest: String?

        package init(
            service: String, tokenID: String, role: String, database: String?, subject: String? = nil,
            accessRequest: String? = nil
        ) {
            (self.service, self.tokenID, self.role, self.database) = (service, tokenID, role, database)
            self.subject = subject
            self.accessRequest = accessRequest
        }
    }

    package static func newID() -> String {
        RandomID.make(length: 12)
    }

}

/// A statement event's `detail` (its command tag and prepared statement), built once and shared
/// while a session repeats the same statement: a dictionary per event was a fifth of the
/// event's cost on the event loop.
package struct StatementDetail {
    private var command: String?
    private var prepared: String?
    /// Always the detail of `command` and `prepared`.
    private var built: [String: String] = [:]

    package init() {}

    mutating func detail(command: String?, prepared: String?) -> [String: String] {
        let prepared = prepared?.isEmpty == true ? nil : prepared
        if command != self.command || prepared != self.prepared {
            var detail = [String: String](minimumCapacity: 2)
            if let command { detail["command"] = command }
            if let prepared { detail["prepared"] = prepared }
            (self.command, self.prepared, built) = (command, prepared, detail)
        }
        return built
    }
}

extension ClientSessionHandler {
    var auditWriter: AuditWriter? { shared.configuration.audit }

    /// Under `on_failure: block`, whether new statements may run (the audit queue has room).
    var auditAccepting: Bool { auditWriter?.admitsNewWork ?? true }

    func clientAddress(_ context: ChannelHandlerContext) -> String? {
        guard let address = context.channel.remoteAddress else { return nil }
        if case .unixDomainSocket = address { return "unix" }
        return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }

    private func authDetail() -> [String: String] {
        var detail = ["tls": (machine?.encrypted ?? false) ? "yes" : "no"]
        if let method = machine?.login?.method { detail["method"] = method == .scram ? "scram-sha-256" : "password" }
        if let subject = machine?.provenToken?.subject { detail["subject"] = subject }
        if let request = machine?.provenToken?.accessRequest { detail["access_request"] = request }
        return detail
    }

    /// A refusal before the session relays is a refused authentication.
    func auditRefusal(
        _ fields: ErrorFields, _ context: ChannelHandlerContext, throttled: LoginThrottleState.Outcome?
    ) {
        guard audit.started == nil else { return }
        shared.metrics.increment("rolegate_auth_failures_total", ["channel": "wire", "code": fields.code])
        guard let writer = auditWriter, let machine else { return }
        if let throttled, throttled.crossedLimit {
            writer.record(
                shared.loginThrottle.crossedLimitEvent(
                    address: context.channel.remoteAddress?.ipAddress, failures: throttled.failuresInWindow,
                    channel: "wire"))
        }
        var detail = authDetail()
        detail["reason"] = fields.message
        if case .delay? = throttled?.verdict {
            detail["delayed"] = DurationText.format(shared.loginThrottle.settings.delay)
        }
        let token = machine.provenToken
        writer.record(
            AuditEvent(
                kind: .auth, action: "refused", service: machine.login?.service, tokenID: token?.id,
                role: token?.role, database: machine.login?.database.name, client: clientAddress(context),
                sqlState: fields.code, detail: detail))
    }

    /// Records the allowed authentication and the session start; false when the audit
    /// log cannot take them and `on_failure: block` means the session must not start.
    func auditSessionStart(_ context: ChannelHandlerContext) -> Bool {
        audit.started = .now()
        if let token = machine?.provenToken {
            shared.metrics.increment("rolegate_sessions_total", ["service": token.service])
            audit.statements = shared.metrics.counter(
                "rolegate_statements_total", ["service": token.service, "channel": "wire"])
            audit.statementErrors = shared.metrics.counter(
                "rolegate_statement_errors_total", ["service": token.service, "channel": "wire"])
        }
        guard let writer = auditWriter, let machine, let token = machine.provenToken, let login = machine.login else {
            return true
        }
        // Under `on_failure: block`, a full queue admits no new session.
        guard writer.admitsNewWork else {
            audit.started = nil
            return false
        }
        audit.backendPID = upstream?.processID ?? 0
        audit.who = SessionAudit.Identity(
            service: login.service, tokenID: token.id, role: token.role, database: login.database.name,
            subject: token.subject, accessRequest: token.accessRequest)
        if shared.configuration.auditStatements {
            audit.tracker = StatementTracker(captureParameters: shared.configuration.auditParameters)
            upstream?.observesStatements = true
        }
        let client = clientAddress(context)
        var startDetail = ["backend_pid": String(audit.backendPID), "tls": machine.encrypted ? "yes" : "no"]
        if let subject = token.subject { startDetail["subject"] = subject }
        if let request = token.accessRequest { startDetail["access_request"] = request }
        writer.record(
            AuditEvent(
                kind: .auth, action: "allowed", service: login.service, tokenID: token.id, role: token.role,
                database: login.database.name, sessionID: audit.id, client: client, detail: authDetail()))
        writer.record(
            AuditEvent(
                kind: .session, action: "start", service: login.service, tokenID: token.id, role: token.role,
                database: login.database.name, sessionID: audit.id, client: client,
                detail: startDetail))
        return true
    }

    func auditSessionEnd() {
        followAnswers()
        guard let writer = auditWriter, let started = audit.started, let machine, let token = machine.provenToken
        else { return }
        audit.started = nil
        upstream?.observesStatements = false
        recordInterruptedStatements()
        var detail = [
            "reason": audit.endReason ?? "client disconnected", "bytes_in": String(audit.bytesIn),
            "bytes_out": String(audit.bytesOut), "statements": String(audit.tracker?.count ?? 0),
            "backend_pid": String(audit.backendPID),
        ]
        if let subject = token.subject { detail["subject"] = subject }
        if let request = token.accessRequest { detail["access_request"] = request }
        if let by = audit.endedBy { detail["ended_by"] = by }
        writer.record(
            AuditEvent(
                kind: .session, action: "end", service: token.service, tokenID: token.id, role: token.role,
                database: machine.login?.database.name, sessionID: audit.id,
                durationMicros: Int64((NIODeadline.now() - started).nanoseconds / 1000), detail: detail))
    }

    /// The client's messages, once forwarded, to the statement tracker.
    func followClientMessages(_ messages: ByteBuffer, now: UInt64) {
        // The bytes were framed and checked against the limits before they were forwarded.
        _ = try? WireFraming.scanMessages(messages, limits: shared.limits) { type, body, length in
            audit.tracker?.client(type: type, body: messages.getSlice(at: body, length: length)!, now: now)
            return true
        }
    }

    /// Follows the statements that ``SessionAudit/unfollowedAnswers`` end, once.
    func followAnswers() {
        guard let (messages, now) = audit.unfollowedAnswers else { return }
        audit.unfollowedAnswers = nil
        _ = try? WireFraming.scanMessages(messages) { type, body, length in
            if StatementTracker.endsStatement(type) {
                statementMessage(type: type, body: messages.getSlice(at: body, length: length)!, now: now)
            }
            return true
        }
    }

    /// What the server never answered before the session ended is recorded too (`interrupted`):
    /// a statement cut short by a kill or a revocation may still have run.
    private func recordInterruptedStatements() {
        guard audit.tracker != nil, let writer = auditWriter, let who = audit.who else { return }
        let sessionID = audit.id
        audit.tracker!.interrupted(now: NIODeadline.now().uptimeNanoseconds) { statement in
            writer.record(
                SessionAudit.statementEvent(statement, who: who, sessionID: sessionID, detail: &self.statementDetail))
        }
    }

    /// Runs for every statement: it reads only what the session copied at its start
    /// (``SessionAudit/who``), never the session machine.
    private func statementMessage(type: UInt8, body: ByteBuffer, now: UInt64) {
        guard audit.tracker != nil, let writer = auditWriter, let who = audit.who else { return }
        // Read before the tracker is mutated: the closure runs inside that access to `audit`.
        let (statements, errors, sessionID) = (audit.statements, audit.statementErrors, audit.id)
        audit.tracker!.server(type: type, body: body, now: now) { statement in
            statements?.add()
            if statement.sqlState != nil { errors?.add() }
            writer.record(
                SessionAudit.statementEvent(statement, who: who, sessionID: sessionID, detail: &self.statementDetail))
        }
    }
}

extension SessionAudit {
    /// The audit event of a finished statement: the session handler's, and what
    /// ``StatementAuditBench`` measures.
    package static func statementEvent(
        _ statement: StatementTracker.Statement, who: Identity, sessionID: String, detail cache: inout StatementDetail
    ) -> AuditEvent {
        var detail = cache.detail(command: statement.command, prepared: statement.preparedName)
        if let subject = who.subject { detail["subject"] = subject }
        if let request = who.accessRequest { detail["access_request"] = request }
        if let function = statement.function {
            detail["command"] = "FUNCTION CALL"
            detail["function_oid"] = String(function.oid)
            if let name = function.name { detail["function"] = name }
        }
        if let parameters = statement.parameters {
            detail["parameters"] =
                String(
                    decoding: (try? JSONSerialization.data(withJSONObject: parameters)) ?? Data("[]".utf8),
                    as: UTF8.self)
        }
        return AuditEvent(
            kind: .statement,
            action: statement.interrupted
                ? "interrupted" : !statement.executed ? "skipped" : statement.sqlState == nil ? "ok" : "error",
            service: who.service, tokenID: who.tokenID, role: who.role,
            database: who.database, sessionID: sessionID, sql: statement.sql,
            sqlState: statement.sqlState, rows: statement.rows,
            durationMicros: Int64((statement.finishedAt &- statement.startedAt) / 1000), detail: detail)
    }
}
