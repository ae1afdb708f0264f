public import NIOCore

/// Messages a client (or the gateway, acting as one upstream) sends.
public enum Frontend {
    public static func startup(parameters: [StartupParameter], major: Int = 3, minor: Int = 0) -> ByteBuffer {
        var body = ByteBuffer()
        body.writeInteger(Int32(major << 16 | minor))
        for parameter in parameters {
            body.writeNullTerminatedString(parameter.name)
            body.writeNullTerminatedString(parameter.value)
        }
        body.writeInteger(UInt8(0))
        var packet = ByteBuffer()
        packet.writeInteger(Int32(4 + body.readableBytes))
        packet.writeBuffer(&body)
        return packet
    }

    /// Asks the server to switch to TLS; it answers with the single byte `S` or `N`.
    public static func sslRequest() -> ByteBuffer {
        var packet = ByteBuffer()
        packet.writeInteger(Int32(8))
        packet.writeInteger(StartupPacket.sslCode)
        return packet
    }

    public static func cancelRequest(processID: Int32, secretKey: [UInt8]) -> ByteBuffer {
        var packet = ByteBuffer()
        packet.writeInteger(Int32(8 + 4 + secretKey.count))
        packet.writeInteger(StartupPacket.cancelCode)
        packet.writeInteger(processID)
        packet.writeBytes(secretKey)
        return packet
    }

    public static func saslInitialResponse(mechanism: String, data: [UInt8]) -> WireMessage {
        Backend.message("p") {
            $0.writeNullTerminatedString(mechanism)
            $0.writeInteger(Int32(data.count))
            $0.writeBytes(data)
        }
    }

    public static func saslResponse(_ data: [UInt8]) -> WireMessage {
        Backend.message("p") { $0.writeBytes(data) }
    }

    public static func password(_ password: String) -> WireMessage {
        Backend.message("p") { $0.writeNullTerminatedString(password) }
    }

    public static func query(_ sql: String) -> WireMessage {
        Backend.message("Q") { $0.writeNullTerminatedString(sql) }
    }

    public static func terminate() -> WireMessage {
        Backend.message("X") { _ in }
    }
}

/// The body of a client's `p` message, read the way the authentication step expects it.
public enum PasswordMessageBody {
    public struct Malformed: Error, Sendable, Equatable {}

    /// `SASLInitialResponse`: mechanism name, then a length-prefixed (or -1) initial response.
    public static func saslInitialResponse(_ body: ByteBuffer) throws(Malformed) -> (mechanism: String, data: [UInt8]) {
        var body = body
        guard let mechanism = body.readNullTerminatedString(), let length = body.readInteger(as: Int32.self) else {
            throw Malformed()
        }
        if length == -1, body.readableBytes == 0 { return (mechanism, []) }
        guard length >= 0, Int(length) == body.readableBytes else { throw Malformed() }
        return (mechanism, body.readBytes(length: Int(length)) ?? [])
    }

    /// `SASLResponse`: the rest of the body.
    public static func saslResponse(_ body: ByteBuffer) -> [UInt8] {
        body.getBytes(at: body.readerIndex, length: body.readableBytes) ?? []
    }

    /// `PasswordMessage`: a NUL-terminated string filling the body.
    public static func password(_ body: ByteBuffer) throws(Malformed) -> String {
        var body = body
        guard let text = body.readNullTerminatedString(), body.readableBytes == 0 else { throw Malformed() }
        return text
    }
}
