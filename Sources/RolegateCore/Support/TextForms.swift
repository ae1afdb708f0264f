public import Foundation

/// Points in time as users write them: a duration ago (`1h`, `7d`) or an RFC 3339 time or
/// date. One reading for `rolegate audit --since/--until` and the admin API's audit filters.
public enum PointInTime {
    public static func parse(_ text: String, now: Date = Date()) -> Date? {
        if let duration = try? DurationText.parse(text) { return now.addingTimeInterval(-duration.timeInterval) }
        let formatter = ISO8601DateFormatter()
        for options: ISO8601DateFormatter.Options in [
            [.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime], [.withFullDate],
        ] {
            formatter.formatOptions = options
            if let date = formatter.date(from: text) { return date }
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

    private static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
}

extension Date {
    /// RFC 3339 with milliseconds, e.g. `2026-11-29T03:28:14.406Z`: audit events and JSON logs.
    public var rfc3339Milliseconds: String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: self)
    }
}
