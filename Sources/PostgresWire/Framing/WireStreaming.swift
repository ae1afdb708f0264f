public import NIOCore

/// Passing one large protocol message through a relay as its bytes arrive, instead of holding it
/// whole first: memory per connection stays bounded by the read size, and the message is copied
/// once. Pure: the relay asks ``head(of:limits:)`` whether its buffer starts a large message, then
/// counts the message's bytes down with ``begin(messageBytes:)`` and ``take(_:)``.
public struct WireStreaming: Sendable {
    /// Messages at least this long (type byte and length included) pass through as they arrive.
    public static let threshold = 1 << 20
    /// How much of a large message's body a relay keeps to look at (the audit's SQL text limit).
    public static let prefixLength = 64 * 1024

    /// Bytes of the current message still to pass through.
    public private(set) var remaining = 0

    public init() {}

    /// The start of a large message at the front of `buffer`.
    public struct Head: Sendable {
        public var type: UInt8
        /// Type byte, length field and body.
        public var totalLength: Int
        /// The first ``prefixLength`` bytes of the body (all of it if shorter).
        public var prefix: ByteBuffer
    }

    /// `buffer` starts with a message of at least ``threshold`` bytes that is not complete yet, and
    /// holds at least its head (``prefixLength`` bytes of body): nil otherwise (a small message, a
    /// complete one, or too few bytes so far). A message over `limits` is the framing's to refuse.
    public static func head(of buffer: ByteBuffer, limits: WireLimits = .init()) -> Head? {
        let start = buffer.readerIndex
        guard buffer.readableBytes >= 5, let type = buffer.getInteger(at: start, as: UInt8.self),
            let length = buffer.getInteger(at: start + 1, as: Int32.self).map(Int.init),
            length >= 4, length <= limits.maxMessageLength, 1 + length >= threshold,
            buffer.readableBytes < 1 + length
        else { return nil }
        let prefix = min(length - 4, prefixLength)
        guard buffer.readableBytes >= 5 + prefix, let body = buffer.getSlice(at: start + 5, length: prefix) else {
            return nil
        }
        return Head(type: type, totalLength: 1 + length, prefix: body)
    }

    /// A large message of `messageBytes` bytes starts: its bytes are counted from here.
    public mutating func begin(messageBytes: Int) {
        precondition(remaining == 0, "a message began inside another")
        remaining = messageBytes
    }

    /// How many of `available` bytes belong to the current message; counts them off.
    public mutating func take(_ available: Int) -> Int {
        let count = min(available, remaining)
        remaining -= count
        return count
    }
}
