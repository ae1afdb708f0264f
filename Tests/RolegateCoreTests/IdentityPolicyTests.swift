import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

/// The identity sections of the policy: `trust:`, a service's `identity:`, `people:` and
/// `groups:`, read as strictly as the rest of the file.
@Suite(.ownThreads) struct IdentityPolicyTests {
    static let base = """
        version: 1
        databases:
          app:
            url: ${APP_ADMIN_URL}
        roles:
          migrator: {}
          analyst_ro: {}
        """

    static let valid =
        base + """

            trust:
              github:
                issuer: https://token.actions.githubusercontent.com
                jwks_url: https://token.actions.githubusercontent.com/.well-known/jwks
                audiences: [rolegate-prod]
                max_age: 10m
              corp-sso:
                issuer: https://sso.example.com
                client_id: rolegate
            services:
              deploy-bot:
                role: migrator
                identity:
                  trust: github
                  claims: {repository: acme/billing, ref: refs/heads/main}
                max_live_tokens: 5
            people:
              alice@example.com: {role: analyst_ro, trust: corp-sso}
            groups:
              data-team: {role: analyst_ro, trust: corp-sso, claim: groups}
            """

    @Test func theIssuesExampleLoads() throws {
        let policy = try load(Self.valid)
        let github = try #require(policy.trust(named: "github"))
        #expect(github.keys == .url(URL(string: "https://token.actions.githubusercontent.com/.well-known/jwks")!))
        #expect(github.audiences == ["rolegate-prod"] && github.maxAge == .seconds(600))
        let sso = try #require(policy.trust(named: "corp-sso"))
        #expect(sso.keys == .discovery(URL(string: "https://sso.example.com/.well-known/openid-configuration")!))
        #expect(sso.acceptedAudiences == ["rolegate"])
        let bot = try #require(policy.service(named: "deploy-bot"))
        #expect(bot.identity?.trust == "github" && bot.identity?.claims.count == 2 && bot.maxLiveTokens == 5)
        // Exchanged tokens are minutes-long unless token_ttl says otherwise.
        #expect(bot.tokenTTL == ServiceSpec.defaultIdentityTokenTTL)
        #expect(policy.person(named: "alice@example.com")?.role == "analyst_ro")
        #expect(policy.groups.first?.grant == "group:data-team")
        #expect(
            policy.bindings == [
                "deploy-bot": "migrator", "alice@example.com": "analyst_ro", "group:data-team": "analyst_ro",
            ])
        #expect(policy.mayHoldTokens("bob@example.com"))  // through the group
    }

    /// One problem, at its line and column, with a message naming it.
    func expectIssue(
        _ yaml: String, at line: Int, _ fragment: String, sourceLocation: Testing.SourceLocation = #_sourceLocation
    ) {
        let found = issues(yaml)
        #expect(found.count == 1, "\(found)", sourceLocation: sourceLocation)
        #expect(found.first?.message.contains(fragment) == true, "\(found)", sourceLocation: sourceLocation)
        #expect(found.first?.location?.line == line, "\(found)", sourceLocation: sourceLocation)
        #expect(found.first?.location?.file == "test.yaml", sourceLocation: sourceLocation)
    }

    @Test func aTrustWithoutAudienceIsRefused() {
        expectIssue(
            Self.base + "\ntrust:\n  github:\n    issuer: https://token.actions.githubusercontent.com\n", at: 10,
            "a trust needs 'audiences'")
    }

    @Test func anUnknownClaimOperatorIsRefused() {
        let yaml = Self.valid.replacingOccurrences(
            of: "{repository: acme/billing, ref: refs/heads/main}",
            with: "{repository: acme/billing, ref: {regex: 'refs/.*'}}")
        expectIssue(yaml, at: 22, "unknown claim operator 'regex'")
    }

    @Test func settingsThatContradictIdentityAreRefused() {
        let yaml = Self.valid.replacingOccurrences(of: "    max_live_tokens: 5", with: "    max_token_ttl: 24h")
        expectIssue(yaml, at: 23, "max_token_ttl caps tokens issued or rotated by hand")
        let staticLimit = Self.valid.replacingOccurrences(
            of: "      alice@example.com:", with: "      alice@example.com:"
        ).replacingOccurrences(
            of: "services:\n  deploy-bot:",
            with: "services:\n  ci-static: {role: analyst_ro, max_live_tokens: 3}\n  deploy-bot:")
        #expect(
            issues(staticLimit).contains { $0.message.contains("max_live_tokens applies to a service with identity:") })
    }

    @Test func aRuleThatAcceptsAnyTokenIsRefused() {
        let none = Self.valid.replacingOccurrences(
            of: "      claims: {repository: acme/billing, ref: refs/heads/main}\n", with: "")
        expectIssue(none, at: 21, "missing key 'claims'")
        let wildcard = Self.valid.replacingOccurrences(
            of: "{repository: acme/billing, ref: refs/heads/main}", with: "{repository: '*'}")
        expectIssue(wildcard, at: 22, "every claim is '*'")
    }

    @Test func referencesAreChecked() {
        expectIssue(
            Self.valid.replacingOccurrences(of: "trust: github", with: "trust: gitlab"), at: 21,
            "unknown trust 'gitlab'; declared trusts: github, corp-sso")
        expectIssue(
            Self.valid.replacingOccurrences(
                of: "{role: analyst_ro, trust: corp-sso}", with: "{role: analyst, trust: corp-sso}"),
            at: 25, "unknown role 'analyst'")
        // People log in through an OAuth client.
        expectIssue(
            Self.valid.replacingOccurrences(
                of: "{role: analyst_ro, trust: corp-sso}", with: "{role: analyst_ro, trust: github}"),
            at: 25, "trust 'github' has no client_id")
        expectIssue(
            Self.valid.replacingOccurrences(
                of: "    issuer: https://sso.example.com", with: "    issuer: http://sso.example.com"),
            at: 15, "must use https")
        expectIssue(
            Self.valid.replacingOccurrences(
                of: "    client_id: rolegate",
                with: "    client_id: rolegate\n    jwks_url: https://a.example/jwks\n    jwks_file: k.json"),
            at: 17, "jwks_url and jwks_file name the keys twice")
    }

    @Test func aRoleStaysItsServicesAlone() {
        let yaml = Self.valid.replacingOccurrences(
            of: "alice@example.com: {role: analyst_ro", with: "alice@example.com: {role: migrator")
        let found = issues(yaml)
        #expect(found.count == 1 && found[0].message.contains("role 'migrator' is service 'deploy-bot''s"), "\(found)")
        #expect(found.first?.keyPath == "people.alice@example.com.role")
    }

    @Test func typosInTheNewSectionsAreNamed() {
        expectIssue(
            Self.valid.replacingOccurrences(of: "    max_age: 10m", with: "    max_agee: 10m"), at: 13,
            "did you mean 'max_age'")
        expectIssue(
            Self.valid.replacingOccurrences(of: "      trust: github", with: "      trusts: github"), at: 21,
            "did you mean 'trust'")
    }
}

