import Foundation

/// Durations as written in `rolegate.yaml` and on the command line: a sequence of
/// `<integer><unit>` with units `ms`, `s`, `m`, `h`, `d` (e.g. `90s`, `15m`, `1h30m`, `7d`).
public enum DurationText {
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let text: String
        public var description: String {
            "'\(text)' is not a duration (use e.g. 30s, 15m, 1h30m, 7d)"
        }
    }

    public static func parse(_ text: String) throws(ParseError) -> Duration {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw ParseError(text: text) }
        var total: Int64 = 0  // milliseconds
        var digits = ""
        var index = trimmed.startIndex
        var sawComponent = false
        while index < trimmed.endIndex {
            let character = trimmed[index]
            if character.isASCII, character.isNumber {
                digits.append(character)
                index = trimmed.index(after: index)
                continue
            }
            var unit = ""
            while index < trimmed.endIndex, trimmed[index].isASCII, trimmed[index].isLetter {
                unit.append(trimmed[index])
                index = trimmed.index(after: index)
            }
            guard !digits.isEmpty, let value = Int64(digits) else { throw ParseError(text: text) }
            let factor: Int64
            switch unit {
            case "ms": factor = 1
            case "s": factor = 1000
            case "m": factor = 60_000
            case "h": factor = 3_600_000
            case "d": factor = 86_400_000
            default: throw ParseError(text: text)
            }
            let (product, overflow) = value.multipliedReportingOverflow(by: factor)
            guard !overflow else { throw ParseError(text: text) }
            let (sum, overflow2) = total.addingReportingOverflow(product)
            guard !overflow2 else { throw ParseError(text: text) }
            total = sum
            digits = ""
            sawComponent = true
        }
        guard digits.isEmpty, sawComponent else { throw ParseError(text: text) }
        return .milliseconds(total)
    }

    /// The shortest exact rendering: `1h30m`, `15m`, `250ms`.
    public static func format(_ duration: Duration) -> String {
        var ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        if ms == 0 { return "0s" }
        var parts = ""
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            if ms >= size {
                parts += "\(ms / size)\(unit)"
                ms %= size
            }
        }
        return parts
    }
}
