/// One problem found in a policy file: where, which key, what is wrong.
public struct PolicyIssue: Sendable, Hashable, CustomStringConvertible {
    public var location: SourceLocation?
    /// Dotted path to the key, e.g. `roles.analytics_ro.grants[1].privileges`.
    public var keyPath: String
    public var message: String

    public init(location: SourceLocation?, keyPath: String, message: String) {
        self.location = location
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        let prefix = location.map { "\($0): " } ?? ""
        let key = keyPath.isEmpty ? "" : "\(keyPath): "
        return prefix + key + message
    }
}

/// A policy that cannot be used. Lists every problem found, each with file, line and column.
public struct PolicyError: Error, Sendable, CustomStringConvertible {
    public var issues: [PolicyIssue]

    public init(issues: [PolicyIssue]) {
        self.issues = issues
    }

    public init(_ issue: PolicyIssue) {
        self.issues = [issue]
    }

    public var description: String {
        issues.map(\.description).joined(separator: "\n")
    }
}
