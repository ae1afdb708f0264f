public import NIOCore

/// Messages a server (or the gateway, acting as one) sends, built from typed values.
public enum Backend {
    public static func authenticationOk() -> WireMessage { authentication(0) }

    public static func authenticationCleartextPassword() -> WireMessage { authentication(3) }

    public static func authenticationSASL(mechanisms: [String]) -> WireMessage {
        authentication(10) { buffer in
            for mechanism in mechanisms { buffer.writeNullTerminatedString(mechanism) }
            buffer.writeInteger(UInt8(0))
        }
    }

    public static func authenticationSASLContinue(_ data: [UInt8]) -> WireMessage {
        authentication(11) { $0.writeBytes(data) }
    }

    public static func authenticationSASLFinal(_ data: [UInt8]) -> WireMessage {
        authentication(12) { $0.writeBytes(data) }
    }

    public static func parameterStatus(_ name: String, _ value: String) -> WireMessage {
        message("S") {
            $0.writeNullTerminatedString(name)
            $0.writeNullTerminatedString(value)
        }
    }

    public static func backendKeyData(processID: Int32, secretKey: [UInt8]) -> WireMessage {
        message("K") {
            $0.writeInteger(processID)
            $0.writeBytes(secretKey)
        }
    }

    public static func readyForQuery(_ status: UInt8) -> WireMessage {
        message("Z") { $0.writeInteger(status) }
    }

    /// `NegotiateProtocolVersion`: the newest minor version we speak and the options we ignored.
    public static func negotiateProtocolVersion(minor: Int32, unrecognized: [String]) -> WireMessage {
        message("v") {
            $0.writeInteger(minor)
            $0.writeInteger(Int32(unrecognized.count))
            for option in unrecognized { $0.writeNullTerminatedString(option) }
        }
    }

    /// An `ErrorResponse` (or, with type `N`, a `NoticeResponse`).
    public static func error(_ fields: ErrorFields, type: Character = "E") -> WireMessage {
        message(type) { buffer in
            for (code, value) in fields.wire {
                buffer.writeInteger(code)
                buffer.writeNullTerminatedString(value)
            }
            buffer.writeInteger(UInt8(0))
        }
    }

    static func authentication(_ code: Int32, _ write: (inout ByteBuffer) -> Void = { _ in }) -> WireMessage {
        message("R") {
            $0.writeInteger(code)
            write(&$0)
        }
    }

    public static func message(_ type: Character, _ write: (inout ByteBuffer) -> Void) -> WireMessage {
        var body = ByteBuffer()
        write(&body)
        return WireMessage(type: type, body: body)
    }
}

/// The fields of an `ErrorResponse` or `NoticeResponse`.
public struct ErrorFields: Sendable, Equatable {
    public var severity: String
    public var code: String
    public var message: String
    public var detail: String?
    public var hint: String?
    /// Every field as received, for relaying what a server said.
    public var all: [UInt8: String]

    public init(severity: String, code: String, message: String, detail: String? = nil, hint: String? = nil) {
        self.severity = severity
        self.code = code
        self.message = message
        self.detail = detail
        self.hint = hint
        self.all = [:]
    }

    public static func fatal(_ code: String, _ message: String, detail: String? = nil) -> ErrorFields {
        ErrorFields(severity: "FATAL", code: code, message: message, detail: detail)
    }

    var wire: [(UInt8, String)] {
        var fields: [(UInt8, String)] = [
            (UInt8(ascii: "S"), severity), (UInt8(ascii: "V"), severity), (UInt8(ascii: "C"), code),
            (UInt8(ascii: "M"), message),
        ]
        if let detail { fields.append((UInt8(ascii: "D"), detail)) }
        if let hint { fields.append((UInt8(ascii: "H"), hint)) }
        return fields
    }

    /// Parses the body of an `E` or `N` message.
    public init?(body: ByteBuffer) {
        var body = body
        var all: [UInt8: String] = [:]
        while let code = body.readInteger(as: UInt8.self), code != 0 {
            guard let value = body.readNullTerminatedString() else { return nil }
            all[code] = value
        }
        guard let code = all[UInt8(ascii: "C")], let message = all[UInt8(ascii: "M")] else { return nil }
        self.severity = all[UInt8(ascii: "V")] ?? all[UInt8(ascii: "S")] ?? "ERROR"
        self.code = code
        self.message = message
        self.detail = all[UInt8(ascii: "D")]
        self.hint = all[UInt8(ascii: "H")]
        self.all = all
    }
}

/// What a server sends during authentication and startup, parsed (the gateway's upstream side).
public enum BackendStartupMessage: Sendable, Equatable {
    case authenticationOk
    case authenticationCleartextPassword
    case authenticationMD5Password(salt: [UInt8])
    case authenticationSASL(mechanisms: [String])
    case authenticationSASLContinue([UInt8])
    case authenticationSASLFinal([UInt8])
    case authenticationOther(Int32)
    case parameterStatus(name: String, value: String)
    case backendKeyData(processID: Int32, secretKey: [UInt8])
    case readyForQuery(UInt8)
    case error(ErrorFields)
    case notice(ErrorFields)
    case negotiateProtocolVersion(minor: Int32, unrecognized: [String])
    case other(WireMessage)

    public init(_ message: WireMessage) {
        var body = message.body
        switch Character(Unicode.Scalar(message.type)) {
        case "R":
            guard let code = body.readInteger(as: Int32.self) else {
                self = .other(message)
                return
            }
            switch code {
            case 0: self = .authenticationOk
            case 3: self = .authenticationCleartextPassword
            case 5: self = .authenticationMD5Password(salt: body.readBytes(length: 4) ?? [])
            case 10:
                var mechanisms: [String] = []
                while let mechanism = body.readNullTerminatedString(), !mechanism.isEmpty {
                    mechanisms.append(mechanism)
                }
                self = .authenticationSASL(mechanisms: mechanisms)
            case 11: self = .authenticationSASLContinue(body.readBytes(length: body.readableBytes) ?? [])
            case 12: self = .authenticationSASLFinal(body.readBytes(length: body.readableBytes) ?? [])
            default: self = .authenticationOther(code)
            }
        case "S":
            if let name = body.readNullTerminatedString(), let value = body.readNullTerminatedString() {
                self = .parameterStatus(name: name, value: value)
            } else {
                self = .other(message)
            }
        case "K":
            if let pid = body.readInteger(as: Int32.self) {
                self = .backendKeyData(processID: pid, secretKey: body.readBytes(length: body.readableBytes) ?? [])
            } else {
                self = .other(message)
            }
        case "Z": self = body.readInteger(as: UInt8.self).map { .readyForQuery($0) } ?? .other(message)
        case "E": self = ErrorFields(body: body).map { .error($0) } ?? .other(message)
        case "N": self = ErrorFields(body: body).map { .notice($0) } ?? .other(message)
        case "v":
            if let minor = body.readInteger(as: Int32.self), let count = body.readInteger(as: Int32.self) {
                var options: [String] = []
                for _ in 0..<max(0, count) {
                    guard let option = body.readNullTerminatedString() else { break }
                    options.append(option)
                }
                self = .negotiateProtocolVersion(minor: minor, unrecognized: options)
            } else {
                self = .other(message)
            }
        default: self = .other(message)
        }
    }
}
