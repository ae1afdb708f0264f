import Foundation
import PostgresCluster
import RolegateCore
import RolegateTestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A person logs in as a person does: `rolegate login` prints the provider's login page, a real
/// browser (headless Chromium, `Clients/people_login.py`) fills in the provider's form
/// (`oidc-provider-mock`, a real OpenID provider on loopback), the provider sends the browser
/// back to rolegate's loopback listener, and the ID token becomes the person's Rolegate token.
/// Then `rolegate psql` runs as them, in their role, and the audit log says it was them.
extension HeavyTests {
    @Suite(.serialized) struct PeopleLoginTests {
        static func policy(provider: Int) -> String {
            """
            version: 1
            databases:
              app:
                url: ${APP_ADMIN_URL}
            roles:
              analyst_ro:
                grants:
                  - on: TABLE public.notes
                    privileges: [SELECT]
              oncall_rw:
                grants:
                  - on: TABLE public.notes
                    privileges: [SELECT, INSERT]
            trust:
              corp-sso:
                issuer: http://127.0.0.1:\(provider)
                client_id: rolegate-cli
                client_secret: installed-app-not-secret   # the provider wants one from every client
            people:
              alice@example.com: {role: analyst_ro, trust: corp-sso}
            groups:
              oncall: {role: oncall_rw, trust: corp-sso}
            console:
              operator: [group:oncall]
            """
        }

