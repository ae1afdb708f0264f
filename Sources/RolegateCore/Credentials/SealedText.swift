import Crypto
public import Foundation

/// Text sealed with AES-256-GCM under a key, with the time it stops opening inside the seal:
/// what the console hands a browser for one redirect (a just-issued token), unreadable and
/// unalterable there, useless after `expires`.
public enum SealedText {
    /// `base64url(nonce ‖ ciphertext ‖ tag)` of `<unix seconds>\n<text>`.
    public static func seal(_ text: String, key: [UInt8], expires: Date) -> String {
        let plain = Array("\(Int64(expires.timeIntervalSince1970))\n\(text)".utf8)
        // Sealing with a fresh random nonce cannot fail for a 32-byte key.
        let box = try! AES.GCM.seal(plain, using: SymmetricKey(data: key))
        return base64url(Array(box.combined!))
    }

    /// The text, when the seal is intact and not expired.
    public static func open(_ sealed: String, key: [UInt8], now: Date = Date()) -> String? {
        guard let bytes = unbase64url(sealed), let box = try? AES.GCM.SealedBox(combined: bytes),
            let plain = try? AES.GCM.open(box, using: SymmetricKey(data: key))
        else { return nil }
        let text = String(decoding: plain, as: UTF8.self)
        guard let newline = text.firstIndex(of: "\n"), let seconds = Int64(text[..<newline]),
            Date(timeIntervalSince1970: TimeInterval(seconds)) > now
        else { return nil }
        return String(text[text.index(after: newline)...])
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func unbase64url(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }
}
