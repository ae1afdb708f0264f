import Foundation
import RolegateCore

/// A random source a failing run can be replayed from: ``SplitMix64`` seeded from
/// `ROLEGATE_TEST_SEED` when set, else from the system. Failure messages carry ``replay``.
struct TestRandom: RandomNumberGenerator {
    let seed: UInt64
    private var generator: SplitMix64

    init() {
        var system = SystemRandomNumberGenerator()
        let given = ProcessInfo.processInfo.environment["ROLEGATE_TEST_SEED"].flatMap { UInt64($0) }
        self.init(seed: given ?? system.next())
    }

    init(seed: UInt64) {
        self.seed = seed
        generator = SplitMix64(seed: seed)
    }

    /// How to rerun with the same numbers.
    var replay: String { "seed \(seed): rerun with ROLEGATE_TEST_SEED=\(seed)" }

    mutating func next() -> UInt64 { generator.next() }
}
