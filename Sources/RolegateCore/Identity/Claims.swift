import Foundation

/// A JWT claim's value, whatever its JSON type.
public enum ClaimValue: Sendable, Equatable, Codable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case array([ClaimValue])
    case object([String: ClaimValue])
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([ClaimValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: ClaimValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    /// The value as policy rules compare it: strings as they are, numbers and booleans in their
    /// JSON text; nil for arrays, objects and null (a rule names one value).
    public var text: String? {
        switch self {
        case .string(let value): value
        case .number(let value): value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        case .bool(let value): value ? "true" : "false"
        case .array, .object, .null: nil
        }
    }

    /// The strings of a claim that may hold one or several (`aud`, `groups`).
    public var strings: [String] {
        switch self {
        case .string(let value): [value]
        case .array(let values): values.compactMap { if case .string(let s) = $0 { s } else { nil } }
        default: []
        }
    }
}

/// A policy's condition on one claim: the exact value, or a glob where `*` stands for any run of
/// characters (`refs/heads/release-*`). Nothing else is special: `?`, `[` and `\` match themselves.
public struct ClaimRule: Sendable, Equatable {
    public var claim: String
    public var pattern: String

    public init(claim: String, pattern: String) {
        self.claim = claim
        self.pattern = pattern
    }

    /// Whether `claims` satisfy the rule: the claim is present, a single value (or, for an
    /// array claim such as `groups`, one of its strings) matches the pattern.
    public func matches(_ claims: [String: ClaimValue]) -> Bool {
        guard let value = claims[claim] else { return false }
        if case .array = value { return value.strings.contains { Self.glob(pattern, matches: $0) } }
        guard let text = value.text else { return false }
        return Self.glob(pattern, matches: text)
    }

    /// `*` matches any run of characters (including none); every other character itself.
    public static func glob(_ pattern: String, matches text: String) -> Bool {
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false)
        guard parts.count > 1 else { return pattern == text }
        var rest = Substring(text)
        guard rest.hasPrefix(parts[0]) else { return false }
        rest = rest.dropFirst(parts[0].count)
        for middle in parts.dropFirst().dropLast() where !middle.isEmpty {
            guard let found = rest.range(of: middle) else { return false }
            rest = rest[found.upperBound...]
        }
        let last = parts[parts.count - 1]
        return rest.count >= last.count && rest.hasSuffix(last)
    }
}
