import Foundation

/// Quoting for SQL text that Rolegate generates. Every identifier is quoted, always:
/// names with capitals, spaces, quotes or semicolons work, and nothing a policy holds
/// can end up as SQL syntax.
public enum SQLQuote {
    /// `"name"` with embedded double quotes doubled.
    public static func ident(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `"schema"."name"`.
    public static func qualified(_ schema: String, _ name: String) -> String {
        ident(schema) + "." + ident(name)
    }

    /// A standard-conforming string literal: `'it''s'`. Backslashes are not special
    /// (`standard_conforming_strings` is on in every supported PostgreSQL); a literal
    /// holding one is written in the `E''` form so it reads the same either way.
    public static func literal(_ value: String) -> String {
        let needsEscapes = value.unicodeScalars.contains { $0 == "\\" || $0.properties.generalCategory == .control }
        guard needsEscapes else {
            return "'" + value.replacingOccurrences(of: "'", with: "''") + "'"
        }
        // E'' form: backslash escapes, so line breaks stay visible on one line of output.
        var out = "E'"
        for scalar in value.unicodeScalars {
            switch scalar {
            case "'": out += "''"
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.properties.generalCategory == .control:
                out +=
                    "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                    + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "'"
    }
}
