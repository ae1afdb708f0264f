import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import RolegateAudit
import RolegateCore
import RolegateGateway

/// The last ``QueryTarget`` an HTTP connection's data requests used (one per connection,
/// used on its event loop).
final class QueryTargetCache {
    var last: QueryTarget?
}

/// `POST /v1/query` and `POST /v1/batch`: statements as the token's role, in one transaction.
/// Served on the connection's event loop by ``DataRequestHandler`` (see HTTP/DataRequestHandler.swift);
/// these are the steps it takes once the token is known and the body is whole.
extension HTTPAPI {
    /// A data request ready to run: its statements, as whom, where, and what bounds them.
    struct DataCall {
        var statements: [QueryStatement]
        var record: TokenRecord
        var database: DatabaseSpec
        var timeout: Duration
        var usualTimeout: Duration
        var maxRows: Int
        var batch: Bool
    }

    /// Reads the body and checks it against the token's role: the call, or the 400/404 problem.
    func dataCall(_ body: ByteBuffer, record: TokenRecord, batch: Bool) -> Result<DataCall, Problem> {
        let parsed: QueryRequest
        switch QueryRequest.parse(body, batch: batch) {
        case .failure(let invalid): return .failure(Problem.badRequest(invalid.message))
        case .success(let request): parsed = request
        }
        guard let role = policy.role(named: record.role) else {
            return .failure(Problem(status: .unauthorized, code: "token_invalid", message: "invalid token"))
        }
        let databaseName = parsed.database ?? role.database
        guard databaseName == role.database, let database = policy.database(named: databaseName) else {
            return .failure(
                Problem(
                    status: .notFound, code: "database_unknown",
                    message: "role \(role.name) lives in database \(role.database), not \(databaseName)"))
        }
        // The role's statement_timeout caps the request's.
        let roleTimeout = role.settings.first { $0.name == "statement_timeout" }.flatMap {
            Self.postgresDuration($0.value)
        }
        let usualTimeout = roleTimeout ?? settings.defaultTimeout
        var timeout = usualTimeout
        if let requested = parsed.timeoutMilliseconds {
            guard requested > 0 else { return .failure(Problem.badRequest("timeout_ms must be positive")) }
            timeout = min(timeout, .milliseconds(requested))
        }
        if let rows = parsed.maxRows, rows < 1 {
            return .failure(Problem.badRequest("max_rows must be positive"))
        }
        return .success(
            DataCall(
                statements: parsed.statements, record: record, database: database, timeout: timeout,
                usualTimeout: usualTimeout, maxRows: min(parsed.maxRows ?? settings.maxRows, settings.maxRows),
                batch: batch))
    }

    /// Runs the call over a pooled server connection, audits each statement and calls
    /// `completion` once with the answer (a refusal is an answer too). On one of the
    /// gateway's loops (the usual case), `completion` runs on it, often before this returns.
    ///
    /// `targets` holds the connection's last ``QueryTarget``: a request with the same token
    /// (and database and usual timeout) as the one before reuses it.
    func run(
        _ call: DataCall, requestID: String, started: ContinuousClock.Instant, targets: QueryTargetCache,
        completion: @escaping (_ status: HTTPResponse.Status, _ body: ByteBuffer) -> Void
    ) {
        let record = call.record
        let statements = call.statements
        let database = call.database.name
        // Under `on_failure: block`, nothing runs that the audit log could not record.
        if audit?.admitsNewWork == false {
            let problem = Problem(
                status: .serviceUnavailable, code: "audit_unavailable", message: AuditWriter.statementsRefused)
            return completion(problem.status, problem.body(requestID: requestID))
        }
        let target: QueryTarget
        if let last = targets.last,
            last.matches(token: record, database: call.database, usualTimeout: call.usualTimeout)
        {
            target = last
        } else {
            switch gateway.queryTarget(token: record, database: call.database, usualTimeout: call.usualTimeout) {
            case .failure(let error):
                let problem = refused(
                    error, statements, record: record, database: database, requestID: requestID, started: started)
                return completion(problem.status, problem.body(requestID: requestID))
            case .success(let made):
                targets.last = made
                target = made
            }
        }
        gateway.run(
            statements, target: target, statementTimeout: call.timeout, maxRows: call.maxRows,
            maxBytes: settings.maxResultBytes
        ) { outcome in
            switch outcome {
            case .failure(let error):
                let problem = self.refused(
                    error, statements, record: record, database: database, requestID: requestID, started: started)
                completion(problem.status, problem.body(requestID: requestID))
            case .success(.failure(let failure)):
                self.auditStatements(
                    statements, record: record, database: database, requestID: requestID, started: started
                ) { index in
                    index == failure.statementIndex || failure.statementIndex == nil
                        ? ("error", failure.sqlState, nil) : ("rolled back", nil, nil)
                }
                let problem = Self.problem(failure)
                completion(problem.status, problem.body(requestID: requestID))
            case .success(.success(let results)):
                self.auditStatements(
                    statements, record: record, database: database, requestID: requestID, started: started
                ) { index in
                    ("ok", nil, results.indices.contains(index) ? results[index] : nil)
                }
                var out = JSONWriter(capacity: 512)
                if call.batch {
                    out.raw("{")
                    out.key("results")
                    out.array(results) { out, result in Self.write(result, to: &out) }
                    out.raw("}")
                } else if let result = results.first {
                    Self.write(result, to: &out)
                } else {
                    out.raw("{}")
                }
                out.raw("\n")
                completion(.ok, ByteBuffer(bytes: out.bytes))
            }
        }
    }

