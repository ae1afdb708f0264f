import Yams

/// A cursor over a composed YAML document that knows where it is (file, line, column,
/// key path) and reports problems instead of throwing, so one run lists them all.
/// Aliases are followed, but every node visited counts against a budget: a document
/// that expands past it (a "billion laughs") is refused instead of walked.
final class YAMLReport {
    let file: String
    let environment: [String: String]
    var issues: [PolicyIssue] = []
    var visited = 0
    let budget: Int
    var exhausted = false

    init(file: String, environment: [String: String], budget: Int) {
        self.file = file
        self.environment = environment
        self.budget = budget
    }

    func location(_ node: Node) -> SourceLocation? {
        node.mark.map { SourceLocation(file: file, line: $0.line, column: $0.column) }
    }

    func add(_ node: Node?, _ path: String, _ message: String) {
        issues.append(PolicyIssue(location: node.flatMap(location), keyPath: path, message: message))
    }

    /// Counts one node; false (and one issue) once the document has expanded past the budget.
    func visit(_ node: Node, _ path: String) -> Bool {
        if exhausted { return false }
        visited += 1
        if visited > budget {
            exhausted = true
            add(node, path, "the document expands to more than \(budget) nodes (anchors and aliases?); refusing it")
            return false
        }
        return true
    }
}

struct YAMLValue {
    let node: Node
    let path: String
    let report: YAMLReport

    var location: SourceLocation? { report.location(node) }

    func fail(_ message: String) {
        report.add(node, path, message)
    }

