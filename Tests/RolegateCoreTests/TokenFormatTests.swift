import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

@Suite(.ownThreads) struct TokenFormatTests {
    @Test func generatedTokensParse() throws {
        for _ in 0..<100 {
            let (id, token) = TokenFormat.generate()
            #expect(token.count == TokenFormat.length)
            // The token is a SCRAM password: past SHA-256's 64-byte block, libpq hashes it again
            // in every PBKDF2 round (25–50% more client CPU per connect).
            #expect(token.utf8.count <= 64)
            #expect(token.hasPrefix("rgt_\(id)_"))
            let parsed = try TokenFormat.parse(token)
            #expect(parsed.id == id)
        }
        let a = TokenFormat.generate()
        let b = TokenFormat.generate()
        #expect(a.id != b.id && a.token != b.token)
    }

    /// The packed id the verifier's cache is keyed by: the id comes back as written, two ids
    /// that differ anywhere (either half) make different keys, and only an id's shape packs.
    @Test func idsPackIntoKeysAndBack() throws {
        var keys = Set<TokenKey>()
        for _ in 0..<1000 {
            let (id, token) = TokenFormat.generate()
            let key = try #require(TokenKey(id: id))
            #expect(key.id == id)
            #expect(try TokenFormat.parse(token).key == key)
            keys.insert(key)
        }
        #expect(keys.count == 1000)
        let id = TokenFormat.generate().id
        for index in [0, 7, 8, 15] {
            var chars = Array(id)
            chars[index] = chars[index] == "a" ? "b" : "a"
            #expect(TokenKey(id: String(chars)) != TokenKey(id: id))
        }
        for bad in ["", String(id.dropLast()), id + "a", id.uppercased(), String(id.dropLast()) + "1"] {
            #expect(TokenKey(id: bad) == nil, "\(bad)")
        }
        for value in UInt8(0)..<32 { #expect(Base32.digit(value) == Base32.alphabet[Int(value)]) }
        for byte in UInt8.min...UInt8.max {
            #expect(Base32.invalid(byte) == (Base32.alphabet.contains(byte) ? 0 : 1), "\(byte)")
        }
    }

    /// What is stored and compared is SHA-256 of the token's bytes (a stored hash from any
    /// earlier version keeps matching).
    @Test func theStoredHashIsSHA256() {
        let abc = TokenSecret.hash("abc").map { String(format: "%02x", $0) }.joined()
        #expect(abc == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let secret = TokenSecret(token: "abc", salt: Array(repeating: 1, count: 16), iterations: 1)
        #expect(secret.matches("abc") && !secret.matches("abd"))
    }

    @Test func everySingleCharacterChangeIsRejectedOffline() throws {
        let (_, token) = TokenFormat.generate()
        let characters = Array(token)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        for index in characters.indices {
            for replacement in alphabet where replacement != characters[index] {
                var changed = characters
                changed[index] = replacement
                #expect(throws: TokenFormat.ParseError.self) { try TokenFormat.parse(String(changed)) }
            }
        }
    }

    @Test func malformedShapes() {
        let (_, token) = TokenFormat.generate()
        #expect(throws: TokenFormat.ParseError.wrongPrefix) { try TokenFormat.parse("ghp_" + token.dropFirst(4)) }
        #expect(throws: TokenFormat.ParseError.wrongPrefix) { try TokenFormat.parse("") }
        #expect(throws: TokenFormat.ParseError.wrongLength) { try TokenFormat.parse(String(token.dropLast())) }
        #expect(throws: TokenFormat.ParseError.wrongLength) { try TokenFormat.parse(token + "a") }
        #expect(throws: TokenFormat.ParseError.badCharacters) {
            try TokenFormat.parse(token.uppercased().replacingOccurrences(of: "RGT_", with: "rgt_"))
        }
        #expect(throws: TokenFormat.ParseError.badChecksum) {
            var chars = Array(token)
            chars[30] = chars[30] == "a" ? "b" : "a"
            _ = try TokenFormat.parse(String(chars))
        }
    }

    /// Tokens issued before the format shrank (80 characters, a 52-character secret) parse,
    /// with the same checks; no other length does.
    @Test func tokensOfTheEarlierLengthStillParse() throws {
        let (id, token) = TokenFormat.generate()
        let body = TokenFormat.prefix + id + "_" + String(repeating: "q4", count: 26)
        let earlier = body + TokenFormat.checksumForTests(body)
        #expect(earlier.count == TokenFormat.earlierLength)
        #expect(try TokenFormat.parse(earlier) == TokenFormat.Parsed(id: id, token: earlier))
        var chars = Array(earlier)
        chars[50] = "z"
        #expect(throws: TokenFormat.ParseError.badChecksum) { try TokenFormat.parse(String(chars)) }
        // Well-formed but for their length (valid characters, a matching checksum): refused.
        let secretStart = TokenFormat.prefix.count + TokenFormat.idLength + 1
        for length in [63, 65, 79, 81] {
            let padded = String((token.prefix(secretStart) + String(repeating: "a", count: 80)).prefix(length - 7))
            #expect(throws: TokenFormat.ParseError.wrongLength) {
                try TokenFormat.parse(padded + TokenFormat.checksumForTests(padded))
            }
        }
        #expect(
            TokenFormat.ParseError.wrongLength.description.contains(
                "64 characters long (80 if issued by an earlier Rolegate)"))
    }

    @Test func errorsNeverEchoTheToken() {
        let (_, token) = TokenFormat.generate()
        do {
            _ = try TokenFormat.parse(String(token.dropLast()))
        } catch {
            #expect(!error.description.contains(String(token.prefix(20))))
        }
    }

    @Test func secretDerivativesMatchOnlyTheirToken() {
        let (_, token) = TokenFormat.generate()
        let (_, other) = TokenFormat.generate()
        let salt = Array(repeating: UInt8(3), count: 16)
        let secret = TokenSecret(token: token, salt: salt)
        #expect(secret.matches(token))
        #expect(!secret.matches(other))
        #expect(secret.scram == SCRAMSHA256.verifier(password: token, salt: salt))
        #expect(ConstantTime.equals([1, 2, 3], [1, 2, 3]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2, 4]))
        #expect(!ConstantTime.equals([1, 2], [1, 2, 3]))
    }

    @Test func states() {
        let now = Date()
        let secret = TokenSecret(sha256: [], scram: .init(salt: [], iterations: 1, storedKey: [], serverKey: []))
        var record = TokenRecord(
            id: "x", service: "s", role: "r", issuedAt: now, expiresAt: now.addingTimeInterval(60), issuer: "t",
            secret: secret)
        #expect(record.state(at: now) == .live)
        record.supersededBy = "y"
        #expect(record.state(at: now) == .grace)
        #expect(record.isUsable(at: now))
        #expect(record.state(at: now.addingTimeInterval(61)) == .expired)
        record.revokedAt = now
        #expect(record.state(at: now) == .revoked)
        #expect(!record.isUsable(at: now))
    }
}

@Suite(.ownThreads) struct CRC32Tests {
    /// The IEEE CRC-32 check value, and agreement with the byte-at-a-time form at every length
    /// (the sliced loop's tail and body), so tokens issued before keep their checksums.
    @Test func knownAnswerAndEveryLengthAgreeWithTheBytewiseForm() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
        var generator = SystemRandomNumberGenerator()
        for length in 0..<80 {
            let bytes = (0..<length).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes { crc = CRC32.table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
            #expect(CRC32.checksum(bytes) == crc ^ 0xFFFF_FFFF, "length \(length)")
        }
    }
}
