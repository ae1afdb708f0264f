import Foundation

/// The token format: `rgt_<id>_<secret><checksum>`.
///
/// - `rgt_`: a fixed prefix, so secret scanners can recognise a leaked token.
/// - `<id>`: 16 characters of lowercase base32 (80 random bits): public, shown by
///   `token list`, recorded in the audit log, used to revoke.
/// - `<secret>`: 36 characters of lowercase base32: 180 bits from the system CSPRNG.
/// - `<checksum>`: 7 characters of lowercase base32: the CRC-32 of everything before it,
///   so a mistyped or truncated token is rejected without a store lookup.
///
/// The whole token is 64 characters of `[a-z2-7_]`, and that is a limit, not a round number:
/// it is the password of every SCRAM login, and a password longer than SHA-256's 64-byte
/// block is hashed again in each of PBKDF2's rounds by libpq (it re-keys its HMAC per round),
/// which made every connect of a libpq client 25–50% more expensive with the earlier
/// 80-character tokens (52-character secrets, 256 bits). Those still parse and verify.
/// Only one-way derivatives of a token are ever stored (see ``TokenSecret``).
public enum TokenFormat {
    public static let prefix = "rgt_"
    public static let idLength = 16
    public static let secretLength = 36
    public static let checksumLength = 7
    public static let length = prefix.count + idLength + 1 + secretLength + checksumLength
    /// Tokens issued before the format shrank to ``length``: a 52-character secret.
    public static let earlierLength = length + 16

    public enum ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        case wrongPrefix
        case wrongLength
        case badCharacters
        case badChecksum

        public var description: String {
            switch self {
            case .wrongPrefix: "not a Rolegate token (it should start with '\(TokenFormat.prefix)')"
            case .wrongLength:
                "a Rolegate token is \(TokenFormat.length) characters long (\(TokenFormat.earlierLength) if issued "
                    + "by an earlier Rolegate); this one is truncated or padded"
            case .badCharacters: "a Rolegate token holds only a-z, 2-7 and '_'"
            case .badChecksum: "the token's checksum does not match: it was mistyped or altered"
            }
        }
    }

    /// A token's parts after its format and checksum have been checked.
    public struct Parsed: Sendable, Equatable {
        /// The id, packed: what the verifier looks tokens up by.
        public var key: TokenKey
        /// The whole token, which is what the hash and the SCRAM verifier are computed over.
        public var token: String

        /// The id as it is written (16 characters of base32).
        public var id: String { key.id }

        public init(key: TokenKey, token: String) {
            self.key = key
            self.token = token
        }

        /// Nil unless `id` is a well-formed id (as ``generate()`` makes).
        public init?(id: String, token: String) {
            guard let key = TokenKey(id: id) else { return nil }
            self.init(key: key, token: token)
        }
    }

    /// A new token with a fresh id and secret.
    public static func generate() -> (id: String, token: String) {
        let id = Base32.encode(randomBytes(10))
        // 23 bytes make 37 digits; the first 36 carry 180 of their bits.
        let secret = String(Base32.encode(randomBytes(23)).prefix(secretLength))
        let body = prefix + id + "_" + secret
        return (id, body + checksum(body))
    }

    /// Checks the shape and checksum of `text`. Never echoes the text in its errors.
    public static func parse(_ text: String) throws(ParseError) -> Parsed {
        // One pass over the bytes in place (this runs on every login and HTTP request).
        var text = text
        let result = text.withUTF8 { utf8 -> Result<TokenKey, ParseError> in
            // ``prefix``, byte by byte.
            guard utf8.count >= 4, utf8[0] == UInt8(ascii: "r"), utf8[1] == UInt8(ascii: "g"),
                utf8[2] == UInt8(ascii: "t"), utf8[3] == UInt8(ascii: "_")
            else { return .failure(.wrongPrefix) }
            guard utf8.count == length || utf8.count == earlierLength else { return .failure(.wrongLength) }
            let idStart = 4
            let idEnd = idStart + idLength
            guard utf8[idEnd] == UInt8(ascii: "_") else { return .failure(.badCharacters) }
            // Every byte checked, without a branch per byte.
            var invalid: UInt8 = 0
            for index in idStart..<idEnd { invalid |= Base32.invalid(utf8[index]) }
            for index in (idEnd + 1)..<utf8.count { invalid |= Base32.invalid(utf8[index]) }
            guard invalid == 0 else { return .failure(.badCharacters) }
            let bodyLength = utf8.count - checksumLength
            let crc = UInt64(CRC32.checksum(UnsafeBufferPointer(rebasing: utf8[0..<bodyLength])))
            // 32 bits as 7 digits, most significant first (see `checksum`).
            var shift: UInt64 = 30
            for offset in 0..<checksumLength {
                guard utf8[bodyLength + offset] == Base32.digit(UInt8(truncatingIfNeeded: crc >> shift) & 31) else {
                    return .failure(.badChecksum)
                }
                shift &-= 5
            }
            return .success(TokenKey(UnsafeBufferPointer(rebasing: utf8[idStart..<idEnd])))
        }
        switch result {
        case .success(let key): return Parsed(key: key, token: text)
        case .failure(let error): throw error
        }
    }

    static func checksum(_ body: String) -> String {
        let crc = CRC32.checksum(Array(body.utf8))
        // 32 bits as 7 base32 digits (35 bits, top 3 always zero), most significant first.
        var digits = ""
        for shift in stride(from: 30, through: 0, by: -5) {
            digits.append(Character(Unicode.Scalar(Base32.alphabet[Int((UInt64(crc) >> UInt64(shift)) & 31)])))
        }
        return digits
    }

    static func randomBytes(_ count: Int) -> [UInt8] { SecureRandom.bytes(count) }
}