        @Test func aPersonLogsInThroughTheProvidersFormAndRunsPsqlAsThemselves() async throws {
            try requirePythonModule("oidc_provider_mock")
            try requireBrowser()
            let home = NSTemporaryDirectory() + "rolegate-people-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: home) }
            let providerPort = try PostgresCluster.freePort()
            let provider = try Subprocess.launch(
                TestClients.python,
                ["-m", "oidc_provider_mock", "--port", String(providerPort), "--require-nonce", "true"],
                environment: ProcessInfo.processInfo.environment, output: home + "/provider.log")
            defer { provider.stop(signal: 9) }
            let providerURL = "http://127.0.0.1:\(providerPort)"
            var up = false
            for _ in 0..<100 where !up {
                try await Task.sleep(for: .milliseconds(100))
                up =
                    (try? await URLSession.shared.data(
                        from: URL(string: providerURL + "/.well-known/openid-configuration")!))
                    != nil
            }
            #expect(up, "the OpenID provider did not start: \(provider.output)")
            // The provider's users: alice by name, bob by his group.
            for (sub, claims) in [
                ("alice-1", #"{"email": "alice@example.com", "email_verified": true}"#),
                ("bob-2", #"{"email": "bob@example.com", "email_verified": true, "groups": ["oncall"]}"#),
            ] {
                var request = URLRequest(url: URL(string: "\(providerURL)/users/\(sub)")!)
                request.httpMethod = "PUT"
                request.setValue("application/json", forHTTPHeaderField: "Content-Type")
                request.httpBody = Data(claims.utf8)
                let (_, response) = try await URLSession.shared.data(for: request)
                #expect((response as? HTTPURLResponse)?.statusCode == 204)
            }

            let httpPort = try PostgresCluster.freePort()
            let gw = try await GatewayFixture(
                policy: Self.policy(provider: providerPort), serveArguments: ["--http", "127.0.0.1:\(httpPort)"])
            defer { withExtendedLifetime(gw) {} }
            for _ in 0..<100 where !gw.server.output.contains("HTTP API on") {
                try await Task.sleep(for: .milliseconds(50))
            }
            let api = "http://127.0.0.1:\(httpPort)"
            var environment = gw.environment
            environment["XDG_CONFIG_HOME"] = home + "/config"
            environment["HOME"] = home

            /// `rolegate login` for `subject`, completed in the browser; returns what login printed.
            func login(_ subject: String, screenshots: String) async throws -> String {
                let output = home + "/login-\(subject).log"
                let process = try Subprocess.launch(
                    RolegateBinary.path, ["login", "--api", api, "--no-browser", "--timeout", "60s"],
                    environment: environment, output: output)
                var url: String?
                for _ in 0..<200 where url == nil {
                    try await Task.sleep(for: .milliseconds(50))
                    url = process.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                        .first { $0.hasPrefix("http://127.0.0.1:\(providerPort)/") }
                }
                let loginURL = try #require(url, "rolegate login printed no login URL: \(process.output)")
                #expect(loginURL.contains("code_challenge_method=S256") && loginURL.contains("nonce="))
                let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                    .appendingPathComponent("Clients/people_login.py").path
                let browser = try await Subprocess.runDetached(
                    TestClients.python, [script, loginURL, subject, screenshots])
                #expect(browser.status == 0, "the browser login failed: \(browser.stdout)\n\(browser.stderr)")
                #expect(browser.stdout.contains("people login: Logged in as"), "\(browser.stdout)")
                let status = process.stop(signal: 0)
                #expect(status == 0, "rolegate login: \(process.output)")
                return process.output
            }

            let screenshots =
                (ProcessInfo.processInfo.environment["ROLEGATE_SCREENSHOTS"] ?? NSTemporaryDirectory())
                + "/rolegate-people-login"
            let printed = try await login("alice-1", screenshots: screenshots)
            #expect(printed.contains("Logged in as alice@example.com (role analyst_ro)"), "\(printed)")
            print("people login: screenshots in \(screenshots)")

            // The token is kept for the person alone.
            let credentials = home + "/config/rolegate/credentials.json"
            let mode = try FileManager.default.attributesOfItem(atPath: credentials)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            let folderMode =
                try FileManager.default.attributesOfItem(atPath: home + "/config/rolegate")[
                    .posixPermissions] as? Int
            #expect(folderMode == 0o700)

            // rolegate psql: as alice, in her role; and rolegate env for any libpq client.
            let psql = try await Subprocess.runDetached(
                RolegateBinary.path,
                ["psql", "--api", api, "--", "-X", "-A", "-t", "-c", "SELECT current_user, count(*) FROM notes"],
                environment: environment)
            #expect(psql.status == 0 && psql.stdout.contains("analyst_ro|"), "\(psql.stdout)\(psql.stderr)")
            let write = try await Subprocess.runDetached(
                RolegateBinary.path, ["psql", "--api", api, "--", "-X", "-c", "INSERT INTO notes VALUES (1, 'x')"],
                environment: environment)
            #expect(write.status != 0 && write.stderr.contains("permission denied"), "\(write.stderr)")
            let env = try await Subprocess.runDetached(
                RolegateBinary.path, ["env", "--api", api], environment: environment)
            #expect(
                env.stdout.contains("export PGUSER='alice@example.com'")
                    && env.stdout.contains("export PGDATABASE='app'"))
            #expect(env.stdout.contains("export PGPORT='\(gw.port)'") && env.stdout.contains("export PGPASSWORD='rgt_"))

            // Bob is in no people: entry, but his group names a role: he connects as himself in it.
            let bob = try await login("bob-2", screenshots: screenshots + "-bob")
            #expect(bob.contains("Logged in as bob@example.com (role oncall_rw)"), "\(bob)")
            let bobWrites = try await Subprocess.runDetached(
                RolegateBinary.path,
                [
                    "psql", "--api", api, "--", "-X", "-A", "-t", "-d", "app", "-c",
                    "INSERT INTO notes VALUES (2, 'y') RETURNING current_user",
                ],
                environment: environment)
            #expect(
                bobWrites.status == 0 && bobWrites.stdout.contains("oncall_rw"),
                "\(bobWrites.stdout)\(bobWrites.stderr)")

            // Their sessions, statements and tokens are theirs in the audit log.
            try await Task.sleep(for: .milliseconds(500))
            let audit = try gw.fixture.expectRolegate(["audit", "--format", "json", "--limit", "1000"]).stdout
            let events = audit.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            func detail(_ event: [String: Any]) -> [String: String] { event["detail"] as? [String: String] ?? [:] }
            let alices = events.filter { $0["service"] as? String == "alice@example.com" }
            #expect(alices.contains { $0["action"] as? String == "exchanged" && detail($0)["subject"] == "alice-1" })
            #expect(alices.contains { $0["kind"] as? String == "session" && detail($0)["subject"] == "alice-1" })
            #expect(
                alices.contains {
                    $0["kind"] as? String == "statement" && ($0["sql"] as? String ?? "").contains("FROM notes")
                        && detail($0)["subject"] == "alice-1"
                })
            #expect(
                events.contains {
                    $0["service"] as? String == "bob@example.com" && $0["action"] as? String == "exchanged"
                        && detail($0)["grant"] == "group:oncall"
                })
            // Alice's token went to her terminal and nowhere else (bob's login replaced it in the file).
            let token = try #require(
                env.stdout.split(separator: "\n").first { $0.hasPrefix("export PGPASSWORD=") }?.split(separator: "'")
                    .dropFirst().first)
            #expect(!audit.contains(token) && !gw.server.output.contains(token) && !printed.contains(token))
            #expect(try String(contentsOfFile: credentials, encoding: .utf8).contains("bob@example.com"))

            // Bob logs in to the console through the same provider: he is an operator there (his
            // group), his terminal's token keeps working, and revoking his subject ends both.
            let cookieFile = home + "/console-cookie"
            let consoleScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Clients/console_oidc_login.py").path
            let consoleLogin = try await Subprocess.runDetached(
                TestClients.python, [consoleScript, api, "corp-sso", "bob-2", cookieFile, screenshots + "-console"])
            #expect(consoleLogin.status == 0, "\(consoleLogin.stdout)\n\(consoleLogin.stderr)")
            #expect(consoleLogin.stdout.contains("logged in as bob@example.com · operator at \(api)/console"))
            let cookie = "rolegate_console=" + (try String(contentsOfFile: cookieFile, encoding: .utf8))
            func consoleStatus() async throws -> Int {
                var request = URLRequest(url: URL(string: api + "/console/sessions")!)
                request.setValue(cookie, forHTTPHeaderField: "Cookie")
                let session = URLSession(configuration: .ephemeral, delegate: NoRedirects(), delegateQueue: nil)
                let (_, response) = try await session.data(for: request)
                return (response as? HTTPURLResponse)?.statusCode ?? 0
            }
            #expect(try await consoleStatus() == 200)
            let stillWorks = try await Subprocess.runDetached(
                RolegateBinary.path, ["psql", "--api", api, "--", "-X", "-A", "-t", "-c", "SELECT current_user"],
                environment: environment)
            #expect(
                stillWorks.status == 0 && stillWorks.stdout.contains("oncall_rw"),
                "the console login cut short bob's terminal token: \(stillWorks.stderr)")
            try gw.fixture.expectRolegate(["token", "revoke", "--subject", "bob-2", "--reason", "left the team"])
            var ended = false
            for _ in 0..<50 where !ended {
                ended = try await consoleStatus() == 303
                if !ended { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(ended, "the console session outlived its subject's revocation")
            let consoleEvents = try gw.fixture.expectRolegate(["audit", "--format", "json", "--kind", "auth"]).stdout
            #expect(consoleEvents.contains(#""method":"oidc""#) && consoleEvents.contains(#""channel":"console""#))
        }
    }
}
