import Foundation
import PostgresCluster
import RolegateCore
import RolegateStore
import RolegateTestSupport
import RolegateTokens
import Testing

/// A policy these tests did not share with the unit tests: different names, TTLs and caps.
let tokenPolicy = """
    version: 1
    databases:
      app:
        url: ${APP_ADMIN_URL}
    roles:
      ledger_reader: {grants: []}
      ledger_writer: {grants: []}
    services:
      reports:
        role: ledger_reader
        token_ttl: 20m
        max_token_ttl: 2h
      payments:
        role: ledger_writer
        token_ttl: 10m
        grace: 30s
        max_grace: 5m
    """

@Suite(.serialized, .ownThreads) struct TokenCLITests {
    enum StoreKind: String, CaseIterable { case sqlite, postgres }

    /// A fixture whose token commands use `kind`'s store (the policy's default SQLite file,
    /// or a PostgreSQL store database on the fixture's cluster).
    func prepare(_ kind: StoreKind) throws -> (Fixture, [String]) {
        let fixture = try Fixture()
        try fixture.writePolicy(tokenPolicy)
        switch kind {
        case .sqlite: return (fixture, [])
        case .postgres:
            try fixture.sql("CREATE DATABASE rolegate_state OWNER rolegate_admin")
            let url = fixture.cluster.url(
                user: "rolegate_admin", password: fixture.adminPassword, database: "rolegate_state")
            return (fixture, ["--store", url])
        }
    }

