/// What a person may do in the console (`console:` in the policy). Each level includes the
/// ones below it.
public enum ConsoleRole: String, Sendable, Comparable, CaseIterable {
    /// Read every page; act on nothing (beyond their own access requests).
    case viewer
    /// Also end sessions and revoke tokens: what on-call needs at 3 a.m.
    case `operator`
    /// Everything: issue and rotate tokens, run a plan.
    case admin

    var rank: Int {
        switch self {
        case .viewer: 0
        case .operator: 1
        case .admin: 2
        }
    }

    public static func < (a: ConsoleRole, b: ConsoleRole) -> Bool { a.rank < b.rank }
}

/// `console: {admin: […], operator: […], viewer: […]}`: who gets which console role, as people
/// (their email), `group:NAME` or `service:NAME`. A token of an admin service (`admin: true`) is
/// always `admin`; anyone else named nowhere sees only their own access requests.
public struct ConsoleSettings: Sendable, Equatable {
    public var members: [ConsoleRole: [Principal]] = [:]

    public init(members: [ConsoleRole: [Principal]] = [:]) {
        self.members = members
    }

    /// The highest role a caller holds, if any.
    public func role(login: String, groups: [String], isService: Bool, isAdminService: Bool) -> ConsoleRole? {
        if isAdminService { return .admin }
        return ConsoleRole.allCases.sorted(by: >).first { role in
            (members[role] ?? []).contains { $0.includes(login: login, groups: groups, isService: isService) }
        }
    }
}
