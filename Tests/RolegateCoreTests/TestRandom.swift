import Foundation
import RolegateCore

/// A random source a failing run can be replayed from: ``SplitMix64`` seeded from
/// `ROLEGATE_TEST_SEED` when set, else from the system. Failure messages carry ``replay``.
struct TestRandom: RandomNumberGenerator {
    let seed: UInt64
    private var generator: SplitMix64

    /// Throws when `ROLEGATE_TEST_SEED` is set but is not a seed: a replay that quietly ran
    /// with other numbers would pass or fail for reasons of its own.
    init() throws {
        guard let text = ProcessInfo.processInfo.environment["ROLEGATE_TEST_SEED"] else {
            var system = SystemRandomNumberGenerator()
            self.init(seed: system.next())
            return
        }
        guard let given = UInt64(text) else { throw NotASeed(text: text) }
        self.init(seed: given)
    }

    struct NotASeed: Error, CustomStringConvertible {
        var text: String
        var description: String {
            "ROLEGATE_TEST_SEED=\(text) is not a seed: use the number a failed run printed (0 to 18446744073709551615)"
        }
    }

    init(seed: UInt64) {
        self.seed = seed
        generator = SplitMix64(seed: seed)
    }

    /// How to rerun with the same numbers.
    var replay: String { "seed \(seed): rerun with ROLEGATE_TEST_SEED=\(seed)" }

    mutating func next() -> UInt64 { generator.next() }
}
