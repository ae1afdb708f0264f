import Foundation
import RolegateCore
import RolegateStore
import RolegateTokens

/// Token verification per second, for bench/run.py: a valid token from the cache, a
/// well-formed token with an unknown id, a known id with a wrong secret (the two must cost
/// the same: one answer, one hash comparison), and uncached lookups (a new id each time,
/// so each one reads the store). Single task, so the figures are per core.
///
/// Arguments: `[iterations [rounds]]`. The three from-memory cases run in `rounds` interleaved
/// rounds of `iterations / rounds` each (each round starting with the next case), and each
/// figure is the median of its rounds: on a shared VM a burst of stolen time then spoils one
/// round of one case instead of a whole case, as it did when each ran once for its whole count.
/// Prints one JSON object.
@main
struct VerifyBench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        let iterations = Int(arguments.first ?? "") ?? 200_000
        let rounds = max(1, Int(arguments.dropFirst().first ?? "") ?? 10)
        let directory = NSTemporaryDirectory() + "rolegate-verify-bench-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let policy = try PolicyLoader.parse(
            text: """
                version: 1
                databases: {app: {url: "postgres://admin@127.0.0.1/app"}}
                roles: {reader: {grants: []}}
                services: {api: {role: reader, token_ttl: 24h}}
                """, file: "bench.yaml", environment: [:])
        let store = try await StoreLocation.sqlite(path: directory + "/state.db").open()
        let issued = try await TokenService(store: store, policy: policy, issuer: "bench")
            .issue(service: "api", ttl: nil, note: nil)
        let verifier = TokenVerifier(store: store, policy: policy, maxStaleness: .seconds(3600))

        func wellFormed(id: String) -> String {
            let (_, random) = TokenFormat.generate()
            let secret = random.dropFirst(TokenFormat.prefix.count + TokenFormat.idLength + 1)
                .dropLast(TokenFormat.checksumLength)
            let body = TokenFormat.prefix + id + "_" + secret
            return body + TokenFormat.checksumForTests(body)
        }
        let unknown = TokenFormat.generate().token
        let wrongSecret = wellFormed(id: issued.record.id)

        // As the gateway calls it (its HTTP requests and password logins): from memory on the
        // calling thread, and only when memory cannot answer, the asynchronous path that reads
        // the store. Off the main actor, so no executor hop per call is measured.
        func rate(_ count: Int, _ token: @escaping @Sendable (Int) -> String, expectOK: Bool) async -> Double {
            await Task.detached {
                let clock = ContinuousClock()
                let started = clock.now
                for i in 0..<count {
                    let presented = token(i)
                    let result: Result<TokenVerifier.Verified, TokenVerifier.Failure>
                    if let known = verifier.verifyFromMemory(presented) {
                        result = known
                    } else {
                        result = await verifier.verify(presented)
                    }
                    let ok = (try? result.get()) != nil
                    if ok != expectOK { fatalError("verify gave the wrong answer") }
                }
                return Double(count) / (clock.now - started).timeInterval
            }.value
        }
        // Warm: the feed position, the cache entry, the missing-id entry.
        _ = await rate(1000, { _ in issued.token }, expectOK: true)
        _ = await rate(1000, { _ in unknown }, expectOK: false)
        _ = await rate(1000, { _ in wrongSecret }, expectOK: false)
        let cases: [(token: @Sendable (Int) -> String, expectOK: Bool)] = [
            ({ _ in issued.token }, true), ({ _ in unknown }, false), ({ _ in wrongSecret }, false),
        ]
        var rates: [[Double]] = Array(repeating: [], count: cases.count)
        let perRound = max(1, iterations / rounds)
        for round in 0..<rounds {
            for step in 0..<cases.count {
                let index = (round + step) % cases.count
                rates[index].append(await rate(perRound, cases[index].token, expectOK: cases[index].expectOK))
            }
        }
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.count % 2 == 1
                ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        let (cached, unknownID, wrong) = (median(rates[0]), median(rates[1]), median(rates[2]))
        let fresh = (0..<max(1000, iterations / 50)).map { _ in TokenFormat.generate().token }
        let uncached = await rate(fresh.count, { fresh[$0] }, expectOK: false)
        await store.close()
        let result: [String: Double] = [
            "cached_valid_per_s": cached.rounded(), "unknown_id_per_s": unknownID.rounded(),
            "wrong_secret_per_s": wrong.rounded(), "uncached_lookup_per_s": uncached.rounded(),
            "cached_valid_lowest_round_per_s": rates[0].min()!.rounded(),
            "cached_valid_highest_round_per_s": rates[0].max()!.rounded(), "rounds": Double(rounds),
        ]
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
