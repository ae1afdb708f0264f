import Foundation

/// A random source a failing run can be replayed from: SplitMix64, seeded from
/// `ROLEGATE_TEST_SEED` when set, else from the system. Failure messages carry ``replay``.
struct TestRandom: RandomNumberGenerator {
    let seed: UInt64
    private var state: UInt64

    init() {
        var system = SystemRandomNumberGenerator()
        let given = ProcessInfo.processInfo.environment["ROLEGATE_TEST_SEED"].flatMap { UInt64($0) }
        self.init(seed: given ?? system.next())
    }

    init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    /// How to rerun with the same numbers.
    var replay: String { "seed \(seed): rerun with ROLEGATE_TEST_SEED=\(seed)" }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