/// RFC 4648 base32 with a lowercase alphabet and no padding.
enum Base32 {
    static let alphabet: [UInt8] = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                output.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { output.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: output, as: UTF8.self)
    }

    /// The digit for a 5-bit value: `alphabet[value]`, without the table.
    @inline(__always)
    static func digit(_ value: UInt8) -> UInt8 {
        value < 26 ? UInt8(ascii: "a") &+ value : UInt8(ascii: "2") &+ (value &- 26)
    }

    /// 1 when `byte` is not a digit, else 0 (for checking many bytes without branching).
    @inline(__always)
    static func invalid(_ byte: UInt8) -> UInt8 {
        (byte &- UInt8(ascii: "a") >= 26 ? 1 : 0) & (byte &- UInt8(ascii: "2") >= 6 ? 1 : 0)
    }

    static func isDigit(_ byte: UInt8) -> Bool { invalid(byte) == 0 }
}

/// CRC-32 (IEEE 802.3), as zlib computes it.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { index in
        var c = UInt32(index)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { checksum($0) }
    }

    /// Slicing-by-4: `tables[k][i]` is the CRC of byte `i` followed by `k` zero bytes, so four
    /// bytes take four independent lookups (this runs on every token check).
    static let tables: [UInt32] = {
        var all = table
        for k in 1..<4 {
            for i in 0..<256 {
                let previous = all[(k - 1) * 256 + i]
                all.append((previous >> 8) ^ table[Int(previous & 0xFF)])
            }
        }
        return all
    }()

    static func checksum(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        tables.withUnsafeBufferPointer { t in
            var crc: UInt32 = 0xFFFF_FFFF
            var index = 0
            while index + 4 <= bytes.count {
                crc ^=
                    UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2]) << 16
                    | UInt32(bytes[index + 3]) << 24
                crc =
                    t[768 + Int(crc & 0xFF)] ^ t[512 + Int((crc >> 8) & 0xFF)] ^ t[256 + Int((crc >> 16) & 0xFF)]
                    ^ t[Int(crc >> 24)]
                index += 4
            }
            while index < bytes.count {
                crc = t[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
            return crc ^ 0xFFFF_FFFF
        }
    }
}

extension TokenFormat {
    /// The checksum of a token body, for tests that build tokens by hand.
    public static func checksumForTests(_ body: String) -> String { checksum(body) }
}

/// A token's id packed into two words: its 16 base32 characters are ASCII bytes, 8 to a word.
/// The verifier's cache is keyed by it, so that checking a token neither allocates a string
/// for the id (16 bytes is past a small string's 15) nor hashes one.
public struct TokenKey: Hashable, Sendable {
    let high: UInt64
    let low: UInt64

    /// `bytes`: exactly ``TokenFormat/idLength`` bytes.
    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        let raw = UnsafeRawBufferPointer(bytes)
        high = raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        low = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
    }

    /// Nil unless `id` is 16 characters of lowercase base32.
    public init?(id: String) {
        var id = id
        let key = id.withUTF8 { utf8 -> TokenKey? in
            guard utf8.count == TokenFormat.idLength, utf8.allSatisfy(Base32.isDigit) else { return nil }
            return TokenKey(utf8)
        }
        guard let key else { return nil }
        self = key
    }

    /// The id as it is written.
    public var id: String {
        withUnsafeBytes(of: (high, low)) { String(decoding: $0, as: UTF8.self) }
    }
}
