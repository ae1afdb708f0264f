public import RolegateTokens

/// What a test saw while waiting for a revocation to reach a verifier.
public struct RevocationObservation: Sendable {
    /// How long after the commit a verification first refused the token as revoked.
    public var seenAfter: Duration
    /// Set when a verification that started a second or more after the commit still
    /// accepted (or otherwise answered for) the token: a broken propagation bound.
    public var violation: String?
}

/// Verifies `token` until it is refused as revoked. Every call that *starts* one second or
/// more after `committed` must refuse it — the verifier's staleness bound guarantees it,
/// whatever the load on the machine — so this never waits much past a second.
public func awaitRevocation(
    of token: String, by verifier: TokenVerifier, committed: ContinuousClock.Instant
)
    async throws -> RevocationObservation
{
    let clock = ContinuousClock()
    while true {
        let started = clock.now
        let result = await verifier.verify(token)
        if result == .failure(.revoked) { return RevocationObservation(seenAfter: started - committed) }
        if started - committed >= .seconds(1) {
            return RevocationObservation(
                seenAfter: started - committed,
                violation: "a verification started \(started - committed) after the revocation gave \(result)")
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
