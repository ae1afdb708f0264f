import Foundation
import RolegateCore

/// What the contract constrains that the generated code does not check: the patterns and
/// lengths of `openapi.yaml`'s strings, each checked exactly as the document states it (a test
/// holds these to the document's own patterns), then parsed. A value the document refuses is
/// 400 `bad_request` naming the field; one it allows is never refused for its form.
enum ContractFormats {
    /// `Duration`: 1 to 4 components of 1 to 9 digits and a unit (ms, s, m, h, d).
    static func isDuration(_ text: Substring) -> Bool {
        var rest = text[...]
        var components = 0
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard (1...9).contains(digits.count) else { return false }
            rest = rest.dropFirst(digits.count)
            if rest.hasPrefix("ms") {
                rest = rest.dropFirst(2)
            } else if let unit = rest.first, "smhd".contains(unit) {
                rest = rest.dropFirst()
            } else {
                return false
            }
            components += 1
        }
        return (1...4).contains(components)
    }

    /// `PointInTime`: a duration ago, or an RFC 3339 date or time (`2026-12-01`,
    /// `2026-12-01T09:30:00Z`, `…T09:30:00.125+02:00`).
    static func isPointInTime(_ text: String) -> Bool {
        if isDuration(text[...]) { return true }
        let c = Array(text.utf8)
        func digits(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= c.count, range.allSatisfy({ (0x30...0x39).contains(c[$0]) }) else { return nil }
            return range.reduce(0) { $0 * 10 + Int(c[$1] - 0x30) }
        }
        guard c.count >= 10, digits(0..<4) != nil, c[4] == UInt8(ascii: "-"), let month = digits(5..<7),
            (1...12).contains(month), c[7] == UInt8(ascii: "-"), let day = digits(8..<10), (1...31).contains(day)
        else { return false }
        if c.count == 10 { return true }
        guard c.count >= 20, c[10] == UInt8(ascii: "T"), let hour = digits(11..<13), hour <= 23,
            c[13] == UInt8(ascii: ":"), let minute = digits(14..<16), minute <= 59, c[16] == UInt8(ascii: ":"),
            let second = digits(17..<19), second <= 59
        else { return false }
        var at = 19
        if c[at] == UInt8(ascii: ".") {
            var count = 0
            at += 1
            while at < c.count, (0x30...0x39).contains(c[at]) {
                count += 1
                at += 1
            }
            guard (1...3).contains(count) else { return false }
        }
        guard at < c.count else { return false }
        if c[at] == UInt8(ascii: "Z") { return at + 1 == c.count }
        guard c[at] == UInt8(ascii: "+") || c[at] == UInt8(ascii: "-"), c.count == at + 6,
            let offsetHours = digits((at + 1)..<(at + 3)), offsetHours <= 23, c[at + 3] == UInt8(ascii: ":"),
            let offsetMinutes = digits((at + 4)..<(at + 6)), offsetMinutes <= 59
        else { return false }
        return true
    }

    /// The longest free text (`note`, `reason`) a request may carry.
    static let textLimit = 500

    static func duration(_ text: String?, _ name: String) throws(Problem) -> Duration? {
        guard let text else { return nil }
        guard isDuration(text[...]), let duration = try? DurationText.parse(text) else {
            throw Problem.badRequest(
                "'\(name)' must be a duration such as 30s, 15m, 1h30m or 7d (got \"\(text.prefix(40))\")")
        }
        return duration
    }

    static func pointInTime(_ text: String?, _ name: String) throws(Problem) -> Date? {
        guard let text else { return nil }
        guard isPointInTime(text), let date = PointInTime.parse(text) else {
            throw Problem.badRequest(
                "'\(name)' must be a duration ago (1h) or an RFC 3339 time or date (got \"\(text.prefix(40))\")")
        }
        return date
    }

    static func text(_ text: String?, _ name: String) throws(Problem) -> String? {
        guard let text else { return nil }
        guard text.unicodeScalars.count <= textLimit else {
            throw Problem.badRequest("'\(name)' is longer than \(textLimit) characters")
        }
        return text
    }
}
