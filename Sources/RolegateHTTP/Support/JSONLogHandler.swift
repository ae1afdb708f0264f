import Foundation
public import Logging
import RolegateCore

/// One JSON object per line on stderr: `ts`, `level`, `label`, `message` and the metadata,
/// keys sorted.
///
/// Written with ``JSONWriter`` in one `write(2)`: the first version (a fresh date formatter
/// and `JSONSerialization` per line) cost more than the request it logged (~0.2 ms per
/// `/v1/query` access-log line).
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = event.metadata.map { metadata.merging($0, uniquingKeysWith: { $1 }) } ?? metadata
        var fields = merged.mapValues { "\($0)" }
        // These four are the line's own: metadata of the same name does not replace them.
        fields["ts"] = Date().rfc3339Milliseconds
        fields["level"] = event.level.rawValue
        fields["label"] = label
        fields["message"] = event.message.description
        var out = JSONWriter(capacity: 256)
        out.object(fields)
        out.raw("\n")
        Self.writeToStandardError(out.bytes)
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
