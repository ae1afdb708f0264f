import ArgumentParser
import Foundation
import RolegateCore
import RolegateProvision

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show the SQL that would make PostgreSQL match the policy.",
        discussion: """
            Inspects roles, memberships, settings and the privileges on the database, schemas, tables, \
            columns, sequences, functions and default privileges, and prints per role what apply would run. \
            Changes nothing. With --check: exit 0 when in sync, 2 on drift, 1 on error.
            """)

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var selection: DatabaseSelection

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    @Flag(help: "Exit 2 when the database differs from the policy (for CI).")
    var check = false

    @Option(
        name: .customLong("reassign-owned-to"),
        help: ArgumentHelp("Plan to hand objects owned by roles being dropped to this role.", valueName: "role"))
    var reassignOwnedTo: String?

    func run() async throws {
        let loaded = try policy.load()
        let databases = try selection.select(from: loaded)
        let key = try MasterKeySupport.loadIfPresent(for: loaded)
        let provisioner = Provisioner(policy: loaded, key: key, reassignOwnedTo: reassignOwnedTo)
        var plans: [DatabasePlan] = []
        for database in databases {
            plans.append(try await provisioner.plan(database))
        }
        switch format {
        case .text:
            if key == nil, !plans.allSatisfy(\.inSync) {
                Terminal.note(
                    "note: no master key yet at \(MasterKeySupport.path(for: loaded)); apply will create it (key=pending below)"
                )
            }
            print(PlanRenderer.text(plans), terminator: "")
        case .json:
            print(PlanRenderer.json(plans), terminator: "")
        }
        if check {
            // Every check is recorded, in sync or not: the console's overview shows each
            // database's last result and when it was taken.
            await AuditSupport.record(
                plans.map { plan in
                    AuditEvent(
                        kind: .policy, action: plan.inSync ? "in_sync" : "drift", database: plan.database,
                        sql: plan.inSync ? nil : plan.statements.map(\.display).joined(separator: "\n"),
                        detail: [
                            "by": AuditSupport.actor, "policy": policy.path,
                            "roles": plan.roles.filter { $0.action != .unchanged }.map(\.role).joined(separator: ", "),
                        ])
                }, policy: loaded, policyPath: policy.path, storeOptions: storeOptions)
        }
        if check, !plans.allSatisfy(\.inSync) {
            throw ExitCode(2)
        }
    }
}
