import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

/// The HTTP API with curl, against a gateway whose policy has an admin service.
@Suite(.serialized, .ownThreads) struct HTTPTests {
    static let policy =
        gatewayPolicy + """

              ops: {admin: true, token_ttl: 1h}
            """

    struct Reply {
        var status: Int
        var body: String
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
        var code: String? { json["code"] as? String }
    }

    final class HTTP: Sendable {
        let gw: GatewayFixture
        let port: Int
        let admin: String

        convenience init() async throws {
            let port = try PostgresCluster.freePort()
            let gw = try await GatewayFixture(
                policy: HTTPTests.policy, serveArguments: ["--http", "127.0.0.1:\(port)"])
            try await self.init(gw: gw, port: port)
        }

        /// A gateway started with `--http 127.0.0.1:<port>`.
        init(gw: GatewayFixture, port: Int) async throws {
            self.gw = gw
            self.port = port
            admin = try gw.fixture.expectRolegate(["token", "issue", "ops"]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        /// curl; `body` may be a file reference (`@path`).
        func call(
            _ method: String, _ path: String, token: String?, body: String? = nil, headers: [String] = []
        ) async throws -> Reply {
            var arguments = ["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "http://127.0.0.1:\(port)\(path)"]
            if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
            for header in headers { arguments += ["-H", header] }
            if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
            let result = try await Subprocess.runDetached("curl", arguments)
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return Reply(status: Int(lines.last ?? "") ?? 0, body: lines.dropLast().joined(separator: "\n"))
        }

        func query(_ service: String, _ sql: String, params: String = "[]", token: String? = nil) async throws -> Reply
        {
            let body = "{\"sql\": \(jsonString(sql)), \"params\": \(params)}"
            return try await call("POST", "/v1/query", token: token ?? gw.tokens[service], body: body)
        }
    }

    static func jsonString(_ text: String) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: text, options: [.fragmentsAllowed]), as: UTF8.self)
    }

