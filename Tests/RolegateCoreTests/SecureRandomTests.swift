import RolegateTestSupport
import Testing

@testable import RolegateCore

@Suite(.ownThreads) struct SecureRandomTests {
    @Test func everyByteOfEveryLengthIsDrawn() {
        for count in 0...41 {
            #expect(SecureRandom.bytes(count).count == count)
        }
        // 4,000 draws of 24 bytes (a SCRAM nonce): every position takes many values and
        // every bit is set about half the time (a position left unfilled would stay zero).
        let draws = (0..<4000).map { _ in SecureRandom.bytes(24) }
        for position in 0..<24 {
            let values = Set(draws.map { $0[position] })
            #expect(values.count > 240, "position \(position): \(values.count) distinct values")
            for bit in 0..<8 {
                let ones = draws.filter { $0[position] & (1 << bit) != 0 }.count
                #expect((1700...2300).contains(ones), "position \(position), bit \(bit): \(ones) of 4000")
            }
        }
        #expect(Set(draws).count == draws.count)
    }
}
