import Foundation
import PostgresCluster
import RolegateAudit
import RolegateCore
import RolegateStore
import RolegateTestSupport
import Testing

/// The audit part of the store contract, and the writer that feeds it.
@Suite(.ownThreads) struct AuditStoreTests {
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
            #expect(stored.map(\.sequence) == Array(1...251) && stored.last?.hash == heads[0].hash)
            #expect(
                zip(stored, stored.dropFirst()).allSatisfy { $0.hash == $1.previousHash }, "each links the one before")

            #expect(try await store.verifyAuditChains().allSatisfy { $0.problem == nil })

            // Edit one event behind the store's back: verify names it.
            try backend.tampering(location).alter(instance: "gw-a", sequence: 7) { $0.sql = "SELECT harmless" }
            let edited = try await store.verifyAuditChains().first { $0.instance == "gw-a" }?.problem
            #expect(
                edited?.sequence == 7 && edited?.message.contains("was altered") == true,
                "\(String(describing: edited))")
        }
    }

    @Test(arguments: Backend.allCases)
    func retentionLeavesAVerifiableCheckpoint(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let old = Date().addingTimeInterval(-7200)
            _ = try await store.appendAudit((0..<10).map { statement($0, at: old) }, instance: "gw")
            _ = try await store.appendAudit((10..<15).map { statement($0) }, instance: "gw")
            #expect(
                try await store.pruneAudit(
                    instance: "gw", before: Date().addingTimeInterval(-3600), now: Date(), limit: 100) == 10)
            var query = AuditQuery()
            query.instance = "gw"
            query.order = .chain
            let kept = try await store.auditEvents(query)
            #expect(kept.first?.sequence == 11)
            #expect(kept.last?.kind == .checkpoint && kept.last?.sequence == 16)
            let head = try await store.auditHeads()[0]
            #expect(kept.last?.hash == head.hash && head.sequence == 16)
            #expect(try await store.verifyAuditChains().first?.problem == nil)
        }
    }

    /// Retention deletes whole blocks in slices, oldest first, each leaving its own checkpoint;
    /// the chain verifies after every slice, and events newer than the cut-off are never touched.
    @Test(arguments: Backend.allCases)
    func retentionInSlicesLeavesAVerifiableChainAfterEach(backend: Backend) async throws {
        try await withStore(backend) { store, _ in
            let old = Date().addingTimeInterval(-7200)
            // Three group commits, so three blocks: retention drops whole blocks.
            for range in [0..<4, 4..<8, 8..<10] {
                _ = try await store.appendAudit(range.map { statement($0, at: old) }, instance: "gw")
            }
            _ = try await store.appendAudit((10..<15).map { statement($0) }, instance: "gw")
            var query = AuditQuery()
            query.instance = "gw"
            query.order = .chain
            var deleted: [Int] = []
            var firstKept: [Int64] = []
            while deleted.last != 0 {
                deleted.append(
                    try await store.pruneAudit(
                        instance: "gw", before: Date().addingTimeInterval(-3600), now: Date(), limit: 4))
                let kept = try await store.auditEvents(query)
                firstKept.append(kept.first?.sequence ?? 0)
                let head = try await store.auditHeads()[0]
                #expect(kept.last?.hash == head.hash)
                #expect(try await store.verifyAuditChains().first?.problem == nil, "after slice \(deleted.count)")
            }
            #expect(deleted == [4, 4, 2, 0])
            #expect(firstKept == [5, 9, 11, 11])
            let kept = try await store.auditEvents(query)
            #expect(kept.filter { $0.kind == .checkpoint }.count == 3)
            #expect(kept.filter { $0.kind == .statement }.count == 5)
        }
    }

    /// `rolegate audit --follow` keeps a place per chain. Two instances appending at once to a
    /// PostgreSQL store are handed block ids before they commit, so the lower id can commit
    /// second: a follower that had moved past the higher id by event id never showed it.
    @Test(arguments: Backend.allCases)
    func aFollowerSeesABlockCommittedAfterOneWithAHigherID(backend: Backend) async throws {
        try await withStore(backend) { store, location in
            _ = try await store.appendAudit([statement(1)], instance: "gw-a")
            _ = try await store.appendAudit([statement(2)], instance: "gw-b")
            var onlyB = AuditQuery()
            onlyB.service = "api"
            var follower = AuditFollower(query: AuditQuery(), after: try await store.auditHeads())
            var filtered = AuditFollower(query: onlyB, after: try await store.auditHeads())
            #expect(try await follower.poll(store).isEmpty)

            // gw-a is handed the next id and gw-b the one after it; gw-b commits first.
            let tampering = try backend.tampering(location)
            let bEvents = try await store.appendAudit([statement(3, service: "api")], instance: "gw-b")
            let (bID, _) = try tampering.readBlock(instance: "gw-b", containing: bEvents[0].sequence)
            try tampering.moveBlock(bID, to: bID + 1)
            #expect(try await follower.poll(store).map(\.sql) == ["SELECT 3"])
            #expect(try await filtered.poll(store).map(\.sql) == ["SELECT 3"])

            // Then gw-a's block commits, under the lower id.
            let aHead = try #require(try await store.auditHeads().first { $0.instance == "gw-a" })
            let late = AuditBlock.seal(
                [statement(4), statement(5, service: "api")], instance: "gw-a", after: (aHead.sequence, aHead.hash))
            try tampering.commitLate(late[0], id: bID)
            // The race reproduced: a place by event id, past gw-b's block, is past this one too.
            var byID = AuditQuery()
            byID.order = .oldestFirst
            byID.afterID = AuditBlock.eventID(block: bID + 1, index: 0)
            #expect(try await store.auditEvents(byID).isEmpty)
            let seen = try await follower.poll(store)
            #expect(seen.map(\.sql) == ["SELECT 4", "SELECT 5"], "the late block was skipped")
            #expect(seen.map(\.instance) == ["gw-a", "gw-a"] && seen.map(\.sequence) == [2, 3])
            #expect(try await filtered.poll(store).map(\.sql) == ["SELECT 5"])
            #expect(try await follower.poll(store).isEmpty, "nothing is shown twice")
            // What it simulated is an ordinary commit: the chains verify.
            #expect(try await store.verifyAuditChains().allSatisfy { $0.problem == nil })
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

    /// After each group commit the writer sleeps on an event loop's timer for the rest of its
    /// window, and only a backlog of half the queue wakes it early: a few events must still be
    /// written when the timer ends the window (with the timer broken, round 2 never is).
    @Test func aSmallBacklogIsWrittenWhenTheWindowEnds() async throws {
        try await withStore(.sqlite) { store, _ in
            let writer = AuditWriter(store: store, instance: "gw", capacity: 1000)
            let task = Task { await writer.run() }
            for round in 1...3 {
                for i in 0..<3 { #expect(writer.record(statement(round * 10 + i))) }
                let deadline = ContinuousClock.now + .seconds(60)
                while writer.writtenCount < round * 3, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(5))
                }
                #expect(writer.writtenCount == round * 3, "round \(round)")
            }
            #expect(await writer.shutdown() == 0)
            await task.value
        }
    }

    /// Under `on_failure: block`, statements are let through again once the queue has drained:
    /// `accepting` follows what was written, batch after batch.
    @Test func aDrainedQueueAcceptsAgain() async throws {
        try await withStore(.sqlite) { store, _ in
            let writer = AuditWriter(store: store, instance: "gw", capacity: 50, failurePolicy: .block)
            let task = Task { await writer.run() }
            for round in 1...3 {
                for i in 0..<50 { #expect(writer.record(statement(round * 100 + i))) }
                #expect(!writer.accepting)
                // Long: on a loaded CI machine the writer's task can wait many seconds for a thread.
                let deadline = ContinuousClock.now + .seconds(120)
                while writer.writtenCount < round * 50, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(writer.writtenCount == round * 50)
                #expect(writer.accepting && writer.queuedCount == 0, "round \(round)")
            }
            #expect(await writer.shutdown() == 0)
            await task.value
        }
    }

    /// Under `block`, a full queue stops new work (`accepting`) but still keeps the events of
    /// work already under way, up to twice its size; under `continue` it drops and counts.
    @Test func aFullQueueRefusesNewWorkUnderBlockAndCountsDropsUnderContinue() async throws {
        let location = try Backend.sqlite.freshLocation()
        let store = try await location.open()
        await store.close()  // every append now fails
        let blocking = AuditWriter(store: store, instance: "gw", capacity: 100, failurePolicy: .block)
        let task = Task { await blocking.run() }
        for i in 0..<99 { #expect(blocking.record(statement(i))) }
        #expect(blocking.accepting)
        #expect(blocking.record(statement(99)))
        #expect(!blocking.accepting)
        // Statements that were running when the queue filled are still recorded...
        for i in 100..<200 { #expect(blocking.record(statement(i))) }
        // ...up to the hard limit, past which events are dropped and counted.
        #expect(!blocking.record(statement(200)))
        #expect(blocking.droppedCount == 1 && blocking.queuedCount == 200)
        let continuing = AuditWriter(store: store, instance: "gw", capacity: 100, failurePolicy: .continue)
        for i in 0..<150 { #expect(continuing.record(statement(i)) == (i < 100)) }
        #expect(continuing.droppedCount == 50)
        #expect(await blocking.shutdown(waiting: .milliseconds(500)) == 200)
        await task.value
    }
}

/// The audit writer's own SQLite connection (`open(forAudit: true)`) writes through SQLite's
/// C API with reused statements; what it stores must be what the portable path stores.
@Suite(.ownThreads) struct SQLiteAuditAppenderTests {
    /// Every field set, unset, empty or awkward, in batch sizes that use each statement size.
    func events(_ count: Int, from start: Int) -> [AuditEvent] {
        (start..<start + count).map { i in
            AuditEvent(
                at: Date(timeIntervalSince1970: 1_800_000_000 + Double(i) / 1000),
                kind: i % 2 == 0 ? .statement : .auth,
                action: i % 3 == 0 ? "error" : "ok", service: i % 5 == 0 ? nil : "dash", tokenID: "tok\(i % 4)",
                role: "reader", database: i % 7 == 0 ? "" : "app", sessionID: "s\(i / 10)", client: "127.0.0.1:\(i)",
                sql: i % 6 == 0 ? nil : "SELECT 'ünï\"cødé\\' -- \(i)\n\t\u{1}", sqlState: i % 3 == 0 ? "42501" : nil,
                rows: i % 4 == 0 ? nil : Int64(i), durationMicros: Int64(-i),
                detail: i % 2 == 0 ? [:] : ["command": "SELECT \(i)", "quote\"key": "line\nbreak\u{7f}", "z": ""])
        }
    }

    /// A new store file has 16 KiB pages (cheaper audit appends); a file made with SQLite's
    /// default 4 KiB pages keeps them and takes audit events as before.
    @Test func newStoresUseLargePagesAndOldOnesKeepTheirs() async throws {
        func pageSize(_ path: String) throws -> String {
            try Subprocess.check(
                TestClients.python,
                [
                    "-c",
                    "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA page_size').fetchone()[0])",
                    path,
                ]
            ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let fresh = try Backend.sqlite.freshLocation()
        let store = try await fresh.open()
        await store.close()
        guard case .sqlite(let freshPath) = fresh else { return }
        #expect(try pageSize(freshPath) == "16384")

        let old = try Backend.sqlite.freshLocation()
        guard case .sqlite(let oldPath) = old else { return }
        try FileManager.default.createDirectory(
            atPath: (oldPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Subprocess.check(
            TestClients.python,
            [
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA page_size=4096'); c.execute('CREATE TABLE older (x)'); c.commit()",
                oldPath,
            ])
        let reader = try await old.open()
        let writer = try await old.open(forAudit: true)
        let stored = try await writer.appendAudit(events(120, from: 0), instance: "gw")
        let head = try #require(try await reader.auditHeads().first)
        #expect(head.sequence == 120 && head.hash == stored.last!.hash)
        await writer.close()
        await reader.close()
        #expect(try pageSize(oldPath) == "4096")
    }

    /// The `gw` chain as stored, in chain order, checked against its head.
    func verifiedChain(_ store: any Store) async throws -> (events: [AuditEvent], head: (sequence: Int64, hash: String))
    {
        var query = AuditQuery()
        query.instance = "gw"
        query.order = .chain
        query.limit = 10_000
        let read = try await store.auditEvents(query)
        let head = try #require(try await store.auditHeads().first)
        #expect(read.last?.hash == head.hash && read.last?.sequence == head.sequence)
        #expect(zip(read, read.dropFirst()).allSatisfy { $0.hash == $1.previousHash }, "each links the one before")
        #expect(try await store.verifyAuditChains().first?.problem == nil)
        return (read, (head.sequence, head.hash))
    }

    /// Rows far larger than usual (whole 64 KiB statements, long parameter lists) go in whole, and
    /// so do the usual ones after them (the staging buffer is given back past 4 MiB).
    @Test func hugeRowsAndTheRowsAfterThemAreStoredWhole() async throws {
        let location = try Backend.sqlite.freshLocation()
        let reader = try await location.open()
        let writer = try await location.open(forAudit: true)
        var sent = events(100, from: 0).enumerated().map { index, event in
            var huge = event
            huge.sql = String(repeating: "SELECT \(index); ", count: 64 * 1024 / 12)
            huge.detail = ["parameters": String(repeating: "x", count: 8 * 1024)]
            return huge
        }
        sent += events(12, from: 100)
        _ = try await writer.appendAudit(Array(sent[..<100]), instance: "gw")
        _ = try await writer.appendAudit(Array(sent[100...]), instance: "gw")
        let read = try await verifiedChain(reader).events
        #expect(read.map(\.sql) == sent.map(\.sql))
        #expect(read.map(\.detail) == sent.map(\.detail))
        await writer.close()
        await reader.close()
    }

    @Test func appendsWhatThePortablePathWouldAndTheChainVerifies() async throws {
        let location = try Backend.sqlite.freshLocation()
        let reader = try await location.open()
        let writer = try await location.open(forAudit: true)
        var sent: [AuditEvent] = []
        var stored: [AuditEvent] = []
        for size in [1, 9, 100, 257, 3] {
            let batch = events(size, from: sent.count)
            sent += batch
            stored += try await writer.appendAudit(batch, instance: "gw")
        }
        // The portable path continues the same chain in the same table.
        stored += try await reader.appendAudit(events(2, from: sent.count), instance: "gw")
        sent += events(2, from: sent.count)
        #expect(stored.map(\.sequence) == Array(1...Int64(sent.count)))
        // The audit writer's path stores the same without handing the linked events back.
        let recorded = events(50, from: sent.count)
        try await writer.recordAudit(recorded, instance: "gw")
        sent += recorded

        let (read, head) = try await verifiedChain(reader)
        #expect(head.sequence == Int64(sent.count))
        #expect(read.prefix(stored.count).map(\.hash) == stored.map(\.hash), "as the appends returned them")
        // Field for field what was sent (times as stored, to the millisecond).
        #expect(read.count == sent.count)
        for (back, original) in zip(read, sent) {
            var expected = original
            expected.at = Date(milliseconds: original.at.millisecondsSince1970)
            #expect(back.kind == expected.kind && back.action == expected.action && back.at == expected.at)
            #expect(back.service == expected.service && back.tokenID == expected.tokenID && back.role == expected.role)
            #expect(back.database == expected.database && back.sessionID == expected.sessionID)
            #expect(back.client == expected.client && back.sql == expected.sql && back.sqlState == expected.sqlState)
            #expect(back.rows == expected.rows && back.durationMicros == expected.durationMicros)
            #expect(back.detail == expected.detail)
        }
        await writer.close()
        await reader.close()
    }

    @Test func aFailedAppendLeavesNothingBehindAndTheNextOneWorks() async throws {
        let location = try Backend.sqlite.freshLocation()
        let reader = try await location.open()
        let writer = try await location.open(forAudit: true)
        _ = try await writer.appendAudit(events(5, from: 0), instance: "gw")
        // Another connection holds the write lock past nothing here: break the table instead.
        try Backend.sqlite.tamper(location, "ALTER TABLE rolegate_audit_blocks RENAME TO rolegate_audit_away")
        await #expect(throws: StoreError.self) { try await writer.appendAudit(self.events(3, from: 5), instance: "gw") }
        try Backend.sqlite.tamper(location, "ALTER TABLE rolegate_audit_away RENAME TO rolegate_audit_blocks")
        let next = try await writer.appendAudit(events(3, from: 5), instance: "gw")
        #expect(next.map(\.sequence) == [6, 7, 8])
        #expect(try await chainVerifies(reader))
        await writer.close()
        await reader.close()
    }

    /// A row that breaks a constraint after the block's own row (here: one of its keys, already
    /// taken) ends the whole append: none of the batch is kept, the head stays, and once the
    /// conflict is gone the same batch goes in.
    @Test func aRowFailingMidBatchKeepsNoneOfTheBatch() async throws {
        let location = try Backend.sqlite.freshLocation()
        let reader = try await location.open()
        let writer = try await location.open(forAudit: true)
        _ = try await writer.appendAudit(events(5, from: 0), instance: "gw")
        // The next block is id 2; its keys include the token `tok1`.
        try Backend.sqlite.tamper(location, "INSERT INTO rolegate_audit_keys (key, block) VALUES ('t:tok1', 2)")
        await #expect(throws: StoreError.self) {
            try await writer.appendAudit(self.events(12, from: 5), instance: "gw")
        }
        var query = AuditQuery()
        query.order = .chain
        #expect(try await reader.auditEvents(query).map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(try await reader.auditHeads().first?.sequence == 5)
        try Backend.sqlite.tamper(location, "DELETE FROM rolegate_audit_keys WHERE block = 2")
        let next = try await writer.appendAudit(events(12, from: 5), instance: "gw")
        #expect(next.map(\.sequence) == Array(6...17))
        #expect(try await chainVerifies(reader))
        await writer.close()
        await reader.close()
    }

    /// Whether the store's only chain verifies against its head.
    func chainVerifies(_ store: any Store) async throws -> Bool {
        let head = try #require(try await store.auditHeads().first)
        var query = AuditQuery()
        query.order = .chain
        let walk = try await store.verifyAuditChains()
        return try await store.auditEvents(query).last?.hash == head.hash && walk.count == 1
            && walk[0].problem == nil
    }
}

extension AuditStoreTests {
    /// What the console asks of the log: one session's events, an outcome's actions, counts per
    /// minute made by the store, and the verification walk naming the event edited behind its back.
    @Test(arguments: Backend.allCases)
    func sessionsOutcomesActivityAndTheVerificationWalk(backend: Backend) async throws {
        try await withStore(backend) { store, location in
            let start = Date(timeIntervalSince1970: 1_800_000_000)  // a whole minute
            var events: [AuditEvent] = []
            for minute in 0..<3 {
                let at = start + TimeInterval(minute * 60 + 5)
                events.append(AuditEvent(at: at, kind: .session, action: "start", sessionID: "s\(minute)"))
                for i in 0..<(minute + 1) {
                    events.append(
                        AuditEvent(
                            at: at + 1, kind: .statement, action: i == 0 ? "ok" : "error", tokenID: "t",
                            sessionID: "s\(minute)", sql: "SELECT \(i)"))
                }
                events.append(AuditEvent(at: at + 2, kind: .session, action: "end", sessionID: "s\(minute)"))
            }
            _ = try await store.appendAudit(events, instance: "gw-a")

            var query = AuditQuery()
            query.sessionID = "s2"
            query.order = .oldestFirst
            #expect(try await store.auditEvents(query).map(\.action) == ["start", "ok", "error", "error", "end"])
            query = AuditQuery()
            query.kinds = [.statement]
            query.actions = ["error"]
            #expect(try await store.auditEvents(query).count == 3)

            let activity = try await store.auditActivity(kinds: [.session, .statement], since: start, bucket: 60)
            func count(_ minute: Int, _ kind: AuditEvent.Kind, _ action: String) -> Int {
                activity.first {
                    $0.start == start + TimeInterval(minute * 60) && $0.kind == kind && $0.action == action
                }?
                .count ?? 0
            }
            #expect(count(0, .session, "start") == 1 && count(2, .session, "start") == 1)
            #expect(count(0, .statement, "ok") == 1 && count(2, .statement, "error") == 2)
            #expect(activity.map(\.start) == activity.map(\.start).sorted(), "oldest first")
            #expect(try await store.auditActivity(kinds: [.statement], since: start + 120, bucket: 60).count == 2)

            let intact = try await store.verifyAuditChains(pageSize: 4)
            #expect(intact.count == 1 && intact[0].problem == nil && intact[0].events == events.count)
            try backend.tampering(location).alter(instance: "gw-a", sequence: 9) { $0.sql = "SELECT 9" }
            let broken = try await store.verifyAuditChains(pageSize: 4)
            #expect(broken.first?.problem?.sequence == 9, "\(broken)")
        }
    }
}

extension AuditStoreTests {
    /// The block layout behind the store's back: an event's content altered, an event deleted,
    /// two events stored in each other's place, a block forged with every hash recomputed. Each
    /// is named by the verification walk, on both stores.
    @Test(arguments: Backend.allCases)
    func verificationNamesEveryKindOfTamperingWithBlocks(backend: Backend) async throws {
        let tampers = [
            "altered", "deleted", "deleted last", "reordered", "forged", "forged last", "unreadable", "key removed",
            "counts changed",
        ]
        for tamper in tampers {
            try await withStore(backend) { store, location in
                // Three blocks of 10: #1–#10, #11–#20, #21–#30.
                for block in 0..<3 {
                    _ = try await store.appendAudit((0..<10).map { statement(block * 10 + $0) }, instance: "gw")
                }
                #expect(try await store.verifyAuditChains().first?.problem == nil)
                let tampering = try backend.tampering(location)
                let expected: (sequence: Int64, words: String)
                switch tamper {
                case "altered":
                    try tampering.alter(instance: "gw", sequence: 14) { $0.tokenID = "someone-else" }
                    expected = (14, "was altered")
                case "deleted":
                    try tampering.delete(instance: "gw", sequence: 15)
                    expected = (15, "is missing")
                case "deleted last":
                    // The block ends one event early (its summary rewritten to match): the next starts late.
                    try tampering.delete(instance: "gw", sequence: 20)
                    expected = (20, "is missing")
                case "reordered":
                    try tampering.swapWithNext(instance: "gw", sequence: 16)
                    expected = (16, "appears out of order")
                case "forged":
                    // Consistent in itself, but the next block was chained to the original.
                    try tampering.forge(instance: "gw", sequence: 13) { $0.sql = "SELECT 'nothing to see'" }
                    expected = (21, "does not follow")
                case "forged last":
                    try tampering.forge(instance: "gw", sequence: 25) { $0.sql = "SELECT 'nothing to see'" }
                    expected = (30, "differs from the last event the chain head recorded")
                case "unreadable":
                    try backend.tamper(
                        location, "UPDATE rolegate_audit_blocks SET event_count = 3 WHERE first_sequence = 11")
                    expected = (11, "cannot be read")
                case "key removed":
                    // `--token t1` would no longer read this block's events.
                    try backend.tamper(
                        location,
                        """
                        DELETE FROM rolegate_audit_keys WHERE key = 't:t1'
                           AND block = (SELECT id FROM rolegate_audit_blocks WHERE first_sequence = 11)
                        """)
                    expected = (11, "summary was altered")
                default:
                    try backend.tamper(
                        location, "UPDATE rolegate_audit_blocks SET counts = 'statement ok 9' WHERE first_sequence = 11"
                    )
                    expected = (11, "summary was altered")
                }
                let report = try #require(try await store.verifyAuditChains().first)
                #expect(
                    report.problem?.sequence == expected.sequence, "\(tamper): \(String(describing: report.problem))")
                #expect(
                    report.problem?.message.contains(expected.words) == true,
                    "\(tamper): \(String(describing: report.problem))")
            }
        }
    }

    /// A store whose events were written one row each (the layout before blocks) is read and
    /// verified as it is; new events continue its chain in blocks, queries see both, retention
    /// takes the old rows first, and an old row edited behind the store's back is still named.
    @Test(arguments: Backend.allCases)
    func eventsOfTheEarlierLayoutAreReadVerifiedContinuedAndPruned(backend: Backend) async throws {
        try await withStore(backend) { store, location in
            let old = Date().addingTimeInterval(-7200)
            let legacy = AuditChain.link((0..<6).map { statement($0, at: old) }, instance: "gw", after: nil)
            func quoted(_ text: String?) -> String { text.map { "'\($0)'" } ?? "NULL" }
            let rows = legacy.map { e in
                """
                ('gw', \(e.sequence), \(e.at.millisecondsSince1970), 'statement', 'ok', \(quoted(e.service)),
                 \(quoted(e.tokenID)), \(quoted(e.sql)), '{}', '\(e.previousHash)', '\(e.hash)')
                """
            }
            try backend.tamper(
                location,
                """
                INSERT INTO rolegate_audit (instance, sequence, at, kind, action, service, token_id, sql_text, detail,
                    previous_hash, hash) VALUES \(rows.joined(separator: ", "));
                INSERT INTO rolegate_audit_chains (instance, last_sequence, last_hash, updated_at)
                VALUES ('gw', 6, '\(legacy.last!.hash)', \(legacy.last!.at.millisecondsSince1970));
                """)
            let appended = try await store.appendAudit((6..<10).map { statement($0) }, instance: "gw")
            #expect(appended.first?.sequence == 7 && appended.first?.previousHash == legacy.last!.hash)
            let ids = appended.compactMap(\.id)
            #expect(ids.count == 4 && ids.min()! > 6, "block events' ids follow the rows': \(ids)")
            #expect(try await store.verifyAuditChains().first.map { ($0.problem, $0.events) }! == (nil, 10))

            var query = AuditQuery()
            query.tokenID = "t1"
            query.limit = 100
            #expect(try await store.auditEvents(query).map(\.sequence) == [8, 5, 2], "newest first, both layouts")
            query.order = .oldestFirst
            query.limit = 2
            #expect(try await store.auditEvents(query).map(\.sequence) == [2, 5])
            query.limit = 3
            #expect(try await store.auditEvents(query).map(\.sequence) == [2, 5, 8])
            query = AuditQuery()
            query.order = .oldestFirst
            query.afterID = 3
            #expect(try await store.auditEvents(query).map(\.sequence) == [4, 5, 6, 7, 8, 9, 10], "--follow")

            try backend.tamper(location, "UPDATE rolegate_audit SET sql_text = 'SELECT 0' WHERE sequence = 3")
            #expect(try await store.verifyAuditChains().first?.problem?.sequence == 3)
            try backend.tamper(location, "UPDATE rolegate_audit SET sql_text = 'SELECT 2' WHERE sequence = 3")

            #expect(
                try await store.pruneAudit(
                    instance: "gw", before: Date().addingTimeInterval(-3600), now: Date(), limit: 100) == 6)
            query = AuditQuery()
            query.instance = "gw"
            query.order = .chain
            #expect(try await store.auditEvents(query).map(\.sequence) == [7, 8, 9, 10, 11])
            #expect(try await store.verifyAuditChains().first?.problem == nil)
        }
    }
}
