/// Writes JSON straight into UTF-8 bytes, for the hot paths: the data API's responses and
/// each audit event's `detail`. Foundation's `JSONSerialization` bridges every value to an
/// object, sorts keys and formats numbers through `NSNumber`, and cost more of a `/v1/query`
/// request than the query itself.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func raw(_ text: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Text that is already JSON (PostgreSQL's `json`/`jsonb` output).
    public mutating func rawJSON(_ text: String) {
        verbatim(text)
    }

    /// `text`'s UTF-8 bytes as they are, for a buffer that holds other text beside JSON.
    public mutating func verbatim(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    /// Empties the buffer but keeps its storage, for a writer reused from one document to the next.
    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
    }

    public mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            // Runs of bytes that need no escape are copied whole (most strings are one run).
            var run = 0
            for index in utf8.indices {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<index]))
                escape(byte)
                run = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func escape(_ byte: UInt8) {
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"):
            bytes.append(UInt8(ascii: "\\"))
            bytes.append(byte)
        case UInt8(ascii: "\n"):
            raw("\\n")
        case UInt8(ascii: "\r"):
            raw("\\r")
        case UInt8(ascii: "\t"):
            raw("\\t")
        default:
            raw("\\u00")
            bytes.append(Self.hex[Int(byte >> 4)])
            bytes.append(Self.hex[Int(byte & 0x0F)])
        }
    }

    public mutating func number(_ value: Int64) {
        bytes.append(contentsOf: String(value).utf8)
    }

    /// A finite double, in Swift's shortest round-tripping form (`1.5`, `1e+20`).
    public mutating func number(_ value: Double) {
        precondition(value.isFinite, "JSON has no NaN or infinity")
        bytes.append(contentsOf: value.description.utf8)
    }

    public mutating func bool(_ value: Bool) {
        value ? raw("true") : raw("false")
    }

    public mutating func null() {
        raw("null")
    }

    /// `[item, item, …]`, each written by `element`.
    @inlinable
    public mutating func array<S: Sequence>(_ items: S, _ element: (inout JSONWriter, S.Element) -> Void) {
        raw("[")
        var first = true
        for item in items {
            if !first { raw(",") }
            first = false
            element(&self, item)
        }
        raw("]")
    }

    /// `{"key":"value",…}` with the keys sorted (audit details, JSON log lines).
    public mutating func object(_ fields: [String: String]) {
        raw("{")
        var first = true
        func pair(_ key: String, _ value: String) {
            if !first { raw(",") }
            first = false
            string(key)
            raw(":")
            string(value)
        }
        fields.forEachInKeyOrder(pair)
        raw("}")
    }

    /// Writes `"key":` (keys the caller spells, already valid JSON strings).
    public mutating func key(_ name: StaticString) {
        bytes.append(UInt8(ascii: "\""))
        raw(name)
        raw("\":")
    }

    private static let hex = Array("0123456789abcdef".utf8)
}

extension Dictionary where Key == String {
    /// The pairs in key order; up to two (an audit event's usual detail) without sorting a copy.
    func forEachInKeyOrder(_ body: (String, Value) -> Void) {
        switch count {
        case 0:
            return
        case 1:
            let (key, value) = first!
            body(key, value)
        case 2:
            var pairs = makeIterator()
            let a = pairs.next()!
            let b = pairs.next()!
            let (low, high) = a.key < b.key ? (a, b) : (b, a)
            body(low.key, low.value)
            body(high.key, high.value)
        default:
            for (key, value) in sorted(by: { $0.key < $1.key }) { body(key, value) }
        }
    }
}