    private var kindName: String {
        switch node {
        case .scalar(let s)
        where s.tag == .init(.null) || (s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string)):
            "nothing (null)"
        case .scalar: "a scalar"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    var isNull: Bool {
        if case .scalar(let s) = node, s.style == .plain, ["", "~", "null", "Null", "NULL"].contains(s.string) {
            return true
        }
        return false
    }

    /// The mapping's entries, in order, after checking for unknown and duplicate keys.
    /// `<<` merge keys are honoured (explicit keys win).
    func mapping(allowed: Set<String>? = nil, what: String) -> [(key: String, value: YAMLValue)]? {
        guard report.visit(node, path) else { return nil }
        guard case .mapping(let mapping) = node else {
            fail("expected \(what) (a mapping), found \(kindName)")
            return nil
        }
        var explicit: [(key: String, value: YAMLValue)] = []
        var merged: [(key: String, value: YAMLValue)] = []
        var seen: [String: Node] = [:]
        for (keyNode, valueNode) in mapping {
            guard case .scalar(let keyScalar) = keyNode else {
                report.add(keyNode, path, "keys must be plain strings")
                continue
            }
            let key = keyScalar.string
            if key == "<<", keyScalar.style == .plain {
                let source = YAMLValue(node: valueNode, path: path, report: report)
                let sources: [YAMLValue]
                if case .sequence = valueNode {
                    sources = source.list(what: "mappings to merge") ?? []
                } else {
                    sources = [source]
                }
                for s in sources {
                    merged.append(contentsOf: s.mapping(allowed: allowed, what: what) ?? [])
                }
                continue
            }
            let childPath = path.isEmpty ? key : "\(path).\(key)"
            if seen[key] != nil {
                report.add(keyNode, childPath, "duplicate key '\(key)'")
                continue
            }
            seen[key] = keyNode
            if let allowed, !allowed.contains(key) {
                let suggestion = Self.closest(to: key, in: allowed).map { " (did you mean '\($0)'?)" } ?? ""
                report.add(
                    keyNode, childPath,
                    "unknown key '\(key)'\(suggestion); allowed here: \(allowed.sorted().joined(separator: ", "))")
                continue
            }
            explicit.append((key, YAMLValue(node: valueNode, path: childPath, report: report)))
        }
        for entry in merged where seen[entry.key] == nil {
            seen[entry.key] = entry.value.node
            explicit.append(entry)
        }
        return explicit
    }

    func list(what: String) -> [YAMLValue]? {
        guard report.visit(node, path) else { return nil }
        guard case .sequence(let sequence) = node else {
            fail("expected \(what) (a list), found \(kindName)")
            return nil
        }
        return sequence.enumerated().map { index, child in
            YAMLValue(node: child, path: "\(path)[\(index)]", report: report)
        }
    }

    /// A scalar as text, with `${VAR}` expanded from the environment.
    func string(what: String) -> String? {
        guard report.visit(node, path) else { return nil }
        guard case .scalar(let scalar) = node, !isNull else {
            fail("expected \(what) (a string), found \(kindName)")
            return nil
        }
        switch EnvironmentExpansion.expand(scalar.string, environment: report.environment) {
        case .success(let value): return value
        case .failure(let error):
            fail(error.description)
            return nil
        }
    }

    func int(what: String) -> Int? {
        guard report.visit(node, path) else { return nil }
        guard case .scalar(let scalar) = node, let value = Int(scalar.string) else {
            fail("expected \(what) (a whole number), found '\(scalarText)'")
            return nil
        }
        return value
    }

    func bool(what: String) -> Bool? {
        guard report.visit(node, path) else { return nil }
        guard case .scalar(let scalar) = node else {
            fail("expected \(what) (true or false), found \(kindName)")
            return nil
        }
        switch scalar.string.lowercased() {
        case "true": return true
        case "false": return false
        default:
            fail("expected \(what) (true or false), found '\(scalar.string)'")
            return nil
        }
    }

    func duration(what: String) -> Duration? {
        guard let text = string(what: what) else { return nil }
        do {
            return try DurationText.parse(text)
        } catch {
            fail(error.description)
            return nil
        }
    }

    /// A list of strings, or a single string taken as a one-element list.
    func stringList(what: String) -> [String]? {
        if case .scalar = node, !isNull {
            return string(what: what).map { [$0] }
        }
        guard let items = list(what: what) else { return nil }
        var result: [String] = []
        for item in items {
            guard let s = item.string(what: what) else { return nil }
            result.append(s)
        }
        return result
    }

    private var scalarText: String {
        if case .scalar(let s) = node { return s.string }
        return kindName
    }

    /// The allowed key nearest to a typo, by edit distance.
    static func closest(to key: String, in allowed: Set<String>) -> String? {
        let scored = allowed.map { ($0, editDistance(key.lowercased(), $0)) }
        guard let best = scored.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }) else { return nil }
        return best.1 <= max(2, key.count / 3) ? best.0 : nil
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// `${VAR}` and `${VAR:-default}` in policy values; `$$` is a literal `$`.
public enum EnvironmentExpansion {
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public static func expand(_ text: String, environment: [String: String]) -> Result<String, Failure> {
        guard text.contains("$") else { return .success(text) }
        var output = ""
        var index = text.startIndex
        while index < text.endIndex {
            let c = text[index]
            guard c == "$" else {
                output.append(c)
                index = text.index(after: index)
                continue
            }
            let next = text.index(after: index)
            if next < text.endIndex, text[next] == "$" {
                output.append("$")
                index = text.index(after: next)
                continue
            }
            guard next < text.endIndex, text[next] == "{" else {
                output.append(c)
                index = next
                continue
            }
            guard let close = text[next...].firstIndex(of: "}") else {
                return .failure(Failure(description: "unterminated '${' (write '$$' for a literal '$')"))
            }
            let body = String(text[text.index(after: next)..<close])
            let name: String
            let fallback: String?
            if let range = body.range(of: ":-") {
                name = String(body[..<range.lowerBound])
                fallback = String(body[range.upperBound...])
            } else {
                name = body
                fallback = nil
            }
            guard isVariableName(name) else {
                return .failure(Failure(description: "'${\(body)}' is not a valid variable reference"))
            }
            if let value = environment[name], !value.isEmpty {
                output += value
            } else if let fallback {
                output += fallback
            } else {
                return .failure(
                    Failure(description: "environment variable \(name) is not set (referenced as ${\(name)})"))
            }
            index = text.index(after: close)
        }
        return .success(output)
    }

    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else { return false }
        return name.unicodeScalars.allSatisfy {
            $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)))
        }
    }
}