    func json(_ result: ProcessResult) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
    }

    @Test(arguments: StoreKind.allCases)
    func issueRotateRevokeListShow(kind: StoreKind) throws {
        let (fixture, store) = try prepare(kind)
        // issue prints a token that parses, and JSON with the documented keys.
        let issued = try fixture.expectRolegate(
            ["token", "issue", "reports", "--format", "json", "--note", "q3 dashboards"] + store)
        let object = try #require(try json(issued) as? [String: Any])
        let token = try #require(object["token"] as? String)
        let id = try #require(object["id"] as? String)
        #expect(try TokenFormat.parse(token).id == id)
        #expect(object["service"] as? String == "reports")
        #expect(object["role"] as? String == "ledger_reader")
        let issuedAt = try #require((object["issued_at"] as? String).flatMap(ISO8601DateFormatter().date(from:)))
        let expiresAt = try #require((object["expires_at"] as? String).flatMap(ISO8601DateFormatter().date(from:)))
        #expect(abs(expiresAt.timeIntervalSince(issuedAt) - 1200) <= 1)

        // Text mode: the token alone on stdout.
        let text = try fixture.expectRolegate(["token", "issue", "payments"] + store)
        let paymentsToken = text.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try TokenFormat.parse(paymentsToken).token == paymentsToken)
        #expect(text.stderr.contains("shown only now"))

        // A second issue is refused (2) and points at rotate; over the cap is refused (2); unknown service (2).
        let again = try fixture.expectRolegate(["token", "issue", "reports"] + store, status: 2)
        #expect(again.stderr.contains("already has a live token (\(id))"))
        #expect(again.stderr.contains("rolegate token rotate reports"))
        let tooLong = try fixture.expectRolegate(["token", "issue", "payments", "--ttl", "2d"] + store, status: 2)
        #expect(tooLong.stderr.contains("max_token_ttl"))
        try fixture.expectRolegate(["token", "issue", "nobody"] + store, status: 2)
        try fixture.expectRolegate(["token", "rotate", "payments", "--grace", "1h"] + store, status: 2)
        // Bad input is an error (1), not a refusal.
        try fixture.expectRolegate(["token", "issue", "reports", "--ttl", "soon"] + store, status: 1)
        try fixture.expectRolegate(["token", "revoke"] + store, status: 1)
        try fixture.expectRolegate(["token", "revoke", "abc", "--service", "reports"] + store, status: 1)
        try fixture.expectRolegate(["token", "revoke", "aaaaaaaaaaaaaaaa"] + store, status: 1)

        // Rotate: two live (one in grace) until the grace ends.
        let rotated = try fixture.expectRolegate(
            ["token", "rotate", "reports", "--grace", "2m", "--format", "json"] + store)
        let rotatedObject = try #require(try json(rotated) as? [String: Any])
        let newID = try #require(rotatedObject["id"] as? String)
        var list = try #require(
            try json(try fixture.expectRolegate(["token", "list", "--service", "reports", "--format", "json"] + store))
                as? [[String: Any]])
        #expect(Set(list.compactMap { $0["id"] as? String }) == [id, newID])
        #expect(Set(list.compactMap { $0["state"] as? String }) == ["live", "grace"])
        for entry in list {
            for key in [
                "id", "service", "role", "state", "issued_at", "expires_at", "revoked_at", "revoke_reason",
                "last_used_at",
            ] {
                #expect(entry.keys.contains(key), "missing \(key)")
            }
            #expect(entry["token"] == nil)
        }

        // Revoke with a reason: list shows it revoked (with --all), and it no longer counts as live.
        try fixture.expectRolegate(["token", "revoke", id, "--reason", "rotated after leak"] + store)
        list = try #require(
            try json(try fixture.expectRolegate(["token", "list", "--all", "--format", "json"] + store))
                as? [[String: Any]])
        let revoked = try #require(list.first { $0["id"] as? String == id })
        #expect(revoked["state"] as? String == "revoked")
        #expect(revoked["revoke_reason"] as? String == "rotated after leak")
        #expect(revoked["revoked_at"] is String)
        let live = try #require(
            try json(try fixture.expectRolegate(["token", "list", "--format", "json"] + store)) as? [[String: Any]])
        #expect(!live.contains { $0["id"] as? String == id })

        let shown = try #require(
            try json(try fixture.expectRolegate(["token", "show", newID, "--format", "json"] + store)) as? [String: Any]
        )
        #expect(shown["id"] as? String == newID && shown["state"] as? String == "live")

        // revoke --service ends every live token of the service.
        try fixture.expectRolegate(["token", "revoke", "--service", "payments", "--reason", "decommissioned"] + store)
        let payments = try #require(
            try json(
                try fixture.expectRolegate(
                    ["token", "list", "--service", "payments", "--all", "--format", "json"] + store))
                as? [[String: Any]])
        #expect(payments.allSatisfy { $0["state"] as? String == "revoked" })

        // Nothing printed anywhere contains another token's secret part.
        let secret = String(token.dropFirst(TokenFormat.prefix.count + TokenFormat.idLength + 1).prefix(40))
        let listText = try fixture.expectRolegate(["token", "list", "--all"] + store)
        #expect(!listText.stdout.contains(secret))
    }

    @Test func theSQLiteFileHoldsNoSecret() throws {
        let (fixture, _) = try prepare(.sqlite)
        var tokens: [String] = []
        tokens.append(try fixture.expectRolegate(["token", "issue", "reports"]).stdout)
        tokens.append(try fixture.expectRolegate(["token", "rotate", "reports"]).stdout)
        tokens.append(try fixture.expectRolegate(["token", "issue", "payments"]).stdout)
        let directory = fixture.directory + "/.rolegate"
        let mode = try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int
        #expect(mode == 0o700)
        let fileMode =
            try FileManager.default.attributesOfItem(atPath: directory + "/state.db")[.posixPermissions] as? Int
        #expect(fileMode == 0o600)
        var bytes = Data()
        for file in try FileManager.default.contentsOfDirectory(atPath: directory) where file.hasPrefix("state.db") {
            bytes += try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
        }
        let content = String(decoding: bytes, as: UTF8.self)
        #expect(content.contains("ledger_reader"))
        for token in tokens.map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }) {
            let secret = Array(token.dropFirst(TokenFormat.prefix.count + TokenFormat.idLength + 1))
            for start in stride(from: 0, through: secret.count - 12, by: 4) {
                #expect(!content.contains(String(secret[start..<start + 12])))
            }
        }
    }

    /// Two processes on one store: the CLI revokes, a verifier in this process notices within 1 s.
    @Test(arguments: StoreKind.allCases)
    func revocationByAnotherProcessIsSeenWithinOneSecond(kind: StoreKind) async throws {
        let (fixture, store) = try prepare(kind)
        let token = try fixture.expectRolegate(["token", "issue", "payments"] + store).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let policy = try PolicyLoader.load(path: fixture.policyPath, environment: fixture.environment)
        let location = try StoreLocation.resolve(
            explicit: store.last, environment: [:], policy: policy, policyPath: fixture.policyPath)
        let opened = try await location.open()
        let verifier = TokenVerifier(store: opened, policy: policy)
        let poller = Task { await verifier.run() }
        let verified = try await verifier.verify(token).get()

        // The CLI process has committed the revocation when it exits.
        try fixture.expectRolegate(["token", "revoke", verified.tokenID, "--reason", "incident"] + store)
        let seen = try await awaitRevocation(of: token, by: verifier, committed: ContinuousClock().now)
        // Stopped before the store closes, as `serve` stops: its last write of uses comes first.
        poller.cancel()
        await poller.value
        await opened.close()
        #expect(seen.violation == nil, "\(seen.violation ?? "")")
    }
}
