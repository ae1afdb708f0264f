import Foundation

/// Plans as people read them (`plan`, `apply`) and as CI and tools read them (`--format json`).
public enum PlanRenderer {
    public struct Summary: Sendable, Codable, Equatable {
        public var create: Int
        public var change: Int
        public var drop: Int

        public init(_ plans: [DatabasePlan]) {
            create = plans.reduce(0) { $0 + $1.count(.create) }
            change = plans.reduce(0) { $0 + $1.count(.change) }
            drop = plans.reduce(0) { $0 + $1.count(.drop) }
        }

        public var line: String { "\(create) to create, \(change) to change, \(drop) to drop" }
    }

    public static func text(_ plans: [DatabasePlan]) -> String {
        var out = ""
        for plan in plans {
            out += "Database \(plan.database) (\(plan.target))\n"
            for warning in plan.warnings { out += "  warning: \(warning)\n" }
            for role in plan.roles {
                let sign =
                    switch role.action {
                    case .create: "+"
                    case .change: "~"
                    case .drop: "-"
                    case .unchanged: "="
                    }
                let label = role.action == .unchanged ? "in sync" : role.action.rawValue
                out += "  \(sign) role \(role.role): \(label)\n"
                for blocker in role.blockers { out += "      ! \(blocker)\n" }
                for note in role.notes { out += "      # \(note)\n" }
                for statement in role.statements { out += "      \(statement.display)\n" }
            }
            if plan.roles.isEmpty { out += "  (the policy declares no roles for this database)\n" }
            out += "\n"
        }
        out += "Plan: \(Summary(plans).line).\n"
        return out
    }

    struct JSONPlan: Codable {
        struct Database: Codable {
            var name: String
            var target: String
            var in_sync: Bool
            var warnings: [String]
            var roles: [Role]
        }
        struct Role: Codable {
            var name: String
            var action: String
            var statements: [String]
            var blockers: [String]
            var notes: [String]
        }
        var in_sync: Bool
        var summary: Summary
        var databases: [Database]
    }

    public static func json(_ plans: [DatabasePlan]) -> String {
        let value = JSONPlan(
            in_sync: plans.allSatisfy(\.inSync), summary: Summary(plans),
            databases: plans.map { plan in
                JSONPlan.Database(
                    name: plan.database, target: plan.target, in_sync: plan.inSync, warnings: plan.warnings,
                    roles: plan.roles.map {
                        JSONPlan.Role(
                            name: $0.role, action: $0.action.rawValue, statements: $0.statements.map(\.display),
                            blockers: $0.blockers, notes: $0.notes)
                    })
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data("{}".utf8), as: UTF8.self) + "\n"
    }
}
