import Foundation
import HTTPTypes
import Hummingbird
import RolegateCore
import RolegateGateway

/// `POST /v1/query` and `POST /v1/batch`: statements as the token's role, in one transaction.
extension HTTPAPI {
    func data(_ request: Request, _ context: APIContext, batch: Bool) async -> Response {
        let requestID = context.requestID
        let started = ContinuousClock.now
        let record: TokenRecord
        switch await authenticate(request, admin: false, context: context) {
        case .failure(let problem): return problem.response(requestID: requestID)
        case .success(let found): record = found
        }
        let parsed: QueryRequest
        switch await body(request, context, limit: settings.maxBodyBytes) {
        case .failure(let problem): return problem.response(requestID: requestID)
        case .success(let data):
            switch QueryRequest.parse(data, batch: batch) {
            case .failure(let invalid): return Problem.badRequest(invalid.message).response(requestID: requestID)
            case .success(let request): parsed = request
            }
        }
        let statements = parsed.statements
        guard let role = policy.role(named: record.role) else {
            return Problem(status: .unauthorized, code: "token_invalid", message: "invalid token")
                .response(requestID: requestID)
        }
        let databaseName = parsed.database ?? role.database
        guard databaseName == role.database, let database = policy.database(named: databaseName) else {
            return Problem(
                status: .notFound, code: "database_unknown",
                message: "role \(role.name) lives in database \(role.database), not \(databaseName)"
            ).response(requestID: requestID)
        }
        // The role's statement_timeout caps the request's.
        let roleTimeout = role.settings.first { $0.name == "statement_timeout" }.flatMap {
            Self.postgresDuration($0.value)
        }
        let usualTimeout = roleTimeout ?? settings.defaultTimeout
        var timeout = usualTimeout
        if let requested = parsed.timeoutMilliseconds {
            guard requested > 0 else {
                return Problem.badRequest("timeout_ms must be positive").response(requestID: requestID)
            }
            timeout = min(timeout, .milliseconds(requested))
        }
        let maxRows = min(max(parsed.maxRows ?? settings.maxRows, 0), settings.maxRows)

        let outcome: Result<[StatementResult], QueryFailure>
        do {
            outcome = try await gateway.run(
                statements, token: record, database: database, statementTimeout: timeout, usualTimeout: usualTimeout,
                maxRows: maxRows,
                maxBytes: settings.maxResultBytes)
        } catch {
            let problem: Problem
            switch error {
            case .timeout:
                problem = Problem(status: .gatewayTimeout, code: "timeout", message: error.description)
            case .busy(let message):
                problem = Problem(status: .serviceUnavailable, code: "upstream_busy", message: message)
            case .upstreamUnavailable(let message):
                problem = Problem(status: .serviceUnavailable, code: "upstream_unavailable", message: message)
            }
            auditStatements(statements, record: record, database: database.name, requestID: requestID, started: started)
            { _ in
                ("error", problem.code, nil)
            }
            return problem.response(requestID: requestID)
        }
        switch outcome {
        case .failure(let failure):
            auditStatements(statements, record: record, database: database.name, requestID: requestID, started: started)
            { index in
                index == failure.statementIndex || failure.statementIndex == nil
                    ? ("error", failure.sqlState, nil) : ("rolled back", nil, nil)
            }
            return Self.problem(failure).response(requestID: requestID)
        case .success(let results):
            auditStatements(statements, record: record, database: database.name, requestID: requestID, started: started)
            { index in
                ("ok", nil, results.indices.contains(index) ? results[index] : nil)
            }
            var out = JSONWriter(capacity: 512)
            if batch {
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
            return Response(
                status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: out.bytes)))
        }
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
        if let detail = failure.detail { extra["detail"] = .text(detail) }
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

    /// One audit event per statement (channel `http`; the request id is the session).
    func auditStatements(
        _ statements: [QueryStatement], record: TokenRecord, database: String, requestID: String,
        started: ContinuousClock.Instant,
        outcome: (Int) -> (action: String, sqlState: String?, result: StatementResult?)
    ) {
        let micros = Int64((ContinuousClock.now - started).timeInterval * 1_000_000)
        for (index, statement) in statements.enumerated() {
            let (action, state, result) = outcome(index)
            metrics.increment("rolegate_statements_total", ["service": record.service, "channel": "http"])
            if action == "error" {
                metrics.increment("rolegate_statement_errors_total", ["service": record.service, "channel": "http"])
            }
            var detail = ["channel": "http"]
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
