import Foundation
import RolegateAudit
import RolegateCore
import RolegateStore
import Testing

/// The audit part of the store contract, and the writer that feeds it.
@Suite struct AuditStoreTests {
    func statement(_ i: Int, service: String = "dash", at: Date = Date()) -> AuditEvent {
        AuditEvent(at: at, kind: .statement, action: "ok", service: service, tokenID: "t\(i % 3)", sql: "SELECT \(i)")
    }

    @Test(arguments: Backend.allCases)
    func appendsChainsQueriesAndPrunes(backend: Backend) async throws {
        try await withStore(backend) { store, location in
            let first = try await store.appendAudit((0..<250).map { statement($0) }, instance: "gw-a")
            #expect(first.map(\.sequence) == Array(1...250))
            let second = try await store.appendAudit([statement(250, service: "api")], instance: "gw-a")
            #expect(second[0].sequence == 251 && second[0].previousHash == first.last!.hash)
            _ = try await store.appendAudit([statement(0)], instance: "gw-b")

            let heads = try await store.auditHeads()
            #expect(heads.map(\.instance) == ["gw-a", "gw-b"])
            #expect(heads[0].sequence == 251 && heads[0].hash == second[0].hash)

            var query = AuditQuery()
            query.service = "api"
            #expect(try await store.auditEvents(query).map(\.sql) == ["SELECT 250"])
            query = AuditQuery()
            query.tokenID = "t1"
            query.limit = 1000
            #expect(try await store.auditEvents(query).count == 84)
            query = AuditQuery()
            query.instance = "gw-a"
            query.order = .chain
            query.limit = 1000
            let stored = try await store.auditEvents(query)
            #expect(AuditChain.verify(instance: "gw-a", events: stored, head: (251, heads[0].hash)) == nil)

            // Edit one row behind the store's back: verify names it.
            try backend.tamper(
                location,
                "UPDATE rolegate_audit SET sql_text = 'SELECT harmless' WHERE instance = 'gw-a' AND sequence = 7")
            let edited = try await store.auditEvents(query)
            #expect(AuditChain.verify(instance: "gw-a", events: edited, head: (251, heads[0].hash))?.sequence == 7)
        }
    }

    @Test(arguments: Backend.allCases)
    func retentionLeavesAVerifiableCheckpoint(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let old = Date().addingTimeInterval(-7200)
            _ = try await store.appendAudit((0..<10).map { statement($0, at: old) }, instance: "gw")
            _ = try await store.appendAudit((10..<15).map { statement($0) }, instance: "gw")
            #expect(
                try await store.pruneAudit(instance: "gw", before: Date().addingTimeInterval(-3600), now: Date()) == 10)
            var query = AuditQuery()
            query.instance = "gw"
            query.order = .chain
            let kept = try await store.auditEvents(query)
            #expect(kept.first?.sequence == 11)
            #expect(kept.last?.kind == .checkpoint && kept.last?.sequence == 16)
            let head = try await store.auditHeads()[0]
            #expect(AuditChain.verify(instance: "gw", events: kept, head: (head.sequence, head.hash)) == nil)
        }
    }

    @Test func theWriterGroupsEventsAndFlushesOnShutdown() async throws {
        try await withStore(.sqlite) { store, _ in
            let writer = AuditWriter(store: store, instance: "gw", capacity: 100_000)
            let task = Task { await writer.run() }
            for i in 0..<3000 { #expect(writer.record(statement(i))) }
            #expect(await writer.shutdown(waiting: .seconds(120)) == 0)
            await task.value
            #expect(writer.writtenCount == 3000)
            let heads = try await store.auditHeads()
            #expect(heads.first?.sequence == 3000)
        }
    }

    @Test func aFullQueueRefusesUnderBlockAndCountsDropsUnderContinue() async throws {
        let location = try Backend.sqlite.freshLocation()
        let store = try await location.open()
        await store.close()  // every append now fails
        let blocking = AuditWriter(store: store, instance: "gw", capacity: 100, failurePolicy: .block)
        let task = Task { await blocking.run() }
        for i in 0..<100 { #expect(blocking.record(statement(i))) }
        #expect(!blocking.record(statement(100)))
        #expect(!blocking.accepting)
        let continuing = AuditWriter(store: store, instance: "gw", capacity: 100, failurePolicy: .continue)
        for i in 0..<150 { #expect(continuing.record(statement(i))) }
        #expect(continuing.droppedCount == 50)
        #expect(await blocking.shutdown(waiting: .milliseconds(500)) == 100)
        await task.value
    }
}
