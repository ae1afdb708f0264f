import Foundation

/// What a grant is `on:`. Names follow SQL rules: unquoted names fold to lower case,
/// `"Quoted"` names are exact; an unqualified table, sequence or function is in `public`.
public enum GrantTarget: Sendable, Hashable, CustomStringConvertible {
    /// The role's own database.
    case database
    case schema(String)
    case table(schema: String, name: String)
    case allTablesInSchema(String)
    case sequence(schema: String, name: String)
    case allSequencesInSchema(String)
    /// `arguments` is the argument type list as written, resolved by PostgreSQL
    /// (`to_regprocedure`) at plan time.
    case function(schema: String, name: String, arguments: String)
    case allFunctionsInSchema(String)

    public var kind: ObjectKind {
        switch self {
        case .database: .database
        case .schema: .schema
        case .table, .allTablesInSchema: .table
        case .sequence, .allSequencesInSchema: .sequence
        case .function, .allFunctionsInSchema: .function
        }
    }

    /// `ALL ... IN SCHEMA s`: the only form `future: true` applies to.
    public var isSchemaWide: Bool {
        switch self {
        case .allTablesInSchema, .allSequencesInSchema, .allFunctionsInSchema: true
        default: false
        }
    }

    /// Canonical SQL spelling, every identifier quoted.
    public var description: String {
        switch self {
        case .database: "DATABASE"
        case .schema(let s): "SCHEMA \(SQLQuote.ident(s))"
        case .table(let s, let n): "TABLE \(SQLQuote.qualified(s, n))"
        case .allTablesInSchema(let s): "ALL TABLES IN SCHEMA \(SQLQuote.ident(s))"
        case .sequence(let s, let n): "SEQUENCE \(SQLQuote.qualified(s, n))"
        case .allSequencesInSchema(let s): "ALL SEQUENCES IN SCHEMA \(SQLQuote.ident(s))"
        case .function(let s, let n, let args): "FUNCTION \(SQLQuote.qualified(s, n))(\(args))"
        case .allFunctionsInSchema(let s): "ALL FUNCTIONS IN SCHEMA \(SQLQuote.ident(s))"
        }
    }
}

extension GrantTarget {
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    static let forms =
        "DATABASE, SCHEMA s, TABLE s.t, ALL TABLES IN SCHEMA s, SEQUENCE s.q, "
        + "ALL SEQUENCES IN SCHEMA s, FUNCTION s.f(argtypes), ALL FUNCTIONS IN SCHEMA s"

    /// Parses the text of an `on:` value.
    public static func parse(_ text: String) throws(ParseError) -> GrantTarget {
        var scanner = ObjectNameScanner(text)
        guard let first = scanner.keyword() else {
            throw ParseError(message: "expected one of: \(forms)")
        }
        let target: GrantTarget
        switch first {
        case "DATABASE":
            target = .database
        case "SCHEMA":
            target = .schema(try scanner.name(what: "schema name"))
        case "TABLE":
            let (s, n) = try scanner.qualifiedName(what: "table name")
            target = .table(schema: s, name: n)
        case "SEQUENCE":
            let (s, n) = try scanner.qualifiedName(what: "sequence name")
            target = .sequence(schema: s, name: n)
        case "FUNCTION":
            let (s, n) = try scanner.qualifiedName(what: "function name")
            let args = try scanner.argumentList()
            target = .function(schema: s, name: n, arguments: args)
        case "ALL":
            let plural = scanner.keyword()
            guard scanner.keyword() == "IN", scanner.keyword() == "SCHEMA" else {
                throw ParseError(message: "expected ALL TABLES|SEQUENCES|FUNCTIONS IN SCHEMA <schema>")
            }
            let schema = try scanner.name(what: "schema name")
            switch plural {
            case "TABLES": target = .allTablesInSchema(schema)
            case "SEQUENCES": target = .allSequencesInSchema(schema)
            case "FUNCTIONS": target = .allFunctionsInSchema(schema)
            default: throw ParseError(message: "expected ALL TABLES|SEQUENCES|FUNCTIONS IN SCHEMA <schema>")
            }
        default:
            throw ParseError(message: "unknown object type '\(first)'; expected one of: \(forms)")
        }
        guard scanner.atEnd else {
            throw ParseError(message: "unexpected text after \(target): '\(scanner.rest)'")
        }
        return target
    }
}

