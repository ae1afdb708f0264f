import ArgumentParser
import Foundation
import RolegateCore
import RolegateProvision

struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Make PostgreSQL match the policy.",
        discussion: """
            Shows the plan, asks for confirmation, then runs it in one transaction per database, \
            re-checking under a lock that nothing changed since the plan was shown and that the \
            database matches the policy afterwards (otherwise it rolls back). Creates the master \
            key on first use. --yes is required when standard input is not a terminal.
            """)

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var selection: DatabaseSelection

    @Flag(help: "Apply without asking.")
    var yes = false

    @Option(
        name: .customLong("reassign-owned-to"),
        help: ArgumentHelp(
            "When dropping a role that owns objects, give them to this role first.", valueName: "role"))
    var reassignOwnedTo: String?

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func validate() throws {
        if !yes, !Terminal.stdinIsTerminal {
            throw ValidationError("standard input is not a terminal: pass --yes to apply without confirmation")
        }
    }

    func run() async throws {
        let loaded = try policy.load()
        let databases = try selection.select(from: loaded)
        let keyPath = MasterKeySupport.path(for: loaded)
        var key = try MasterKeySupport.loadIfPresent(for: loaded)
        if key == nil {
            do {
                key = try MasterKeyFile.create(at: keyPath)
            } catch {
                throw CLIError(error.description)
            }
            Terminal.note("Created master key \(keyPath) (0600). Back it up: role credentials derive from it.")
        }
        let provisioner = Provisioner(policy: loaded, key: key, reassignOwnedTo: reassignOwnedTo)
        var plans: [DatabasePlan] = []
        for database in databases {
            plans.append(try await provisioner.plan(database))
        }
        if format == .text { print(PlanRenderer.text(plans), terminator: "") }
        let pending = plans.filter { !$0.inSync }
        if pending.isEmpty {
            if format == .json { print(PlanRenderer.json(plans), terminator: "") }
            if format == .text { print("Nothing to apply: PostgreSQL matches the policy.") }
            return
        }
        let blockers = pending.flatMap { plan in plan.blockers.map { "database \(plan.database): \($0)" } }
        if !blockers.isEmpty {
            throw CLIError("apply refused:\n  " + blockers.joined(separator: "\n  "))
        }
        if !yes {
            FileHandle.standardError.write(Data("Apply these changes? Type 'yes' to continue: ".utf8))
            guard readLine()?.trimmingCharacters(in: .whitespaces).lowercased() == "yes" else {
                throw CLIError("apply cancelled; nothing was changed")
            }
        }
        var applied: [DatabasePlan] = []
        for plan in pending {
            guard let database = loaded.database(named: plan.database) else { continue }
            let result = try await provisioner.apply(database, expected: plan.statements.map(\.display))
            applied.append(result.plan)
            // Credentials appear as PASSWORD '***': the display form, never the SQL sent.
            await AuditSupport.record(
                [
                    AuditEvent(
                        kind: .policy, action: "applied", database: plan.database,
                        sql: result.plan.statements.map(\.display).joined(separator: "\n"),
                        detail: [
                            "by": AuditSupport.actor, "policy": policy.path,
                            "statements": String(result.plan.statements.count),
                            "sessions_ended": String(result.sessionsEnded),
                        ])
                ], policy: loaded, policyPath: policy.path, storeOptions: storeOptions)
            for warning in result.warnings { Terminal.note("warning: \(warning)") }
            if format == .text {
                var line =
                    "Applied \(result.plan.statements.count) statement(s) to \(plan.database) in one transaction."
                if result.sessionsEnded > 0 { line += " Ended \(result.sessionsEnded) session(s) of dropped roles." }
                print(line)
            }
        }
        switch format {
        case .text:
            let s = PlanRenderer.Summary(applied)
            print("Apply complete: \(s.create) created, \(s.change) changed, \(s.drop) dropped.")
        case .json: print(PlanRenderer.json(applied), terminator: "")
        }
    }
}
