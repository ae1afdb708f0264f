import Foundation

/// How the gateway may prove a managed role's credential to a database server: the methods a
/// database allows (`upstream_auth:` in the policy, or libpq's `require_auth` in its URL).
///
/// SCRAM-SHA-256 alone by default: the server must prove it knows the role's verifier (its
/// final signature is checked), and the credential never crosses the wire. MD5 and clear-text
/// passwords hand a server (or whatever sits on the path to it) something that logs in as the
/// role, so they are used only when a database says so, and clear text never without TLS.
public struct UpstreamAuthMethods: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let scramSHA256 = UpstreamAuthMethods(rawValue: 1 << 0)
    public static let md5 = UpstreamAuthMethods(rawValue: 1 << 1)
    /// The credential in clear text (`AuthenticationCleartextPassword`), over TLS only.
    public static let password = UpstreamAuthMethods(rawValue: 1 << 2)
    /// No authentication at all (the server answers `AuthenticationOk` at once: `trust`).
    public static let none = UpstreamAuthMethods(rawValue: 1 << 3)

    public static let standard: UpstreamAuthMethods = [.scramSHA256]

    /// libpq's names, in its order.
    static let names: [(String, UpstreamAuthMethods)] = [
        ("password", .password), ("md5", .md5), ("scram-sha-256", .scramSHA256), ("none", .none),
    ]

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// A list of libpq `require_auth` names (`scram-sha-256`, `md5`, `password`, `none`).
    public init(names list: [String]) throws(ParseError) {
        var methods: UpstreamAuthMethods = []
        for name in list.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) {
            guard let method = Self.names.first(where: { $0.0 == name })?.1 else {
                let known = Self.names.map(\.0).joined(separator: ", ")
                if name.hasPrefix("!") {
                    throw ParseError(
                        description: "negated methods ('\(name)') are not supported: list the allowed ones (\(known))")
                }
                throw ParseError(description: "unknown authentication method '\(name)' (use one of: \(known))")
            }
            methods.insert(method)
        }
        guard !methods.isEmpty else { throw ParseError(description: "name at least one authentication method") }
        self = methods
    }

    public var description: String {
        Self.names.filter { contains($0.1) }.map(\.0).joined(separator: ",")
    }
}
