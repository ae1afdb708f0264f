/// Bytes from the system CSPRNG, eight per call into it. `UInt8.random(in:using:)` draws a
/// whole 64-bit word (one `getrandom(2)`) for every byte: a SCRAM nonce cost 24 system calls,
/// which was 30 per wire login in all.
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = generator.next()
            for _ in 0..<min(8, count - index) {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return bytes
    }
}
