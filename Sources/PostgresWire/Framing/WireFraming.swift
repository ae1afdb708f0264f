public import NIOCore

/// Limits the framing enforces before allocating anything.
public struct WireLimits: Sendable {
    /// Largest startup packet (PostgreSQL itself allows 10,000 bytes).
    public var maxStartupLength: Int
    /// Largest regular message.
    public var maxMessageLength: Int

    public init(maxStartupLength: Int = 10_000, maxMessageLength: Int = 1 << 30) {
        self.maxStartupLength = maxStartupLength
        self.maxMessageLength = maxMessageLength
    }
}

public enum FramingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A length field below the minimum (4, or 8 for startup packets).
    case lengthTooShort(Int)
    /// A length field above the limit: refused without reading the body.
    case lengthTooLong(Int, limit: Int)
    /// A startup packet whose content does not parse.
    case malformedStartup(String)

    public var description: String {
        switch self {
        case .lengthTooShort(let length): "invalid message length \(length)"
        case .lengthTooLong(let length, let limit): "message length \(length) exceeds the limit of \(limit) bytes"
        case .malformedStartup(let reason): "invalid startup packet: \(reason)"
        }
    }
}

/// The first packet of a connection: no type byte, a length, then a code.
public enum StartupPacket: Sendable, Equatable {
    case sslRequest
    case gssEncRequest
    case cancel(processID: Int32, secretKey: [UInt8])
    /// Protocol `major.minor` and the parameters (`user`, `database`, `options`, `_pq_.*`, ...), in order.
    case startup(major: Int, minor: Int, parameters: [StartupParameter])

    static let sslCode: Int32 = 80_877_103
    static let gssCode: Int32 = 80_877_104
    static let cancelCode: Int32 = 80_877_102
}

public struct StartupParameter: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// Splits bytes into PostgreSQL protocol packets. Pure and incremental: each call takes
/// what is complete from the front of the buffer and leaves the rest.
public enum WireFraming {
    /// The next startup packet, or nil when more bytes are needed.
    public static func startupPacket(
        from buffer: inout ByteBuffer, limits: WireLimits = .init()
    ) throws(FramingError)
        -> StartupPacket?
    {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return nil }
        guard length >= 8 else { throw .lengthTooShort(Int(length)) }
        guard Int(length) <= limits.maxStartupLength else {
            throw .lengthTooLong(Int(length), limit: limits.maxStartupLength)
        }
        guard buffer.readableBytes >= Int(length) else { return nil }
        var packet = buffer.readSlice(length: Int(length))!
        packet.moveReaderIndex(forwardBy: 4)
        let code = packet.readInteger(as: Int32.self)!
        switch code {
        case StartupPacket.sslCode:
            guard packet.readableBytes == 0 else { throw .malformedStartup("SSLRequest has a body") }
            return .sslRequest
        case StartupPacket.gssCode:
            guard packet.readableBytes == 0 else { throw .malformedStartup("GSSENCRequest has a body") }
            return .gssEncRequest
        case StartupPacket.cancelCode:
            // Protocol 3.0 keys are 4 bytes; 3.2 allows 4 to 256.
            guard let pid = packet.readInteger(as: Int32.self), (4...256).contains(packet.readableBytes) else {
                throw .malformedStartup("CancelRequest of the wrong size")
            }
            return .cancel(processID: pid, secretKey: packet.readBytes(length: packet.readableBytes)!)
        default:
            let major = Int(code >> 16)
            let minor = Int(code & 0xFFFF)
            // Another protocol's body is not ours to parse: the version alone is refused.
            if major != 3 { return .startup(major: major, minor: minor, parameters: []) }
            var parameters: [StartupParameter] = []
            while true {
                guard let name = packet.readNullTerminatedString() else {
                    throw .malformedStartup("parameter list is not terminated")
                }
                if name.isEmpty { break }
                guard let value = packet.readNullTerminatedString() else {
                    throw .malformedStartup("parameter \(name) has no value")
                }
                parameters.append(StartupParameter(name, value))
            }
            guard packet.readableBytes == 0 else { throw .malformedStartup("bytes after the parameter list") }
            return .startup(major: major, minor: minor, parameters: parameters)
        }
    }

    /// The next regular message (type byte, length, body), or nil when more bytes are needed.
    /// The body is a slice of `buffer`: nothing is copied.
    public static func message(
        from buffer: inout ByteBuffer, limits: WireLimits = .init()
    ) throws(FramingError)
        -> WireMessage?
    {
        guard buffer.readableBytes >= 5,
            let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, as: Int32.self)
        else { return nil }
        guard length >= 4 else { throw .lengthTooShort(Int(length)) }
        guard Int(length) <= limits.maxMessageLength else {
            throw .lengthTooLong(Int(length), limit: limits.maxMessageLength)
        }
        guard buffer.readableBytes >= 1 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 5)
        let body = buffer.readSlice(length: Int(length) - 4)!
        return WireMessage(type: type, body: body)
    }
}

/// One framed protocol message: its type byte and its body (without the length).
public struct WireMessage: Sendable, Equatable {
    public var type: UInt8
    public var body: ByteBuffer

    public init(type: UInt8, body: ByteBuffer) {
        self.type = type
        self.body = body
    }

    public init(type: Character, body: ByteBuffer) {
        self.type = type.asciiValue!
        self.body = body
    }

    /// Type byte, length, body: ready to write.
    public func encoded(allocator: ByteBufferAllocator = .init()) -> ByteBuffer {
        var out = allocator.buffer(capacity: 5 + body.readableBytes)
        out.writeInteger(type)
        out.writeInteger(Int32(4 + body.readableBytes))
        var copy = body
        out.writeBuffer(&copy)
        return out
    }
}

extension WireFraming {
    /// Walks the complete messages at the front of `buffer` without consuming or copying
    /// them, calling `visit(type, bodyIndex, bodyLength)` for each; `visit` returns false to
    /// stop before that message. Returns how many bytes the visited messages span: the
    /// prefix a relay can forward as one slice.
    public static func scanMessages(
        _ buffer: ByteBuffer, limits: WireLimits = .init(), _ visit: (UInt8, Int, Int) -> Bool
    ) throws(FramingError) -> Int {
        var index = buffer.readerIndex
        let end = buffer.writerIndex
        while end - index >= 5 {
            let type = buffer.getInteger(at: index, as: UInt8.self)!
            let length = Int(buffer.getInteger(at: index + 1, as: Int32.self)!)
            guard length >= 4 else { throw .lengthTooShort(length) }
            guard length <= limits.maxMessageLength else {
                throw .lengthTooLong(length, limit: limits.maxMessageLength)
            }
            guard end - index >= 1 + length else { break }
            guard visit(type, index + 5, length - 4) else { break }
            index += 1 + length
        }
        return index - buffer.readerIndex
    }
}
