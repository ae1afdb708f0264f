/// Statements of a batch that would end or restart the request's transaction.
///
/// A batch of several statements runs in one transaction block of the gateway's own
/// (see ``QueryExchange``). A `COMMIT`, `ROLLBACK`, `END`, `ABORT` or `PREPARE TRANSACTION`
/// among them would end that block early: what ran before would be committed (or silently
/// dropped while the answer says "ok") whatever happens after. `BEGIN` and `START TRANSACTION`
/// would only draw a warning, but say the same misunderstanding. Savepoints (`SAVEPOINT`,
/// `RELEASE`, `ROLLBACK TO`) stay inside the block and are allowed.
///
/// Only the statement's first keywords matter, after white space and comments: a statement
/// is one command (the extended protocol refuses several in one Parse).
enum TransactionControl {
    /// The command `sql` starts with when it is transaction control the batch refuses
    /// (e.g. `"COMMIT"`), else nil.
    static func refusedCommand(_ sql: String) -> String? {
        var words = Words(sql)
        guard let first = words.next() else { return nil }
        switch first {
        case "BEGIN", "COMMIT", "END", "ABORT":
            return first
        case "START", "PREPARE":
            return words.next() == "TRANSACTION" ? "\(first) TRANSACTION" : nil
        case "ROLLBACK":
            var next = words.next()
            if next == "WORK" || next == "TRANSACTION" { next = words.next() }
            return next == "TO" ? nil : "ROLLBACK"
        default:
            return nil
        }
    }

    /// The leading words of SQL text, upper-cased, skipping white space, `--` comments and
    /// (nested) `/* */` comments; stops at anything that is not a plain word.
    struct Words {
        private let bytes: [UInt8]
        private var index = 0

        init(_ sql: String) { bytes = Array(sql.utf8) }

        mutating func next() -> String? {
            skipSpaceAndComments()
            let start = index
            while index < bytes.count, Self.isWordByte(bytes[index]) { index += 1 }
            guard index > start else { return nil }
            return String(decoding: bytes[start..<index], as: UTF8.self).uppercased()
        }

        private static func isWordByte(_ byte: UInt8) -> Bool {
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "$") || byte >= 0x80
        }

        private mutating func skipSpaceAndComments() {
            while index < bytes.count {
                let byte = bytes[index]
                let following = index + 1 < bytes.count ? bytes[index + 1] : 0
                if byte == 0x20 || (byte >= 0x09 && byte <= 0x0D) {
                    index += 1
                } else if byte == UInt8(ascii: "-"), following == UInt8(ascii: "-") {
                    while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
                } else if byte == UInt8(ascii: "/"), following == UInt8(ascii: "*") {
                    var depth = 0
                    repeat {
                        if bytes[index] == UInt8(ascii: "/"), index + 1 < bytes.count,
                            bytes[index + 1] == UInt8(ascii: "*")
                        {
                            depth += 1
                            index += 2
                        } else if bytes[index] == UInt8(ascii: "*"), index + 1 < bytes.count,
                            bytes[index + 1] == UInt8(ascii: "/")
                        {
                            depth -= 1
                            index += 2
                        } else {
                            index += 1
                        }
                    } while depth > 0 && index < bytes.count
                } else {
                    return
                }
            }
        }
    }
}
