import Foundation
import RolegateCore
import RolegateGateway

// The wire fuzz target. Built with `fuzz/run.sh` (-sanitize=fuzzer -DFUZZING) it is a
// libFuzzer binary; built normally it replays a corpus and then mutates it for a while
// with a seeded generator (the seconds-long regression run in CI). See fuzz/README.md.

#if FUZZING
    // libFuzzer's own driver, entered from our main (SwiftPM names the executable's entry point).
    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        guard let data else { return 0 }
        FuzzEntryPoints.run(Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }

    @main
    struct WireFuzzDriver {
        static func main() {
            var argc = CommandLine.argc
            var argv = CommandLine.unsafeArgv
            exit(
                LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
        }
    }
#else
    @main
    struct WireFuzzReplay {
        /// `WireFuzz <corpus directory> [--seconds N] [--seed S]`
        static func main() throws {
            var arguments = Array(CommandLine.arguments.dropFirst())
            func option(_ name: String) -> String? {
                guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
                defer { arguments.removeSubrange(index...(index + 1)) }
                return arguments[index + 1]
            }
            let seconds = option("--seconds").flatMap(Double.init) ?? 5
            var generator = SeededGenerator(seed: option("--seed").flatMap(UInt64.init) ?? 0x5EED)
            guard let directory = arguments.first else {
                FileHandle.standardError.write(
                    Data("usage: WireFuzz <corpus directory> [--seconds N] [--seed S]\n".utf8))
                exit(64)
            }
            let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
            let corpus = try names.map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory + "/" + $0))) }
            guard !corpus.isEmpty else {
                FileHandle.standardError.write(Data("WireFuzz: the corpus \(directory) is empty\n".utf8))
                exit(1)
            }
            for input in corpus { FuzzEntryPoints.run(input) }
            var runs = 0
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                for _ in 0..<200 {
                    FuzzEntryPoints.run(mutate(corpus[Int(generator.next() % UInt64(corpus.count))], &generator))
                    runs += 1
                }
            }
            print("WireFuzz: replayed \(corpus.count) corpus inputs and \(runs) mutations without a failure")
        }

        /// Flips, inserts, deletes, duplicates and splices bytes, and writes interesting integers.
        static func mutate(_ input: [UInt8], _ generator: inout SeededGenerator) -> [UInt8] {
            var bytes = input
            for _ in 0..<(1 + Int(generator.next() % 8)) {
                let position = bytes.isEmpty ? 0 : Int(generator.next() % UInt64(bytes.count))
                switch generator.next() % 6 {
                case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1 << (generator.next() % 8))
                case 1: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: position)
                case 2 where !bytes.isEmpty: bytes.remove(at: position)
                case 3 where bytes.count > 4:
                    let interesting: [UInt32] = [
                        0, 3, 4, 5, 8, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 196608, 80_877_103,
                    ]
                    let value = interesting[Int(generator.next() % UInt64(interesting.count))]
                    let at = min(position, bytes.count - 4)
                    for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * i)) }
                case 4 where !bytes.isEmpty:
                    let length = min(bytes.count - position, 1 + Int(generator.next() % 16))
                    bytes.insert(contentsOf: bytes[position..<(position + length)], at: position)
                default:
                    if bytes.count > 1 { bytes = Array(bytes[..<position]) + bytes[position...].reversed() }
                }
            }
            return bytes
        }
    }

    /// Reproducible runs from a seed.
    typealias SeededGenerator = SplitMix64
#endif