/// A small scanner for the SQL-like object names of `on:`.
struct ObjectNameScanner {
    private let scalars: [Unicode.Scalar]
    private var position = 0

    init(_ text: String) {
        scalars = Array(text.unicodeScalars)
    }

    var atEnd: Bool {
        mutating get {
            skipSpace()
            return position == scalars.count
        }
    }

    var rest: String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars[position...])
        return String(s)
    }

    private mutating func skipSpace() {
        while position < scalars.count, scalars[position].properties.isWhitespace { position += 1 }
    }

    /// An unquoted word, upper-cased; nil when the next token is not a bare word.
    mutating func keyword() -> String? {
        skipSpace()
        let start = position
        while position < scalars.count, Self.isIdentifierChar(scalars[position]) { position += 1 }
        guard position > start else { return nil }
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars[start..<position])
        return String(s).uppercased()
    }

    static func isIdentifierStart(_ c: Unicode.Scalar) -> Bool {
        c == "_" || (c.properties.isAlphabetic)
    }

    static func isIdentifierChar(_ c: Unicode.Scalar) -> Bool {
        isIdentifierStart(c) || ("0"..."9").contains(c) || c == "$"
    }

    /// One identifier: `"Quoted ""Name"""` exactly, or a bare word folded to lower case.
    mutating func name(what: String) throws(GrantTarget.ParseError) -> String {
        skipSpace()
        guard position < scalars.count else {
            throw GrantTarget.ParseError(message: "expected a \(what)")
        }
        var result = String.UnicodeScalarView()
        if scalars[position] == "\"" {
            position += 1
            while true {
                guard position < scalars.count else {
                    throw GrantTarget.ParseError(message: "unterminated quoted \(what)")
                }
                let c = scalars[position]
                position += 1
                if c == "\"" {
                    if position < scalars.count, scalars[position] == "\"" {
                        result.append("\"")
                        position += 1
                    } else {
                        break
                    }
                } else {
                    result.append(c)
                }
            }
            guard !result.isEmpty else {
                throw GrantTarget.ParseError(message: "empty quoted \(what)")
            }
            return String(result)
        }
        guard Self.isIdentifierStart(scalars[position]) else {
            throw GrantTarget.ParseError(message: "expected a \(what), found '\(rest)'")
        }
        while position < scalars.count, Self.isIdentifierChar(scalars[position]) {
            result.append(scalars[position])
            position += 1
        }
        return String(result).lowercased()
    }

    /// `schema.name`, or `name` (in `public`).
    mutating func qualifiedName(what: String) throws(GrantTarget.ParseError) -> (String, String) {
        let first = try name(what: what)
        skipSpace()
        if position < scalars.count, scalars[position] == "." {
            position += 1
            let second = try name(what: what)
            return (first, second)
        }
        return ("public", first)
    }

    /// `( argtypes )` as written, inner text trimmed; required for functions.
    mutating func argumentList() throws(GrantTarget.ParseError) -> String {
        skipSpace()
        guard position < scalars.count, scalars[position] == "(" else {
            throw GrantTarget.ParseError(
                message: "a function needs its argument types, e.g. FUNCTION s.f(date) or s.f()")
        }
        position += 1
        var depth = 1
        var inner = String.UnicodeScalarView()
        var inQuotes = false
        while position < scalars.count {
            let c = scalars[position]
            position += 1
            if c == "\"" { inQuotes.toggle() }
            if !inQuotes {
                if c == "(" { depth += 1 }
                if c == ")" {
                    depth -= 1
                    if depth == 0 {
                        return String(inner).trimmingCharacters(in: .whitespaces)
                    }
                }
                if c == ";" {
                    throw GrantTarget.ParseError(message: "';' is not allowed in a function signature")
                }
            }
            inner.append(c)
        }
        throw GrantTarget.ParseError(message: "missing ')' after the function's argument types")
    }
}
