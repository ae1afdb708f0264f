import Foundation
public import Logging
import RolegateCore

/// One line per event on stderr, in one `write(2)`, with the metadata formatted only when a
/// line is written.
///
/// - `text`: as swift-log's `StreamLogHandler` writes it (`time level label : key=value …
///   [source] message`), the time in RFC 3339 UTC. `StreamLogHandler` formats its metadata
///   each time a key is set, and Hummingbird sets one on every request's logger: with the
///   access line that was ~3% of a `/v1/query` request's CPU.
/// - `json`: one object with `ts`, `level`, `label`, `message` and the metadata, keys sorted.
///   The first version (a fresh date formatter and `JSONSerialization` per line) cost more
///   than the request it logged (~0.2 ms per `/v1/query` access-log line).
public struct LogLineHandler: LogHandler {
    public enum Format: String, Sendable {
        case text, json
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let format: Format

    public init(label: String, format: Format) {
        self.label = label
        self.format = format
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        Self.writeToStandardError(line(event, time: Date()))
    }

    /// The line for `event` at `time`, newline included.
    func line(_ event: LogEvent, time: Date) -> [UInt8] {
        // The handler's own metadata is usually empty: no merged copy then.
        var merged =
            metadata.isEmpty
            ? event.metadata ?? [:] : event.metadata.map { metadata.merging($0, uniquingKeysWith: { $1 }) } ?? metadata
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        switch format {
        case .text:
            var out: [UInt8] = []
            out.reserveCapacity(192)
            out += time.rfc3339Milliseconds.utf8
            out.append(UInt8(ascii: " "))
            out += event.level.rawValue.utf8
            out.append(UInt8(ascii: " "))
            out += label.utf8
            out += " :".utf8
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                out.append(UInt8(ascii: " "))
                out += key.utf8
                out.append(UInt8(ascii: "="))
                if case .string(let text) = value { out += text.utf8 } else { out += value.description.utf8 }
            }
            out += " [".utf8
            out += event.source.utf8
            out += "] ".utf8
            out += event.message.description.utf8
            out.append(UInt8(ascii: "\n"))
            return out
        case .json:
            var fields = merged.mapValues { "\($0)" }
            // These four are the line's own: metadata of the same name does not replace them.
            fields["ts"] = time.rfc3339Milliseconds
            fields["level"] = event.level.rawValue
            fields["label"] = label
            fields["message"] = event.message.description
            var out = JSONWriter(capacity: 256)
            out.object(fields)
            out.raw("\n")
            return out.bytes
        }
    }

    static func writeToStandardError(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }  // stderr gone: a log line is not worth failing for
                offset += written
            }
        }
    }
}
