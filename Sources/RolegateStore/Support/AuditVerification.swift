public import RolegateCore

/// What walking one instance's audit chain found.
public struct AuditChainReport: Sendable, Equatable {
    public var instance: String
    /// Events checked before the walk ended (all of them when the chain is intact).
    public var events: Int
    public var lastSequence: Int64
    /// The first altered, missing, reordered or moved event; nil when the chain is intact.
    public var problem: AuditChain.Problem?
}

extension Store {
    /// ``verifyAuditChains(pageSize:)`` with the default page.
    public func verifyAuditChains() async throws(StoreError) -> [AuditChainReport] {
        try await verifyAuditChains(pageSize: 5000)
    }
}