/// `mcp:` on a service: off by default, `true`, or limits (which turn it on).
@Suite(.ownThreads) struct MCPPolicyTests {
    static func policy(_ service: String, gateway: String = "") -> String {
        """
        version: 1
        databases: {app: {url: "postgres://admin@127.0.0.1/app"}}
        roles: {reader: {}}
        services:
          agent: \(service)
          ops: {admin: true}
        \(gateway)
        """
    }

    @Test func offByDefaultOnWithTrueOrLimits() throws {
        #expect(try load(Self.policy("{role: reader}")).service(named: "agent")?.mcp == nil)
        #expect(try load(Self.policy("{role: reader, mcp: false}")).service(named: "agent")?.mcp == nil)
        #expect(try load(Self.policy("{role: reader, mcp: true}")).service(named: "agent")?.mcp == MCPSettings())
        let limited = try load(
            Self.policy("{role: reader, mcp: {max_rows: 50, statement_timeout: 5s, explain_analyze: true}}"))
        let settings = try #require(limited.service(named: "agent")?.mcp)
        #expect(settings.maxRows == 50 && settings.statementTimeout == .seconds(5) && settings.explainAnalyze)
    }

    @Test func mistakesAreNamed() {
        let typo = issues(Self.policy("{role: reader, mcp: {max_row: 50}}"))
        #expect(typo.count == 1 && typo[0].message.contains("did you mean 'max_rows'"), "\(typo)")
        let zero = issues(Self.policy("{role: reader, mcp: {max_rows: 0}}"))
        #expect(zero.count == 1 && zero[0].message.contains("max_rows must be between 1 and 100000"), "\(zero)")
        let admin = issues(
            Self.policy("{role: reader}").replacingOccurrences(
                of: "ops: {admin: true}", with: "ops: {admin: true, mcp: true}"))
        #expect(admin.count == 1 && admin[0].message.contains("MCP is for data services"), "\(admin)")
        let origin = issues(
            Self.policy("{role: reader, mcp: true}", gateway: "gateway: {mcp_allowed_origins: [agents.example.com]}"))
        #expect(origin.count == 1 && origin[0].message.contains("is not an origin"), "\(origin)")
    }
}

