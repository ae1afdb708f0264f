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
    /// Walks every instance's chain page by page against its head, stopping each at its first
    /// problem: what `rolegate audit verify` and the console's "verify" report.
    public func verifyAuditChains(pageSize: Int = 5000) async throws(StoreError) -> [AuditChainReport] {
        var reports: [AuditChainReport] = []
        for head in try await auditHeads() {
            var verifier = ChainVerifier(instance: head.instance)
            var query = AuditQuery()
            query.instance = head.instance
            query.order = .chain
            query.limit = pageSize
            query.afterSequence = 0
            var problem: AuditChain.Problem?
            pages: while true {
                let page = try await auditEvents(query)
                for event in page {
                    if let found = verifier.next(event) {
                        problem = found
                        break pages
                    }
                }
                guard page.count == query.limit, let last = page.last else { break }
                query.afterSequence = last.sequence
            }
            problem = problem ?? verifier.finish(head: (head.sequence, head.hash))
            reports.append(
                AuditChainReport(
                    instance: head.instance, events: verifier.count, lastSequence: head.sequence, problem: problem))
        }
        return reports
    }
}
