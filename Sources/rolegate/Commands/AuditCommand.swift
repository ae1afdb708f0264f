import ArgumentParser
import Foundation
import RolegateCore
import RolegateStore

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Read the audit log, or prove it untampered.",
        discussion: """
            Every authentication, session, statement, token change and policy change is an event \
            in a hash chain (one chain per gateway instance, one for the CLI of each host). \
            'rolegate audit' lists events (the latest --limit, oldest first); 'rolegate audit \
            verify' walks every chain.
            """,
        subcommands: [AuditList.self, AuditVerify.self],
        defaultSubcommand: AuditList.self)
}

struct AuditList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Show audit events, or stream new ones with --follow.")

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Only this service's events.") var service: String?
    @Option(name: .customLong("token"), help: ArgumentHelp("Only this token's events.", valueName: "id"))
    var tokenID: String?
    @Option(
        name: .customLong("session"),
        help: ArgumentHelp("Only this session's events (wire session or HTTP request id).", valueName: "id"))
    var sessionID: String?
    @Option(
        help: ArgumentHelp(
            "Only these kinds (repeatable): auth, session, statement, token, policy, checkpoint, access.",
            valueName: "kind"))
    var kind: [String] = []
    @Option(help: ArgumentHelp("From this long ago (e.g. 1h) or this time (RFC 3339).", valueName: "when"))
    var since: String?
    @Option(help: ArgumentHelp("Up to this long ago or this time.", valueName: "when")) var until: String?
    @Option(help: "At most this many events (the latest).") var limit = 100
    @Option(help: "text, or json: one object per line.") var format: OutputFormat = .text
    @Flag(help: "Keep running and print new events as they are written.") var follow = false

    func validate() throws {
        for k in kind where AuditEvent.Kind(rawValue: k) == nil {
            throw ValidationError(
                "--kind: unknown kind '\(k)' (use \(AuditEvent.Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        _ = try Self.time(since, flag: "--since")
        _ = try Self.time(until, flag: "--until")
        if limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    static func time(_ text: String?, flag: String) throws -> Date? {
        guard let text else { return nil }
        if let date = PointInTime.parse(text) { return date }
        throw ValidationError(
            "\(flag): expected a duration (1h, 30m, 7d) or a time (2026-11-29T10:00:00Z), got '\(text)'")
    }

    func run() async throws {
        let loaded = try policy.load()
        let store = try await storeOptions.open(policy: loaded, policyPath: policy.path)
        defer { Task { await store.close() } }
        var query = AuditQuery()
        query.kinds = kind.compactMap(AuditEvent.Kind.init)
        query.service = service
        query.tokenID = tokenID
        query.sessionID = sessionID
        query.since = try Self.time(since, flag: "--since")
        query.until = try Self.time(until, flag: "--until")
        query.limit = limit
        var follower: AuditFollower?
        do {
            // Where each chain stands before the page is read: what follows it is new.
            let heads = follow ? try await store.auditHeads() : []
            let events = try await store.auditEvents(query).reversed()
            for event in events { print(AuditFormat.render(event, format)) }
            if follow {
                follower = AuditFollower(query: query, after: heads)
                follower?.saw(Array(events))
            }
        } catch {
            throw CLIError("\(error)")
        }
        guard var follower else { return }
        fflush(nil)
        while !Task.isCancelled {
            do {
                let events = try await follower.poll(store)
                for event in events { print(AuditFormat.render(event, format)) }
                if !events.isEmpty { fflush(nil) }
            } catch {
                Terminal.note("rolegate audit --follow: \(error) (retrying)")
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Walk every audit chain and report the first broken, missing or reordered event.",
        discussion: "Exit 0: every chain is intact. Exit 2: a chain is broken (the event is named). Exit 1: error.")

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var storeOptions: StoreOptions

    func run() async throws {
        let loaded = try policy.load()
        let store = try await storeOptions.open(policy: loaded, policyPath: policy.path)
        var broken = false
        do {
            let reports = try await store.verifyAuditChains()
            for report in reports {
                if let problem = report.problem {
                    broken = true
                    print("BROKEN \(problem)")
                } else {
                    print("ok     chain \(report.instance): \(report.events) events, last #\(report.lastSequence)")
                }
            }
            if reports.isEmpty { print("no audit events yet") }
        } catch {
            await store.close()
            throw CLIError("\(error)")
        }
        await store.close()
        if broken { throw ExitCode(2) }
    }
}

/// How events are printed: one line of text, or one JSON object per line (the schema is in the README).
enum AuditFormat {
    static func render(_ e: AuditEvent, _ format: OutputFormat) -> String {
        switch format {
        case .json: return json(e)
        case .text: return text(e)
        }
    }

    static func text(_ e: AuditEvent) -> String {
        var parts = [e.at.rfc3339Milliseconds, "\(e.kind.rawValue) \(e.action)"]
        if let service = e.service { parts.append("service=\(service)") }
        if let token = e.tokenID { parts.append("token=\(token)") }
        if let role = e.role { parts.append("role=\(role)") }
        if let database = e.database { parts.append("db=\(database)") }
        if let session = e.sessionID { parts.append("session=\(session)") }
        if let client = e.client { parts.append("client=\(client)") }
        if let state = e.sqlState { parts.append("sqlstate=\(state)") }
        if let rows = e.rows { parts.append("rows=\(rows)") }
        if let micros = e.durationMicros { parts.append(String(format: "%.3fms", Double(micros) / 1000)) }
        for key in e.detail.keys.sorted() { parts.append("\(key)=\(quoted(e.detail[key]!))") }
        if let sql = e.sql { parts.append("sql=\(quoted(sql))") }
        return parts.joined(separator: " ")
    }

    private static func quoted(_ text: String) -> String {
        let simple = !text.isEmpty && text.allSatisfy { $0.isLetter || $0.isNumber || "._:@-/".contains($0) }
        if simple { return text }
        let escaped = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
        return "\"\(escaped)\""
    }

    static func json(_ e: AuditEvent) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: e.jsonObject, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
