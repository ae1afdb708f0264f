import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Workload identity end to end: a provider on loopback (`Clients/identity_provider.py`, which
/// publishes its keys over OpenID discovery and signs JWTs with them, as GitHub Actions does)
/// and a real gateway. A GitHub-shaped token for the right repository and branch becomes a
/// token for `deploy-bot` and a psql session as `migrator`; every wrong token is refused with
/// its own code; a key rotation works without a restart; a flood of unknown `kid`s costs at
/// most one fetch of the keys; a JWT works as the password over TLS.
@Suite(.serialized, .ownThreads) struct IdentityTests {
    static let audience = "rolegate-prod"
    static let subject = "repo:acme/billing:ref:refs/heads/main"

    static func policy(provider: Int, unreachable: Int, keys: String) -> String {
        """
        version: 1
        databases:
          app:
            url: ${APP_ADMIN_URL}
        roles:
          migrator:
            grants:
              - on: TABLE public.notes
                privileges: [SELECT, INSERT]
          reader:
            grants:
              - on: TABLE public.notes
                privileges: [SELECT]
        trust:
          github:
            issuer: http://127.0.0.1:\(provider)
            audiences: [\(audience)]
            client_id: rolegate-cli
            max_age: 10m
          elsewhere:
            issuer: http://127.0.0.1:\(unreachable)
            audiences: [\(audience)]
        services:
          deploy-bot:
            role: migrator
            identity:
              trust: github
              claims: {repository: acme/billing, ref: refs/heads/main}
            scram_iterations: 16
            grace: 2m
        people:
          carol@example.com: {role: reader, trust: github}
        gateway:
          tls_cert: \(keys)/gateway.crt
          tls_key: \(keys)/gateway.key
          client_auth: password
        """
    }

    /// The provider, the gateway, and calls to both.
    final class Setup: @unchecked Sendable {
        let provider: RunningProcess
        let providerPort: Int
        /// The issuer `elsewhere`, where nothing listens.
        let unreachablePort: Int
        let gw: GatewayFixture
        let httpPort: Int
        let keys: String

        /// `policy` writes the gateway's policy from the provider's port, an unreachable port and
        /// the TLS folder (the workload policy above by default).
        init(policy: ((_ provider: Int, _ unreachable: Int, _ keys: String) -> String)? = nil) async throws {
            try requirePythonModule("jwt")
            keys = NSTemporaryDirectory() + "rolegate-identity-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
            try selfSignedCertificate(in: keys, name: "gateway")
            providerPort = try PostgresCluster.freePort()
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/identity_provider.py").path
            provider = try Subprocess.launch(
                TestClients.python, [script, String(providerPort)], environment: ProcessInfo.processInfo.environment,
                output: keys + "/provider.log")
            for _ in 0..<100 where !provider.output.contains("identity provider on") {
                try await Task.sleep(for: .milliseconds(50))
            }
            httpPort = try PostgresCluster.freePort()
            unreachablePort = try PostgresCluster.freePort()
            let text =
                policy?(providerPort, unreachablePort, keys)
                ?? IdentityTests.policy(provider: providerPort, unreachable: unreachablePort, keys: keys)
            gw = try await GatewayFixture(
                policy: text,
                serveArguments: ["--http", "127.0.0.1:\(httpPort)"])
            for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        deinit {
            provider.stop(signal: 9)
            try? FileManager.default.removeItem(atPath: keys)
        }

        func call(
            _ url: String, method: String = "GET", body: Data? = nil, type: String = "application/json",
            bearer: String? = nil
        ) async throws -> (status: Int, json: [String: Any]) {
            var request = URLRequest(url: URL(string: url)!)
            request.httpMethod = method
            request.httpBody = body
            if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
            if body != nil { request.setValue(type, forHTTPHeaderField: "Content-Type") }
            let (data, response) = try await URLSession.shared.data(for: request)
            let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, json)
        }

        /// A JWT the provider signs with key `kid` (published in its JWKS unless `publish` is false).
        func sign(
            _ claims: [String: Any], kid: String = "k1", alg: String = "RS256", publish: Bool = true
        )
            async throws -> String
        {
            let body = try JSONSerialization.data(withJSONObject: [
                "claims": claims, "kid": kid, "alg": alg, "publish": publish,
            ])
            let (status, json) = try await call(
                "http://127.0.0.1:\(providerPort)/control/sign", method: "POST", body: body)
            #expect(status == 200)
            return try #require(json["jwt"] as? String)
        }

        /// GitHub's claims for a push to main of acme/billing, changed by `changes`.
        func claims(_ changes: [String: Any] = [:]) -> [String: Any] {
            let now = Int(Date().timeIntervalSince1970)
            var claims: [String: Any] = [
                "iss": "http://127.0.0.1:\(providerPort)", "aud": IdentityTests.audience,
                "sub": IdentityTests.subject, "repository": "acme/billing", "ref": "refs/heads/main",
                "event_name": "push", "iat": now, "nbf": now - 5, "exp": now + 300,
                "jti": UUID().uuidString,
            ]
            for (key, value) in changes { claims[key] = value }
            return claims
        }

        /// `POST /v1/auth/exchange`, form-encoded as RFC 8693 has it.
        func exchange(_ jwt: String) async throws -> (status: Int, json: [String: Any]) {
            let form =
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
                + "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&subject_token=\(jwt)"
            return try await call(
                "http://127.0.0.1:\(httpPort)/v1/auth/exchange", method: "POST", body: Data(form.utf8),
                type: "application/x-www-form-urlencoded")
        }

        /// A person's Rolegate token: an ID token for `client_id` rolegate-cli, exchanged.
        func personToken(_ subject: String, email: String, groups: [String]) async throws -> String {
            let now = Int(Date().timeIntervalSince1970)
            let idToken = try await sign(
                [
                    "iss": "http://127.0.0.1:\(providerPort)", "aud": "rolegate-cli", "sub": subject, "email": email,
                    "email_verified": true, "groups": groups, "iat": now, "exp": now + 600,
                ], kid: "people", alg: "ES256")
            let (status, answer) = try await exchange(idToken)
            #expect(status == 200, "\(answer)")
            return try #require(answer["access_token"] as? String)
        }

        func jwksFetches() async throws -> Int {
            try #require(
                try await call("http://127.0.0.1:\(providerPort)/control/stats").json["jwks_fetches"] as? Int)
        }
    }

    @Test func aWorkloadExchangesItsIdentityAndEveryWrongTokenIsRefusedWithItsOwnCode() async throws {
        let setup = try await Setup()
        defer { withExtendedLifetime(setup) {} }
        let gw = setup.gw

        // The right repository and branch: a token for deploy-bot, and psql as migrator.
        let good = try await setup.sign(setup.claims())
        let (status, answer) = try await setup.exchange(good)
        #expect(status == 200, "\(answer)")
        #expect(answer["service"] as? String == "deploy-bot" && answer["role"] as? String == "migrator")
        #expect(answer["subject"] as? String == Self.subject && answer["token_type"] as? String == "Bearer")
        #expect((answer["expires_in"] as? Int ?? 0) > 850 && (answer["expires_in"] as? Int ?? 0) <= 900)
        let token = try #require(answer["access_token"] as? String)
        let tokenID = try #require(answer["token_id"] as? String)
        #expect(try await gw.psql("deploy-bot", "SELECT current_user", token: token).stdout.contains("migrator"))

        // A key rotation at the provider works without restarting Rolegate.
        _ = try await setup.call(
            "http://127.0.0.1:\(setup.providerPort)/control/rotate", method: "POST",
            body: try JSONSerialization.data(withJSONObject: ["kid": "k2"]))
        let rotated = try await setup.exchange(try await setup.sign(setup.claims(), kid: "k2"))
        #expect(rotated.status == 200, "after a key rotation: \(rotated.json)")

        // 1,000 tokens with made-up kids: at most one more fetch of the keys per 30 s of flood.
        let before = try await setup.jwksFetches()
        let floodStarted = ContinuousClock.now
        let parts = good.split(separator: ".")
        var unknownKeys = 0
        for index in 0..<1000 {
            let header = Data(#"{"alg":"RS256","typ":"JWT","kid":"flood-\#(index)"}"#.utf8).base64URL
            let (status, json) = try await setup.exchange("\(header).\(parts[1]).\(parts[2])")
            if status == 401, json["code"] as? String == "unknown_key" { unknownKeys += 1 }
        }
        #expect(unknownKeys == 1000)
        let floodSeconds = (ContinuousClock.now - floodStarted).timeInterval
        let fetched = try await setup.jwksFetches() - before
        #expect(fetched <= 1 + Int(floodSeconds / 30), "\(fetched) fetches in \(floodSeconds) s of unknown kids")

        // Every wrong token, refused with its own code.
        let now = Int(Date().timeIntervalSince1970)
        var codes: [String: String] = [:]
        func refused(_ name: String, _ jwt: String, status expected: Int) async throws {
            let (status, json) = try await setup.exchange(jwt)
            #expect(status == expected, "\(name): \(status) \(json)")
            codes[name] = json["code"] as? String
            // The answer is a problem that says why, and never holds the identity token.
            #expect((json["detail"] as? String ?? "").count > 10 && !(json["detail"] as? String ?? "").contains(jwt))
        }
        try await refused(
            "pull_request ref",
            try await setup.sign(
                setup.claims(["ref": "refs/pull/7/merge", "sub": "repo:acme/billing:pull_request"]), kid: "k2"),
            status: 403)
        try await refused(
            "wrong audience", try await setup.sign(setup.claims(["aud": "other"]), kid: "k2"), status: 401)
        try await refused(
            "expired", try await setup.sign(setup.claims(["iat": now - 900, "exp": now - 600]), kid: "k2"), status: 401)
        try await refused(
            "older than max_age", try await setup.sign(setup.claims(["iat": now - 3600]), kid: "k2"), status: 401)
        let unsigned =
            Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64URL + "."
            + (try JSONSerialization.data(withJSONObject: setup.claims())).base64URL + ".x"
        try await refused("alg none", unsigned, status: 401)
        try await refused(
            "unknown key", try await setup.sign(setup.claims(), kid: "rogue", publish: false), status: 401)
        // An issuer whose keys cannot be read: 503, saying so.
        let unreachable = setup.claims(["iss": "http://127.0.0.1:\(setup.unreachablePort)"])
        try await refused("issuer unreachable", try await setup.sign(unreachable, kid: "k2"), status: 503)

        // A replay after revocation: the token is revoked, and its identity token cannot buy another.
        let spent = try await setup.sign(setup.claims(), kid: "k2")
        let spentAnswer = try await setup.exchange(spent)
        let spentID = try #require(spentAnswer.json["token_id"] as? String)
        try gw.fixture.expectRolegate(["token", "revoke", spentID, "--reason", "test"])
        try await refused("replay after revocation", spent, status: 401)
        try gw.fixture.expectRolegate(["token", "revoke", tokenID, "--reason", "test"])
        let revoked = try await gw.psql("deploy-bot", "SELECT 1", token: token)
        #expect(revoked.status != 0 && revoked.stderr.contains("revoked"), "\(revoked.stderr)")
        #expect(
            codes == [
                "pull_request ref": "no_matching_rule", "wrong audience": "wrong_audience",
                "expired": "identity_expired", "older than max_age": "identity_too_old",
                "alg none": "algorithm_not_allowed", "unknown key": "unknown_key",
                "issuer unreachable": "issuer_unreachable", "replay after revocation": "identity_revoked",
            ], "\(codes)")
        // The issuer being unreachable affected no token already issued.
        #expect(try await gw.psql("deploy-bot", "SELECT 1", token: rotated.json["access_token"] as? String).status == 0)

        // The audit log has every exchange and refusal, and the sessions with their subject.
        let audit = try gw.fixture.expectRolegate(["audit", "--format", "json", "--limit", "5000"]).stdout
        let events = audit.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        func detail(_ event: [String: Any]) -> [String: String] { event["detail"] as? [String: String] ?? [:] }
        let exchanged = events.filter { $0["action"] as? String == "exchanged" }
        #expect(exchanged.count == 3 && exchanged.allSatisfy { detail($0)["subject"] == Self.subject })
        let sessions = events.filter { $0["kind"] as? String == "session" && $0["service"] as? String == "deploy-bot" }
        #expect(!sessions.isEmpty && sessions.allSatisfy { detail($0)["subject"] == Self.subject }, "\(sessions)")
        let refusals = Set(
            events.filter { $0["kind"] as? String == "auth" && detail($0)["channel"] == "exchange" }.compactMap {
                detail($0)["code"]
            })
        #expect(refusals.isSuperset(of: Set(codes.values)), "\(refusals)")
        #expect(!audit.contains(token) && !audit.contains(good), "a secret reached the audit log")
    }

    @Test func oneLiveTokenPerSubjectRevocableBySubjectAndAJWTAsThePasswordOverTLS() async throws {
        let setup = try await Setup()
        defer { withExtendedLifetime(setup) {} }
        let gw = setup.gw
        // Two exchanges by one subject: the first token goes into its grace, one stays live.
        let first = try await setup.exchange(try await setup.sign(setup.claims()))
        let second = try await setup.exchange(try await setup.sign(setup.claims()))
        #expect(first.status == 200 && second.status == 200)
        // Another subject the rule accepts (an environment of the same branch) gets its own.
        let other = try await setup.exchange(
            try await setup.sign(setup.claims(["sub": "repo:acme/billing:environment:prod"])))
        #expect(other.status == 200, "\(other.json)")
        let listed = try gw.fixture.expectRolegate(["token", "list", "--format", "json"]).stdout
        let tokens = try #require(try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [[String: Any]])
        let states = tokens.filter { $0["subject"] as? String == Self.subject }.map { $0["state"] as? String ?? "" }
        #expect(states.sorted() == ["grace", "live"], "\(tokens)")
        #expect(tokens.contains { $0["subject"] as? String == "repo:acme/billing:environment:prod" })

        // From the CLI, as a CI job does it: the JWT from a file, PGUSER/PGPASSWORD out.
        let jwtFile = setup.keys + "/ci-jwt"
        try (try await setup.sign(setup.claims(["sub": "repo:acme/billing:environment:staging"])))
            .write(toFile: jwtFile, atomically: true, encoding: .utf8)
        let exported = try await Subprocess.runDetached(
            RolegateBinary.path,
            [
                "token", "exchange", "--jwt-file", jwtFile, "--api", "http://127.0.0.1:\(setup.httpPort)", "--format",
                "env",
            ])
        #expect(exported.status == 0 && exported.stdout.contains("export PGUSER='deploy-bot'"), "\(exported.stderr)")
        let cliToken = try #require(
            exported.stdout.split(separator: "\n").first { $0.hasPrefix("export PGPASSWORD=") }?.split(separator: "'")
                .dropFirst().first.map(String.init))
        #expect(try await gw.psql("deploy-bot", "SELECT current_user", token: cliToken).stdout.contains("migrator"))
        let bySubject = try gw.fixture.expectRolegate([
            "token", "list", "--subject", "repo:acme/billing:environment:staging", "--format", "json",
        ]).stdout
        #expect(bySubject.contains("environment:staging") && !bySubject.contains(Self.subject), "\(bySubject)")
        try "\n".write(toFile: jwtFile, atomically: true, encoding: .utf8)
        let refusedCLI = try await Subprocess.runDetached(
            RolegateBinary.path,
            ["token", "exchange", "--jwt-file", jwtFile, "--api", "http://127.0.0.1:\(setup.httpPort)"])
        #expect(refusedCLI.status != 0 && refusedCLI.stderr.contains("is empty"), "\(refusedCLI.stderr)")
        try "eyJhbGciOiJub25lIn0.e30.x".write(toFile: jwtFile, atomically: true, encoding: .utf8)
        let noneCLI = try await Subprocess.runDetached(
            RolegateBinary.path,
            ["token", "exchange", "--jwt-file", jwtFile, "--api", "http://127.0.0.1:\(setup.httpPort)"])
        #expect(
            noneCLI.status != 0 && noneCLI.stderr.contains("401 algorithm_not_allowed"), "\(noneCLI.stderr)")

        // A JWT as the password, over TLS: psql as deploy-bot, no exchange first.
        let jwt = try await setup.sign(setup.claims(["jti": UUID().uuidString]))
        let tls = "dbname=app sslmode=verify-full sslrootcert=\(setup.keys)/gateway.crt"
        let direct = try await gw.psql("deploy-bot", "SELECT current_user", token: jwt, database: tls)
        #expect(direct.status == 0 && direct.stdout.contains("migrator"), "\(direct.stderr)")
        // Several connections with one JWT share one exchanged token.
        for _ in 0..<3 {
            #expect(try await gw.psql("deploy-bot", "SELECT 1", token: jwt, database: tls).status == 0)
        }
        let expired = try await setup.sign(
            setup.claims([
                "iat": Int(Date().timeIntervalSince1970) - 900, "exp": Int(Date().timeIntervalSince1970) - 600,
            ]))
        let refused = try await gw.psql("deploy-bot", "SELECT 1", token: expired, database: tls)
        #expect(refused.status != 0 && refused.stderr.contains("the identity token expired"), "\(refused.stderr)")

        // Revoking the subject ends every one of its tokens (and the live session it holds).
        let session = Task { try await gw.psql("deploy-bot", "SELECT pg_sleep(20)", token: jwt, database: tls) }
        try await Task.sleep(for: .seconds(1))
        let revoked = try gw.fixture.expectRolegate([
            "token", "revoke", "--subject", Self.subject, "--reason", "left the team", "--format", "json",
        ]).stdout
        let revokedTokens = try #require(try JSONSerialization.jsonObject(with: Data(revoked.utf8)) as? [[String: Any]])
        // The subject's usable tokens: the wire login's, and the second exchange's in its grace
        // (the first one's grace ended when the second was superseded: one token in grace at most).
        #expect(revokedTokens.count == 2, "\(revoked)")
        let ended = try await session.value
        #expect(ended.status != 0, "the session of a revoked subject kept running")
        // The other subject's token is untouched.
        #expect(try await gw.psql("deploy-bot", "SELECT 1", token: other.json["access_token"] as? String).status == 0)
    }
    @Test func aPersonWithoutABrowserLogsInWithADeviceCode() async throws {
        let setup = try await Setup()
        defer { withExtendedLifetime(setup) {} }
        let gw = setup.gw
        let home = setup.keys + "/home"
        var environment = gw.environment
        environment["XDG_CONFIG_HOME"] = home
        let api = "http://127.0.0.1:\(setup.httpPort)"
        let login = try Subprocess.launch(
            RolegateBinary.path, ["login", "--api", api, "--device"], environment: environment,
            output: setup.keys + "/device-login.log")
        var userCode: String?
        for _ in 0..<100 where userCode == nil {
            try await Task.sleep(for: .milliseconds(100))
            userCode = login.output.range(of: "enter the code ").map {
                String(login.output[$0.upperBound...].prefix { !$0.isWhitespace })
            }
        }
        let code = try #require(userCode, "no user code was shown: \(login.output)")
        #expect(login.output.contains("/activate and enter the code \(code)"), "\(login.output)")
        // Still waiting: the person has not approved yet (the CLI polls, authorization_pending).
        try await Task.sleep(for: .seconds(2))
        #expect(!login.output.contains("Logged in"))
        let approved = try await setup.call(
            "http://127.0.0.1:\(setup.providerPort)/control/approve", method: "POST",
            body: try JSONSerialization.data(withJSONObject: [
                "user_code": code, "claims": ["sub": "carol-3", "email": "carol@example.com", "email_verified": true],
            ]))
        #expect(approved.status == 200)
        #expect(login.stop(signal: 0) == 0, "\(login.output)")
        #expect(login.output.contains("Logged in as carol@example.com (role reader)"), "\(login.output)")
        let psql = try await Subprocess.runDetached(
            RolegateBinary.path, ["psql", "--api", api, "--", "-X", "-A", "-t", "-c", "SELECT current_user"],
            environment: environment)
        #expect(psql.status == 0 && psql.stdout.contains("reader"), "\(psql.stdout)\(psql.stderr)")
    }
}

extension Data {
    /// base64url without padding (JWT segments).
    var base64URL: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
