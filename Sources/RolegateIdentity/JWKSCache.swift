public import Foundation
public import JWTKit
public import RolegateCore

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Each trusted issuer's signing keys, fetched from its JWKS document and kept for the
/// document's cache lifetime (`Cache-Control: max-age`, clamped to 1 minute … 1 day; 5 minutes
/// without one). A token signed with a key the cached document lacks (the issuer rotated its
/// keys) makes one fetch, but **at most one per issuer every 30 seconds**: a flood of tokens
/// with made-up `kid`s does not become a flood of requests to the issuer. A fetch that fails
/// keeps the keys already known (a key that was valid a minute ago still is) and says why.
public actor JWKSCache {
    /// Reads a key source: the document's bytes and how long it may be kept (nil: the default).
    public typealias Fetch = @Sendable (TrustedIssuer.KeySource) async throws -> (Data, maxAge: Duration?)

    struct Entry {
        var keys: JWKS
        var fetchedAt: ContinuousClock.Instant
        var expiresAt: ContinuousClock.Instant
    }

    private var entries: [String: Entry] = [:]
    /// When each issuer's keys were last fetched because of an unknown `kid`.
    private var lastUnknownKeyFetch: [String: ContinuousClock.Instant] = [:]
    private let fetch: Fetch
    private let clock = ContinuousClock()
    public static let unknownKeyInterval: Duration = .seconds(30)
    static let defaultLifetime: Duration = .seconds(300)

    /// How many times keys were fetched (tests, metrics).
    public private(set) var fetches = 0

    public init(fetch: @escaping Fetch = JWKSCache.fetchOverHTTP) {
        self.fetch = fetch
    }

    /// The key with `kid` (or the only key, for a token without one), fetching the issuer's
    /// document when it is not cached, has expired, or lacks the key (see the type's rules).
    public func key(kid: String?, of trust: TrustedIssuer) async throws(IdentityRefusal) -> JWK {
        let now = clock.now
        if let entry = entries[trust.issuer], entry.expiresAt > now, let key = Self.find(kid, in: entry.keys) {
            return key
        }
        let cached = entries[trust.issuer]
        if let cached, cached.expiresAt > now {
            // A fresh document without this key: fetch again only if the last such fetch was long enough ago.
            if let last = lastUnknownKeyFetch[trust.issuer], now - last < Self.unknownKeyInterval {
                throw .unknownKey(issuer: trust.issuer, kid: kid)
            }
            lastUnknownKeyFetch[trust.issuer] = now
        }
        let keys = try await refresh(trust, keeping: cached)
        guard let key = Self.find(kid, in: keys) else { throw .unknownKey(issuer: trust.issuer, kid: kid) }
        return key
    }

    private func refresh(_ trust: TrustedIssuer, keeping cached: Entry?) async throws(IdentityRefusal) -> JWKS {
        fetches += 1
        do {
            let (data, maxAge) = try await fetch(trust.keys)
            let keys = try JSONDecoder().decode(JWKS.self, from: data)
            let lifetime = min(max(maxAge ?? Self.defaultLifetime, .seconds(60)), .seconds(86_400))
            let now = clock.now
            entries[trust.issuer] = Entry(keys: keys, fetchedAt: now, expiresAt: now + lifetime)
            return keys
        } catch {
            // Keys known before stay usable; without any, the exchange cannot proceed.
            if let cached { return cached.keys }
            throw .issuerUnreachable(issuer: trust.issuer, reason: "\(error)")
        }
    }

    static func find(_ kid: String?, in keys: JWKS) -> JWK? {
        guard let kid else { return keys.keys.count == 1 ? keys.keys[0] : nil }
        return keys.keys.first { $0.keyIdentifier?.string == kid }
    }

    /// Reads a JWKS document over HTTP(S) (5 s timeout, `max-age` honoured), through the
    /// issuer's discovery document, or from a file.
    public static let fetchOverHTTP: Fetch = { source in
        switch source {
        case .file(let path):
            return (try Data(contentsOf: URL(fileURLWithPath: path)), nil)
        case .url(let url):
            return try await get(url)
        case .discovery(let url):
            let (document, _) = try await get(url)
            guard let object = try? JSONSerialization.jsonObject(with: document) as? [String: Any],
                let text = object["jwks_uri"] as? String, let jwks = URL(string: text)
            else { throw FetchError(description: "\(url) names no jwks_uri") }
            return try await get(jwks)
        }
    }

    /// One GET of a JSON document (5 s timeout): its bytes and its `Cache-Control: max-age`.
    static func get(_ url: URL) async throws -> (Data, maxAge: Duration?) {
        var request = URLRequest(url: url, timeoutInterval: 5)
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        let (data, response) = try await URLSession.shared.data(for: request)
        guard let http = response as? HTTPURLResponse, http.statusCode == 200 else {
            throw FetchError(description: "\(url) answered \((response as? HTTPURLResponse)?.statusCode ?? 0)")
        }
        return (data, maxAge(http.value(forHTTPHeaderField: "Cache-Control")))
    }

    struct FetchError: Error, CustomStringConvertible {
        var description: String
    }

    /// `max-age=N` of a `Cache-Control` value.
    static func maxAge(_ header: String?) -> Duration? {
        guard let header else { return nil }
        for part in header.split(separator: ",") {
            let directive = part.trimmingCharacters(in: .whitespaces).lowercased()
            if directive.hasPrefix("max-age="), let seconds = Int(directive.dropFirst(8)) {
                return .seconds(seconds)
            }
        }
        return nil
    }
}