/// `access:` and `webhooks:`: requestable grants and where their events go.
@Suite(.ownThreads) struct AccessPolicyTests {
    static let base = """
        version: 1
        databases: {app: {url: "postgres://admin@127.0.0.1/app"}}
        roles: {billing_fixer: {}, billing_admin: {}, reader: {}}
        services: {deploy-bot: {role: reader}, ops: {admin: true}}
        """

    @Test func theIssuesExampleLoads() throws {
        let policy = try load(
            Self.base + """

                access:
                  fix-billing:
                    role: billing_fixer
                    requesters: [group:oncall, alice@example.com, service:deploy-bot]
                    approvers: [group:billing-leads]
                    min_approvals: 1
                    max_duration: 1h
                    require_reason: true
                    pending_timeout: 30m
                  break-glass:
                    role: billing_admin
                    requesters: [group:oncall]
                    approvers: []
                    max_duration: 15m
                webhooks:
                  security: {url: "https://hooks.example.com/rolegate", secret: "0123456789abcdef0123", format: slack}
                """)
        let fix = try #require(policy.access(named: "fix-billing"))
        #expect(fix.requesters == [.group("oncall"), .person("alice@example.com"), .service("deploy-bot")])
        #expect(fix.minApprovals == 1 && fix.maxDuration == .seconds(3600) && fix.requireReason && !fix.isBreakGlass)
        let glass = try #require(policy.access(named: "break-glass"))
        #expect(glass.isBreakGlass && glass.minApprovals == 0 && glass.requireReason)  // always asks why
        #expect(policy.webhooks.first?.format == .slack && policy.webhooks.first?.events == WebhookSpec.events)
        #expect(policy.bindings["access:fix-billing"] == "billing_fixer")
        #expect(Principal.group("oncall").includes(login: "bob@example.com", groups: ["oncall"], isService: false))
        #expect(!Principal.person("deploy-bot").includes(login: "deploy-bot", groups: [], isService: true))
    }

    func expectIssue(_ access: String, _ fragment: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let found = issues(Self.base + "\naccess:\n  grant: " + access + "\n")
        #expect(found.count == 1, "\(found)", sourceLocation: sourceLocation)
        #expect(found.first?.message.contains(fragment) == true, "\(found)", sourceLocation: sourceLocation)
        #expect(found.first?.location != nil, sourceLocation: sourceLocation)
    }

    @Test func mistakesAreNamed() {
        expectIssue("{role: writer, requesters: [a@x.io], approvers: [b@x.io]}", "unknown role 'writer'")
        expectIssue("{role: reader, requesters: [a@x.io], approvers: [b@x.io]}", "is service 'deploy-bot''s")
        expectIssue(
            "{role: billing_fixer, requesters: [service:ghost], approvers: [b@x.io]}", "service:ghost is not a service")
        expectIssue("{role: billing_fixer, requesters: [a@x.io]}", "missing key 'approvers'")
        expectIssue(
            "{role: billing_fixer, requesters: [a@x.io], approvers: [], min_approvals: 1}", "min_approvals must be 0")
        expectIssue(
            "{role: billing_fixer, requesters: [a@x.io], approvers: [], require_reason: false}",
            "break-glass (no approvers) always requires a reason")
        expectIssue(
            "{role: billing_fixer, requesters: [a@x.io], approvers: [b@x.io], max_duration: 2d}", "at most 24h")
        let hook = issues(
            Self.base + "\nwebhooks:\n  h: {url: \"https://h.example\", secret: short, events: [approvd]}\n")
        #expect(hook.contains { $0.message.contains("at least 16 bytes") }, "\(hook)")
        let events = issues(
            Self.base + "\nwebhooks:\n  h: {url: \"https://h.example\", secret: 0123456789abcdef0, events: [approvd]}\n"
        )
        #expect(events.count == 1 && events[0].message.contains("unknown event approvd"), "\(events)")
    }
}
