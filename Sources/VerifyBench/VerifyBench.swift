import Foundation
import RolegateCore
import RolegateStore
import RolegateTokens

/// Token verification per second, for bench/run.py: a valid token from the cache, a
/// well-formed token with an unknown id, a known id with a wrong secret (the two must cost
/// the same: one answer, one hash comparison), and uncached lookups (a new id each time,
/// so each one reads the store). Single task, so the figures are per core.
/// Prints one JSON object.
@main
struct VerifyBench {
    static func main() async throws {
        let iterations = Int(CommandLine.arguments.dropFirst().first ?? "") ?? 200_000
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

        // Off the main actor, as the gateway calls it (from a task of its own): no executor
        // hop per call, so what is measured is the verification.
        func rate(_ count: Int, _ token: @escaping @Sendable (Int) -> String, expectOK: Bool) async -> Double {
            await Task.detached {
                let clock = ContinuousClock()
                let started = clock.now
                for i in 0..<count {
                    let ok = (try? await verifier.verify(token(i)).get()) != nil
                    if ok != expectOK { fatalError("verify gave the wrong answer") }
                }
                return Double(count) / (clock.now - started).timeInterval
            }.value
        }
        // Warm: the feed position, the cache entry, the missing-id entry.
        _ = await rate(1000, { _ in issued.token }, expectOK: true)
        _ = await rate(1000, { _ in unknown }, expectOK: false)
        _ = await rate(1000, { _ in wrongSecret }, expectOK: false)
        let cached = await rate(iterations, { _ in issued.token }, expectOK: true)
        let unknownID = await rate(iterations, { _ in unknown }, expectOK: false)
        let wrong = await rate(iterations, { _ in wrongSecret }, expectOK: false)
        let fresh = (0..<max(1000, iterations / 50)).map { _ in TokenFormat.generate().token }
        let uncached = await rate(fresh.count, { fresh[$0] }, expectOK: false)
        await store.close()
        let result: [String: Double] = [
            "cached_valid_per_s": cached.rounded(), "unknown_id_per_s": unknownID.rounded(),
            "wrong_secret_per_s": wrong.rounded(), "uncached_lookup_per_s": uncached.rounded(),
        ]
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