    /// The problem for statements that could not be run at all, each audited as an error.
    private func refused(
        _ error: QueryRunError, _ statements: [QueryStatement], record: TokenRecord, database: String,
        requestID: String, started: ContinuousClock.Instant
    ) -> Problem {
        let problem: Problem
        switch error {
        case .timeout:
            problem = Problem(status: .gatewayTimeout, code: "timeout", message: QueryRunError.timeout.description)
        case .busy(let message):
            problem = Problem(status: .serviceUnavailable, code: "upstream_busy", message: message)
        case .upstreamUnavailable(let message):
            problem = Problem(status: .serviceUnavailable, code: "upstream_unavailable", message: message)
        }
        auditStatements(statements, record: record, database: database, requestID: requestID, started: started) { _ in
            ("error", problem.code, nil)
        }
        return problem
    }

    /// One statement's result as JSON: columns (name, type), the command tag, the row count,
    /// the rows (values as ``ResultValues`` maps them) and `truncated` when a limit cut them; keys sorted.
    static func write(_ result: StatementResult, to out: inout JSONWriter) {
        out.raw("{")
        out.key("columns")
        out.array(result.columns) { out, column in
            out.raw("{")
            out.key("name")
            out.string(column.name)
            out.raw(",")
            out.key("type")
            out.string(ResultValues.typeName(column.typeOID))
            out.raw("}")
        }
        out.raw(",")
        out.key("command")
        if let command = result.command { out.string(command) } else { out.null() }
        out.raw(",")
        out.key("row_count")
        out.number(result.rowCount ?? Int64(result.rows.count))
        out.raw(",")
        out.key("rows")
        out.array(result.rows) { out, row in
            out.array(zip(row, result.columns)) { out, cell in
                ResultValues.write(cell.0, type: cell.1.typeOID, to: &out)
            }
        }
        if result.truncated {
            out.raw(",")
            out.key("truncated")
            out.bool(true)
        }
        out.raw("}")
    }

    /// PostgreSQL's refusal as an HTTP problem, with its message and SQLSTATE.
    static func problem(_ failure: QueryFailure) -> Problem {
        var extra: [String: Problem.Extra] = ["sqlstate": .text(failure.sqlState)]
        if let detail = failure.detail { extra["sql_detail"] = .text(detail) }
        if let hint = failure.hint { extra["hint"] = .text(hint) }
        if let index = failure.statementIndex { extra["statement"] = .number(index) }
        let (status, code): (HTTPResponse.Status, String) =
            switch failure.sqlState {
            case "42501": (.forbidden, "permission_denied")
            // A protocol violation here is the request's fault (e.g. too few parameters).
            case "08P01": (.badRequest, "bad_request")
            case "57014": (.gatewayTimeout, "timeout")
            case let state where state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57P"):
                (.serviceUnavailable, "upstream_unavailable")
            case let state where state.hasPrefix("23"): (.conflict, "constraint_violation")
            case let state where state.hasPrefix("40"): (.conflict, "transaction_conflict")
            default: (.badRequest, "bad_request")
            }
        return Problem(status: status, code: code, message: failure.message, extra: extra)
    }

    /// `statement_timeout` as PostgreSQL writes it: milliseconds, or a number with a unit.
    static func postgresDuration(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        if let ms = Int64(trimmed) { return ms > 0 ? .milliseconds(ms) : nil }
        let normalized = trimmed.replacingOccurrences(of: "min", with: "m").replacingOccurrences(of: " ", with: "")
        return try? DurationText.parse(normalized)
    }

    /// One audit event per statement (`detail` says the channel, `http` unless given; the
    /// request id is the session).
    func auditStatements(
        _ statements: [QueryStatement], record: TokenRecord, database: String, requestID: String,
        started: ContinuousClock.Instant, detail base: [String: String] = ["channel": "http"],
        outcome: (Int) -> (action: String, sqlState: String?, result: StatementResult?)
    ) {
        let micros = Int64((ContinuousClock.now - started).timeInterval * 1_000_000)
        let counters = statementCounters.of(record.service, in: metrics)
        for (index, statement) in statements.enumerated() {
            let (action, state, result) = outcome(index)
            counters.statements.add()
            if action == "error" { counters.errors.add() }
            var detail = base
            if let subject = record.subject { detail["subject"] = subject }
            if let request = record.accessRequest { detail["access_request"] = request }
            if let command = result?.command { detail["command"] = command }
            if result?.truncated == true { detail["truncated"] = "yes" }
            audit?.record(
                AuditEvent(
                    kind: .statement, action: action, service: record.service, tokenID: record.id, role: record.role,
                    database: database, sessionID: requestID, sql: statement.sql, sqlState: state,
                    rows: result?.rowCount, durationMicros: micros, detail: detail))
        }
    }
}