    @Test func queriesRunAsEachServicesRoleAndNothingMore() async throws {
        let http = try await HTTP()
        defer { withExtendedLifetime(http) {} }
        let events = try await http.query("reports", "SELECT id, name FROM analytics.events ORDER BY id")
        #expect(events.status == 200, "\(events.body)")
        #expect(events.json["row_count"] as? Int == 2)
        #expect((events.json["rows"] as? [[Any]])?.map { $0[1] as? String } == ["signup", "login"])
        #expect((events.json["columns"] as? [[String: String]])?.map { $0["type"] } == ["int8", "text"])
        // The text access log: one line per request, with its id.
        for _ in 0..<100 where !http.gw.server.output.contains("status=200 [RolegateHTTP] http request") {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(
            http.gw.server.output.contains("info rolegate.http : duration_ms=")
                && http.gw.server.output.contains(" method=POST path=/v1/query request_id="),
            "\(http.gw.server.output.suffix(600))")
        // Parameters are typed by PostgreSQL from the statement.
        let typed = try await http.query(
            "reports", "SELECT name FROM analytics.events WHERE id = $1 AND $2::jsonb ? 'k'",
            params: "[2, {\"k\": true}]")
        #expect((typed.json["rows"] as? [[String]]) == [["login"]], "\(typed.body)")
        // Each type as the API documents it: JSON numbers where lossless, json as JSON, the rest text.
        let values = try await http.query(
            "reports",
            """
            SELECT 7::int4 AS i, (2^60)::int8 AS big, 9007199254740992::int8 AS edge, 1.5::float8 AS f,
                   'NaN'::float8 AS nan, true AS yes, '{"b": [1, 2.50, {"a": null}], "a": "x"}'::jsonb AS j,
                   '12345678901234567890.5'::json AS exact, '\\x01ff'::bytea AS bin,
                   '2026-01-02 03:04:05.5+00'::timestamptz AS at, E'q"b\\\\s\\nl\\u0001é' AS text, NULL::text AS nothing
            """)
        #expect(values.status == 200, "\(values.body)")
        #expect(values.body.contains("12345678901234567890.5"), "json keeps every digit: \(values.body)")
        let row = try #require((values.json["rows"] as? [[Any]])?.first, "\(values.body)")
        #expect(row.count == 12)
        #expect(
            row[0] as? Int == 7 && row[1] as? String == "1152921504606846976" && row[2] as? Int == 9_007_199_254_740_992
        )
        #expect(row[3] as? Double == 1.5 && row[4] as? String == "NaN" && row[5] as? Bool == true)
        let object = try #require(row[6] as? [String: Any])
        #expect(object["a"] as? String == "x" && (object["b"] as? [Any])?.count == 3)
        #expect(row[8] as? String == "Af8=" && row[9] as? String == "2026-01-02T03:04:05.5+00:00")
        #expect(row[10] as? String == "q\"b\\s\nl\u{1}é" && row[11] is NSNull)
        #expect(
            (values.json["columns"] as? [[String: String]])?.map { $0["type"] ?? "" } == [
                "int4", "int8", "int8", "float8", "float8", "bool", "jsonb", "json", "bytea", "timestamptz", "text",
                "text",
            ])
        // Session state a request leaves behind is reset before the connection serves the next one.
        for _ in 0..<3 {
            let set = try await http.query("reports", "SELECT set_config('search_path', 'nowhere', false)")
            #expect(set.status == 200, "\(set.body)")
            let shown = try await http.query("reports", "SHOW search_path")
            #expect((shown.json["rows"] as? [[String]]) == [["\"$user\", public"]], "\(shown.body)")
        }
        // Column-level grants hold: id and email yes, ssn no.
        let emails = try await http.query("invoicing", "SELECT email FROM billing.customers ORDER BY id")
        #expect(emails.status == 200 && emails.json["row_count"] as? Int == 2, "\(emails.body)")
        let ssn = try await http.query("invoicing", "SELECT ssn FROM billing.customers")
        #expect(ssn.status == 403 && ssn.code == "permission_denied", "\(ssn.body)")
        #expect(ssn.json["sqlstate"] as? String == "42501")
        // A write the role may not do.
        let write = try await http.query("reports", "DELETE FROM analytics.events")
        #expect(write.status == 403 && write.code == "permission_denied", "\(write.body)")
        // A batch is all or nothing.
        let batch = try await http.call(
            "POST", "/v1/batch", token: http.gw.tokens["notes"],
            body:
                "{\"statements\": [{\"sql\": \"INSERT INTO public.notes VALUES (7, 'kept?')\"}, {\"sql\": \"SELECT 1/0\"}]}"
        )
        #expect(
            batch.status == 400 && batch.json["sqlstate"] as? String == "22012" && batch.json["statement"] as? Int == 1)
        let count = try await http.query("notes", "SELECT count(*) FROM public.notes WHERE id = 7")
        #expect(
            (count.json["rows"] as? [[Int]]) == [[0]], "the batch's first insert was not rolled back: \(count.body)")
        // A statement's own BEGIN cannot leave the request half done: it fails, and nothing of it stays.
        let open = try await http.call(
            "POST", "/v1/batch", token: http.gw.tokens["notes"],
            body:
                "{\"statements\": [{\"sql\": \"BEGIN\"}, {\"sql\": \"INSERT INTO public.notes VALUES (8, 'open')\"}]}"
        )
        #expect(open.status == 400 && open.json["sqlstate"] as? String == "25000", "\(open.body)")
        let eight = try await http.query("notes", "SELECT count(*) FROM public.notes WHERE id = 8")
        #expect((eight.json["rows"] as? [[Int]]) == [[0]], "an unclosed BEGIN's insert stayed: \(eight.body)")
        // Nothing in a batch commits part of it: COMMIT and ROLLBACK are refused before anything
        // runs, and a DO block (or procedure) that commits fails inside the batch's block.
        let batchOf = { (statements: [String]) in
            "{\"statements\": [\(statements.map { "{\"sql\": \"\($0)\"}" }.joined(separator: ", "))]}"
        }
        for (middle, state) in [
            ("COMMIT", "25000"), ("rollback", "25000"), ("DO $$ BEGIN COMMIT; END $$", "2D000"),
        ] {
            let partial = try await http.call(
                "POST", "/v1/batch", token: http.gw.tokens["notes"],
                body: batchOf(["INSERT INTO public.notes VALUES (9, 'half')", middle, "SELECT 1/0"]))
            #expect(
                partial.status == 400 && partial.json["sqlstate"] as? String == state
                    && partial.json["statement"] as? Int == 1, "\(middle): \(partial.body)")
            let nine = try await http.query("notes", "SELECT count(*) FROM public.notes WHERE id = 9")
            #expect((nine.json["rows"] as? [[Int]]) == [[0]], "\(middle) kept half a batch: \(nine.body)")
        }
        // Savepoints stay inside the batch's transaction.
        let savepoints = try await http.call(
            "POST", "/v1/batch", token: http.gw.tokens["notes"],
            body: batchOf([
                "INSERT INTO public.notes VALUES (13, 'kept')", "SAVEPOINT a",
                "INSERT INTO public.notes VALUES (14, 'undone')", "ROLLBACK TO SAVEPOINT a",
            ]))
        #expect(savepoints.status == 200, "\(savepoints.body)")
        let kept = try await http.query(
            "notes", "SELECT string_agg(id::text, ',') FROM public.notes WHERE id IN (13, 14)")
        #expect((kept.json["rows"] as? [[String]]) == [["13"]], "\(kept.body)")
        // The statement timeout: the usual one (30s) from the connection, another one for one request only.
        for _ in 0..<2 {
            let usual = try await http.query("reports", "SHOW statement_timeout")
            #expect((usual.json["rows"] as? [[String]]) == [["30s"]], "\(usual.body)")
            let own = try await http.call(
                "POST", "/v1/query", token: http.gw.tokens["reports"],
                body: "{\"sql\": \"SHOW statement_timeout\", \"timeout_ms\": 1500}")
            #expect((own.json["rows"] as? [[String]]) == [["1500ms"]], "\(own.body)")
            let slow = try await http.call(
                "POST", "/v1/query", token: http.gw.tokens["reports"],
                body: "{\"sql\": \"SELECT pg_sleep(3)\", \"timeout_ms\": 200}")
            #expect(slow.status == 504 && slow.json["sqlstate"] as? String == "57014", "\(slow.body)")
        }
        // max_rows cuts the result.
        let cut = try await http.call(
            "POST", "/v1/query", token: http.gw.tokens["reports"],
            body: "{\"sql\": \"SELECT generate_series(1, 50)\", \"max_rows\": 10}")
        #expect(cut.json["truncated"] as? Bool == true && (cut.json["rows"] as? [Any])?.count == 10, "\(cut.body)")
        // Every request is audited, as channel http.
        let audit = try http.gw.fixture.expectRolegate(["audit", "--kind", "statement", "--format", "json"]).stdout
        #expect(audit.contains("\"channel\":\"http\"") && audit.contains("SELECT ssn FROM billing.customers"))
    }

    /// `--log-format json`: one object per line, keys as documented, times in RFC 3339 UTC.
    @Test func jsonLogLinesAreOneObjectEach() async throws {
        let port = try PostgresCluster.freePort()
        let gw = try await GatewayFixture(
            policy: HTTPTests.policy, serveArguments: ["--http", "127.0.0.1:\(port)", "--log-format", "json"])
        defer { withExtendedLifetime(gw) {} }
        for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        _ = try await Subprocess.runDetached(
            "curl", ["-s", "-H", "X-Request-Id: tab\"quote", "http://127.0.0.1:\(port)/healthz"])
        _ = try await Subprocess.runDetached(
            "curl", ["-s", "-H", "X-Request-Id: mine-1", "http://127.0.0.1:\(port)/healthz"])
        var lines: [[String: Any]] = []
        for _ in 0..<40 {
            lines = gw.server.output.split(separator: "\n").filter { $0.hasPrefix("{") }.compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            if lines.contains(where: { $0["request_id"] as? String == "mine-1" }) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let objectLines = gw.server.output.split(separator: "\n").filter { $0.hasPrefix("{") }
        #expect(objectLines.count == lines.count, "a line that is not JSON: \(objectLines)")
        let access = try #require(lines.first { $0["request_id"] as? String == "mine-1" }, "\(gw.server.output)")
        #expect(access["message"] as? String == "http request" && access["level"] as? String == "info")
        #expect(access["label"] as? String == "rolegate.http" && access["path"] as? String == "/healthz")
        #expect(access["status"] as? String == "200" && access["method"] as? String == "GET")
        let ts = try #require(access["ts"] as? String)
        #expect(ts.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil, "\(ts)")
        // A request id that is not a plain token is replaced, not echoed into the log.
        #expect(!gw.server.output.contains("tab\\\"quote") && !gw.server.output.contains("tab\"quote"))
    }

    @Test func refusalsHaveStableCodes() async throws {
        let http = try await HTTP()
        defer { withExtendedLifetime(http) {} }
        let wrong = try await http.query("reports", "SELECT 1", token: "rgt_wrong")
        #expect(wrong.status == 401 && wrong.code == "token_invalid")
        let missing = try await http.call("POST", "/v1/query", token: nil, body: "{}")
        #expect(missing.status == 401 && missing.code == "token_invalid")
        // Every answer carries its own request id: 16 characters of the id alphabet, never repeated.
        let many = try await Subprocess.runDetached(
            "curl", ["-s"] + Array(repeating: "http://127.0.0.1:\(http.port)/v1/nowhere", count: 300))
        let ids = many.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["request_id"] as? String
        }
        let alphabet = Set("0123456789abcdefghjkmnpqrstvwxyz")
        #expect(ids.count == 300 && Set(ids).count == 300, "\(ids.count) ids, \(Set(ids).count) different")
        #expect(ids.allSatisfy { $0.count == 16 && $0.allSatisfy(alphabet.contains) }, "\(ids.prefix(3))")
        let malformed = try await http.call("POST", "/v1/query", token: http.gw.tokens["reports"], body: "{\"sql\": ")
        #expect(malformed.status == 400 && malformed.code == "bad_request")
        #expect((malformed.json["message"] as? String)?.contains("line 1, column 9: the document ends early") == true)
        // A misspelt key is refused, not ignored (the statement would run without its parameters).
        let misspelt = try await http.call(
            "POST", "/v1/query", token: http.gw.tokens["reports"], body: #"{"sql": "SELECT $1::int", "parmas": [1]}"#)
        #expect(
            misspelt.status == 400 && (misspelt.json["message"] as? String)?.contains("unknown key \"parmas\"") == true)
        // Numbers reach PostgreSQL with every digit; whole numbers written as 1.0 still fit an int.
        let exact = try await http.query(
            "reports", "SELECT $1::numeric::text, $2::numeric::text, $3::int",
            params: "[12345678901234567890123.000000000000000000001, 0.1000000000000000055511151231257827, 4.0]")
        let digits = (exact.json["rows"] as? [[Any]])?.first
        #expect(
            digits?[0] as? String == "12345678901234567890123.000000000000000000001"
                && digits?[1] as? String == "0.1000000000000000055511151231257827" && digits?[2] as? Int == 4,
            "\(exact.body)")
        let parameters = try await http.query("reports", "SELECT $1::int + $2::int", params: "[1]")
        #expect(parameters.status == 400 && parameters.json["sqlstate"] as? String == "08P01", "\(parameters.body)")
        // Revoked and expired.
        let notesID = try TokenFormat.parse(http.gw.tokens["notes"]!).id
        try http.gw.fixture.expectRolegate(["token", "revoke", notesID])
        let revoked = try await http.query("notes", "SELECT 1")
        #expect(revoked.status == 401 && revoked.code == "token_revoked", "\(revoked.body)")
        let short = try http.gw.fixture.expectRolegate(["token", "issue", "notes", "--ttl", "1s"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try await Task.sleep(for: .milliseconds(1200))
        let expired = try await http.query("notes", "SELECT 1", token: short)
        #expect(expired.status == 401 && expired.code == "token_expired", "\(expired.body)")
        // Data and admin tokens stay apart, on HTTP and on the wire.
        let dataOnAdmin = try await http.call("GET", "/admin/v1/tokens", token: http.gw.tokens["reports"])
        #expect(dataOnAdmin.status == 403 && dataOnAdmin.code == "not_admin")
        let adminOnData = try await http.query("reports", "SELECT 1", token: http.admin)
        #expect(adminOnData.status == 403 && adminOnData.code == "admin_token")
        let adminOnWire = try await http.gw.psql("ops", "SELECT 1", token: http.admin)
        #expect(adminOnWire.status != 0 && adminOnWire.stderr.contains("admin"), "\(adminOnWire.stderr)")

        // A 50 MB body is refused without being held in memory.
        let big = http.gw.fixture.directory + "/big.json"
        try Data(count: 50 << 20).write(to: URL(fileURLWithPath: big))
        let before = try #require(GatewayResourceTests.residentKiB(http.gw.server.pid))
        let tooLarge = try await http.call("POST", "/v1/query", token: http.gw.tokens["reports"], body: "@\(big)")
        let after = try #require(GatewayResourceTests.residentKiB(http.gw.server.pid))
        #expect(tooLarge.status == 413 && tooLarge.code == "body_too_large", "\(tooLarge.status) \(tooLarge.body)")
        #expect(after - before < 20 * 1024, "RSS grew from \(before) KiB to \(after) KiB")
    }

    /// HTTPS on the HTTP API with `--http-tls-cert/--http-tls-key`: a request over TLS is served,
    /// plain HTTP on the same port is not answered as HTTP.
    @Test func theHTTPAPIServesHTTPSWithItsOwnCertificate() async throws {
        let keys = NSTemporaryDirectory() + "rolegate-http-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: keys) }
        try selfSignedCertificate(in: keys, name: "api")
        let port = try PostgresCluster.freePort()
        let gw = try await GatewayFixture(
            serveArguments: [
                "--http", "127.0.0.1:\(port)", "--http-tls-cert", "\(keys)/api.crt", "--http-tls-key",
                "\(keys)/api.key",
            ])
        defer { withExtendedLifetime(gw) {} }
        for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(gw.server.output.contains("HTTP API on https://127.0.0.1:\(port)"), "\(gw.server.output)")
        let verified = try await Subprocess.runDetached(
            "curl", ["-s", "--cacert", "\(keys)/api.crt", "https://localhost:\(port)/healthz"])
        #expect(verified.status == 0 && verified.stdout.contains("\"ok\""), "\(verified.stdout)\(verified.stderr)")
        let query = try await Subprocess.runDetached(
            "curl",
            [
                "-s", "--cacert", "\(keys)/api.crt", "-H", "Authorization: Bearer \(gw.tokens["reports"]!)",
                "https://localhost:\(port)/v1/query", "--data-binary", #"{"sql": "SELECT 40 + 2 AS answer"}"#,
            ])
        #expect(query.stdout.contains("42"), "\(query.stdout)\(query.stderr)")
        let plain = try await Subprocess.runDetached("curl", ["-s", "-m", "5", "http://127.0.0.1:\(port)/healthz"])
        #expect(!plain.stdout.contains("\"ok\""), "plain HTTP was answered: \(plain.stdout)")
        let mismatched = try gw.fixture.rolegate(["serve", "--http-tls-cert", "\(keys)/api.crt"])
        #expect(mismatched.status != 0 && mismatched.stderr.contains("go together"), "\(mismatched.stderr)")
    }

    /// Instances call each other with a signature under the shared master key, never with a
    /// forwarded admin token: a correct one serves this instance's part, anything else is 401.
    @Test func peerCallsNeedASignatureUnderTheSharedKey() async throws {
        let http = try await HTTP()
        defer { withExtendedLifetime(http) {} }
        let key = try MasterKeyFile.load(from: http.gw.fixture.directory + "/.rolegate/master.key")
        let signer = PeerRequestSignature(masterKey: key)
        let local = "/admin/v1/sessions?scope=local"
        func signed(
            _ method: String, _ path: String, by signer: PeerRequestSignature, at date: Date = Date()
        )
            -> [String]
        {
            [
                "\(PeerRequestSignature.header): \(signer.sign(method: method, path: path, instance: "gw-test", actor: "ops/x", at: date))",
                "\(PeerRequestSignature.actorHeader): ops/x",
            ]
        }
        let good = try await http.call("GET", local, token: nil, headers: signed("GET", local, by: signer))
        #expect(good.status == 200 && good.json["sessions"] != nil, "\(good.body)")
        let stranger = PeerRequestSignature(masterKey: MasterKey.generate())
        for (what, method, path, headers) in [
            ("another key", "GET", local, signed("GET", local, by: stranger)),
            ("a stale signature", "GET", local, signed("GET", local, by: signer, at: Date().addingTimeInterval(-120))),
            ("not local scope", "GET", "/admin/v1/sessions", signed("GET", "/admin/v1/sessions", by: signer)),
            (
                "signed for another path", "DELETE", "/admin/v1/sessions/abc?scope=local",
                signed("GET", local, by: signer)
            ),
            ("garbage", "GET", local, ["\(PeerRequestSignature.header): t=1,i=x,s=00"]),
        ] {
            let refused = try await http.call(method, path, token: nil, headers: headers)
            #expect(
                refused.status == 401 && refused.json["code"] as? String == "peer_signature_invalid",
                "\(what): \(refused.body)")
        }
    }

    @Test func adminAPIEndsSessionsAndManagesTokens() async throws {
        let http = try await HTTP()
        defer { withExtendedLifetime(http) {} }
        let session = Task { try await http.gw.psql("reports", "SELECT pg_sleep(30)") }
        var id: String?
        for _ in 0..<100 where id == nil {
            let list = try await http.call("GET", "/admin/v1/sessions", token: http.admin)
            id =
                ((list.json["sessions"] as? [[String: Any]])?.first { $0["service"] as? String == "reports" })?["id"]
                as? String
            if id == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let sessionID = try #require(id)
        let ended = try await http.call("DELETE", "/admin/v1/sessions/\(sessionID)", token: http.admin)
        #expect(ended.status == 204)
        let psql = try await session.value
        #expect(psql.status != 0 && psql.stderr.contains("ended by an administrator"), "\(psql.stderr)")

        // Issue, rotate, revoke through the API; the new token works on the wire at once.
        let issued = try await http.call(
            "POST", "/admin/v1/services/notes/rotate", token: http.admin, body: "{\"grace\": \"1m\"}")
        #expect(issued.status == 201, "\(issued.body)")
        let token = try #require(issued.json["token"] as? String)
        #expect(try await http.gw.psql("notes", "SELECT 1", token: token).status == 0)
        let revoke = try await http.call(
            "POST", "/admin/v1/tokens/\(issued.json["id"] as? String ?? "")/revoke", token: http.admin,
            body: "{\"reason\": \"test\"}")
        #expect(revoke.status == 200 && revoke.json["state"] as? String == "revoked", "\(revoke.body)")
        // A misspelt lifetime is refused, not replaced by the default one; so is a body without its service.
        let misspelt = try await http.call(
            "POST", "/admin/v1/tokens", token: http.admin, body: #"{"service": "notes", "tll": "5m"}"#)
        #expect(
            misspelt.status == 400
                && misspelt.json["message"] as? String == #"unknown key "tll" (expected service, ttl, note)"#,
            "\(misspelt.body)")
        let noService = try await http.call("POST", "/admin/v1/tokens", token: http.admin, body: #"{"ttl": "5m"}"#)
        #expect(
            noService.status == 400
                && (noService.json["message"] as? String)?.hasPrefix("missing key \"service\"") == true,
            "\(noService.body)")
        let numeric = try await http.call(
            "POST", "/admin/v1/tokens", token: http.admin, body: #"{"service": "notes", "ttl": 300}"#)
        #expect(numeric.json["message"] as? String == #""ttl" must be a string, got a number"#, "\(numeric.body)")
        let issuedByAPI = try await http.call(
            "POST", "/admin/v1/services/notes/rotate", token: http.admin,
            body: #"{"grace": "1m", "ttl": "5m", "note": null}"#)
        #expect(issuedByAPI.status == 201, "\(issuedByAPI.body)")
        let plan = try await http.call("GET", "/admin/v1/plan", token: http.admin)
        #expect(plan.status == 200 && plan.json["in_sync"] as? Bool == true, "\(plan.body)")
        let audit = try await http.call("GET", "/admin/v1/audit?kind=token&limit=50", token: http.admin)
        #expect((audit.json["events"] as? [[String: Any]])?.contains { $0["action"] as? String == "revoked" } == true)
    }

    @Test func metricsParseAndMoveAndEveryDocumentedPathAnswers() async throws {

        try requirePythonModule("prometheus_client")
        let http = try await HTTP()
        defer { withExtendedLifetime(http) {} }
        func statementsCounter() async throws -> Double {
            let metrics = try await http.call("GET", "/metrics", token: nil)
            let parsed = try await Subprocess.runDetached(
                TestClients.python,
                [
                    "-c",
                    """
                    import sys
                    from prometheus_client.parser import text_string_to_metric_families
                    total = 0
                    for family in text_string_to_metric_families(sys.stdin.read()):
                        for sample in family.samples:
                            if sample.name == "rolegate_statements_total" and sample.labels.get("channel") == "http":
                                total += sample.value
                    print(total)
                    """,
                ], stdin: metrics.body)
            #expect(parsed.status == 0, "the metrics did not parse: \(parsed.stderr)")
            return Double(parsed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        let before = try await statementsCounter()
        _ = try await http.query("reports", "SELECT 1")
        _ = try await http.query("reports", "SELECT 2")
        #expect(try await statementsCounter() == before + 2)

        let document = try await http.call("GET", "/openapi.yaml", token: nil)
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/RolegateHTTP/openapi.yaml")
        #expect(document.body == (try String(contentsOf: file, encoding: .utf8)))
        // Every path and method in the document answers (a route, not Hummingbird's 404/405).
        var path: String?
        var checked = 0
        for line in document.body.split(separator: "\n") {
            if line.hasPrefix("  /"), line.hasSuffix(":") { path = String(line.dropFirst(2).dropLast()) }
            guard let current = path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") else {
                continue
            }
            let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
            guard ["GET", "POST", "DELETE", "PUT", "PATCH"].contains(method) else { continue }
            let concrete = current.replacingOccurrences(of: "{id}", with: "nosuchid")
                .replacingOccurrences(of: "{service}", with: "reports")
            let reply = try await http.call(method, concrete, token: http.admin, body: method == "GET" ? nil : "{}")
            #expect(
                reply.status != 405 && reply.code != "not_found" && reply.status != 0,
                "\(method) \(current): \(reply.status) \(reply.body)")
            checked += 1
        }
        #expect(checked >= 13)
    }

    /// Pipelined and kept-alive requests on one connection, the data API (answered on the
    /// event loop) mixed with the router's routes: each answer whole, once, in request order.
    /// Connections without a request in progress close after `http_idle_timeout`; a slow
    /// request is not cut by it.
    @Test func requestsOnOneConnectionAreAnsweredInOrder() async throws {
        let port = try PostgresCluster.freePort()
        let policy =
            HTTPTests.policy + """

                gateway:
                  http_idle_timeout: 2s
                """
        let gw = try await GatewayFixture(policy: policy, serveArguments: ["--http", "127.0.0.1:\(port)"])
        defer { withExtendedLifetime(gw) {} }
        let http = try await HTTP(gw: gw, port: port)
        var env = http.gw.environment
        env["TOKEN"] = http.gw.tokens["reports"]
        let result = try await Subprocess.runDetached(
            TestClients.python, [SecurityTests.client("http_pipelining.py"), "127.0.0.1", "\(http.port)", "2"],
            environment: env)
        #expect(
            result.status == 0 && result.stdout.contains("http pipelining: all"),
            "exit \(result.status): \(result.stdout)\n\(result.stderr)\ngateway: \(http.gw.server.output.suffix(1500))")
        #expect(!http.gw.server.output.contains(http.gw.tokens["reports"]!))
    }

    /// An HTTP address that cannot be bound (another process has it) stops `serve` at once,
    /// naming the address, instead of serving the wire gateway without the HTTP API.
    @Test func anHTTPAddressInUseStopsServe() async throws {
        let port = try PostgresCluster.freePort()
        let gw = try await GatewayFixture(policy: HTTPTests.policy, serveArguments: ["--http", "127.0.0.1:\(port)"])
        defer { withExtendedLifetime(gw) {} }
        _ = try await HTTP(gw: gw, port: port)
        var env = gw.fixture.environment
        env["ROLEGATE_CONFIG"] = gw.fixture.policyPath
        let second = try Subprocess.launch(
            RolegateBinary.path,
            ["serve", "--listen", "127.0.0.1:\(try PostgresCluster.freePort())", "--http", "127.0.0.1:\(port)"],
            environment: env, output: gw.fixture.directory + "/second.log")
        var waited = 0
        while !second.output.contains("cannot serve the HTTP API"), waited < 600 {
            waited += 1
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(second.output.contains("cannot serve the HTTP API on 127.0.0.1:\(port)"), "\(second.output)")
        #expect(!second.output.contains("HTTP API on 127.0.0.1:\(port)\n"), "\(second.output)")
        // It exits on its own with an error (a SIGKILL here would report 128 + 9).
        for _ in 0..<100 {
            if let line = try? String(contentsOfFile: "/proc/\(second.pid)/stat", encoding: .utf8),
                line.split(separator: " ").dropFirst(2).first == "Z"
            {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let status = second.stop(signal: 9)
        #expect(status != 0 && status != 128 + 9 && status != -1, "exit status \(status): \(second.output)")
        // And it left no row in the peer table (peers would dial it until the row aged out).
        let instances = try await Subprocess.runDetached(
            TestClients.python,
            [
                "-c",
                "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM rolegate_instances').fetchone()[0])",
                gw.fixture.directory + "/.rolegate/state.db",
            ])
        #expect(instances.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "\(instances)")
    }

    /// SIGTERM: a connection between requests closes at once, a request in progress is
    /// answered (`Connection: close`) and its connection closed after it.
    @Test func shutdownAnswersTheRequestInProgressAndClosesTheRest() async throws {
        let port = try PostgresCluster.freePort()
        // A grace long enough for the 2 s request on a loaded machine (the fixture's last flag wins).
        let gw = try await GatewayFixture(
            policy: HTTPTests.policy, serveArguments: ["--http", "127.0.0.1:\(port)", "--shutdown-grace", "30s"])
        defer { withExtendedLifetime(gw) {} }
        let http = try await HTTP(gw: gw, port: port)
        var env = http.gw.environment
        env["TOKEN"] = http.gw.tokens["reports"]
        let result = try await Subprocess.runDetached(
            TestClients.python,
            [
                SecurityTests.client("http_pipelining.py"), "127.0.0.1", "\(http.port)", "--shutdown",
                "\(gw.server.pid)",
            ],
            environment: env)
        #expect(
            result.status == 0 && result.stdout.contains("http pipelining: all"),
            "exit \(result.status): \(result.stdout)\n\(result.stderr)\ngateway: \(http.gw.server.output.suffix(1500))")
        #expect(gw.server.stop(signal: 0) == 0, "\(gw.server.output.suffix(1500))")
    }

    /// Guessing tokens on the data API: past the limit the answers wait, the client's own
    /// valid requests from the same address do not, and the audit log says so.
    @Test func wrongTokensOnTheDataAPIAreThrottled() async throws {
        let port = try PostgresCluster.freePort()
        let policy =
            HTTPTests.policy + """

                gateway:
                  auth_failure_limit: 2
                  auth_failure_window: 1m
                  auth_failure_delay: 6s
                """
        let gw = try await GatewayFixture(policy: policy, serveArguments: ["--http", "127.0.0.1:\(port)"])
        defer { withExtendedLifetime(gw) {} }
        let http = try await HTTP(gw: gw, port: port)
        let clock = ContinuousClock()
        for _ in 0..<2 {
            let started = clock.now
            let wrong = try await http.query("reports", "SELECT 1", token: "rgt_guess")
            #expect(wrong.status == 401 && wrong.code == "token_invalid", "\(wrong.body)")
            #expect(clock.now - started < .seconds(4), "answered late before the limit")
        }
        let started = clock.now
        let delayed = Task { try await http.query("reports", "SELECT 1", token: "rgt_guess") }
        // Meanwhile the service's real token is answered at once from the same address.
        try await Task.sleep(for: .milliseconds(300))
        let good = try await http.query("reports", "SELECT 'still in' AS s")
        #expect(good.status == 200 && (good.json["rows"] as? [[String]]) == [["still in"]], "\(good.body)")
        #expect(clock.now - started < .seconds(5), "a valid token waited behind someone else's failures")
        let third = try await delayed.value
        #expect(third.status == 401 && third.code == "token_invalid", "\(third.body)")
        #expect(clock.now - started >= .seconds(6), "the failure past the limit was answered at once")

        var events: [[String: Any]] = []
        let deadline = clock.now + .seconds(20)
        repeat {
            events = try AuditTests.events(gw, ["--kind", "auth"])
            if events.contains(where: { $0["action"] as? String == "throttled" }) { break }
            try await Task.sleep(for: .milliseconds(200))
        } while clock.now < deadline
        let throttled = events.filter { $0["action"] as? String == "throttled" }
        #expect(throttled.count == 1, "\(events)")
        #expect((throttled.first?["detail"] as? [String: String])?["channel"] == "http", "\(throttled)")
        #expect(events.filter { $0["action"] as? String == "refused" }.count >= 3, "\(events)")
    }
}
