public import Foundation

/// Points in time as users write them: a duration ago (`1h`, `7d`) or an RFC 3339 time or
/// date. One reading for `rolegate audit --since/--until` and the admin API's audit filters.
public enum PointInTime {
    public static func parse(_ text: String, now: Date = Date()) -> Date? {
        if let duration = try? DurationText.parse(text) { return now.addingTimeInterval(-duration.timeInterval) }
        if let date = Date(rfc3339: text) { return date }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate]
        return formatter.date(from: text)
    }
}

extension Date {
    /// An RFC 3339 time, with or without fractional seconds (what Rolegate's APIs write).
    public init?(rfc3339 text: String) {
        let formatter = ISO8601DateFormatter()
        for options: ISO8601DateFormatter.Options in [
            [.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime],
        ] {
            formatter.formatOptions = options
            if let date = formatter.date(from: text) {
                self = date
                return
            }
        }
        return nil
    }
}

/// `host:port` as `--listen`, `--http` and the `gateway:` keys take it (`[::1]:6432` for IPv6;
/// an empty host means every address).
public enum HostPort {
    public static func parse(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}

/// Random identifiers for sessions and requests: lowercase Crockford-style base32 (no i, l, o, u).
public enum RandomID {
    /// `length` characters from a 32-symbol alphabet (5 random bits each; 12 per random word).
    public static func make(length: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: length)
        var word: UInt64 = 0
        for index in 0..<length {
            if index % 12 == 0 { word = generator.next() }
            bytes[index] = alphabet[Int(word & 31)]
            word >>= 5
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The 32 symbols ids are written in (no i, l, o, u).
    public static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
}

extension Date {
    /// RFC 3339 with milliseconds, e.g. `2026-11-29T03:28:14.406Z`: audit events and JSON logs.
    /// Written by hand from the UTC calendar fields: an `ISO8601DateFormatter` made per call
    /// cost ~0.1 ms, which every JSON log line paid.
    public var rfc3339Milliseconds: String {
        // To the nearest millisecond: a time made from whole milliseconds (Date(milliseconds:))
        // can sit a hair below its value in floating point.
        let milliseconds = Int64((timeIntervalSince1970 * 1000).rounded())
        let (secondsPart, millisecondPart) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        // Floor division, so times before 1970 keep a positive millisecond part.
        var seconds = time_t(millisecondPart < 0 ? secondsPart - 1 : secondsPart)
        let millis = Int(millisecondPart < 0 ? millisecondPart + 1000 : millisecondPart)
        var fields = tm()
        guard gmtime_r(&seconds, &fields) != nil else { return "\(milliseconds)ms" }
        var out: [UInt8] = []
        out.reserveCapacity(24)
        // Written digit by digit (every log line has a time: a String per field showed in profiles).
        func digits(_ value: Int, _ width: Int) {
            var scale = 1
            for _ in 1..<width { scale *= 10 }
            guard value >= 0, value < scale * 10 else { return out.append(contentsOf: String(value).utf8) }
            while scale > 0 {
                out.append(UInt8(ascii: "0") + UInt8(value / scale % 10))
                scale /= 10
            }
        }
        digits(Int(fields.tm_year) + 1900, 4)
        out.append(UInt8(ascii: "-"))
        digits(Int(fields.tm_mon) + 1, 2)
        out.append(UInt8(ascii: "-"))
        digits(Int(fields.tm_mday), 2)
        out.append(UInt8(ascii: "T"))
        digits(Int(fields.tm_hour), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(fields.tm_min), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(fields.tm_sec), 2)
        out.append(UInt8(ascii: "."))
        digits(millis, 3)
        out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }
}

extension Sequence where Element == UInt8 {
    /// Lowercase hexadecimal, two digits a byte (digests, MACs, nonces).
    public var hexString: String {
        map { String(format: "%02x", $0) }.joined()
    }
}

/// Text placed in HTML: `&`, `<`, `>`, `"` and `'` as entities, so a value can never become
/// markup or leave an attribute (the console's pages, the login's loopback page).
public enum HTMLText {
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
