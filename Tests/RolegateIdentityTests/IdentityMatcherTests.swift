import Foundation
import RolegateCore
import RolegateTestSupport
import Testing

@testable import RolegateIdentity

/// Which entry of the policy a verified identity gets: exactly one, or a refusal that says why.
@Suite(.ownThreads) struct IdentityMatcherTests {
    static let policyText = """
        version: 1
        databases:
          app: {url: "postgres://admin@127.0.0.1/app"}
        roles:
          migrator: {}
          deployer: {}
          analyst_ro: {shared: true}
          oncall_rw: {}
        trust:
          github: {issuer: "https://token.actions.githubusercontent.com", audiences: [rolegate-prod]}
          corp-sso: {issuer: "https://sso.example.com", client_id: rolegate}
        services:
          deploy-bot:
            role: migrator
            identity: {trust: github, claims: {repository: acme/billing, ref: refs/heads/main}}
          release-bot:
            role: deployer
            identity: {trust: github, claims: {repository: acme/billing, ref: "refs/heads/release-*"}}
        people:
          alice@example.com: {role: analyst_ro, trust: corp-sso}
        groups:
          data-team: {role: analyst_ro, trust: corp-sso}
          oncall: {role: oncall_rw, trust: corp-sso}
        """

    let policy: Policy

    init() throws {
        policy = try PolicyLoader.parse(text: Self.policyText, file: "test.yaml", environment: [:])
    }

    func identity(_ trust: String, _ subject: String, _ claims: [String: ClaimValue]) -> VerifiedIdentity {
        VerifiedIdentity(
            trust: trust, issuer: "", subject: subject, claims: claims, issuedAt: nil, expiresAt: Date() + 300)
    }

    @Test func aWorkloadGetsTheOneServiceItsClaimsSatisfy() throws {
        let main = identity(
            "github", "repo:acme/billing:ref:refs/heads/main",
            ["repository": .string("acme/billing"), "ref": .string("refs/heads/main")])
        let grant = try IdentityMatcher.grant(for: main, in: policy)
        #expect(grant.login == "deploy-bot" && grant.role == "migrator" && grant.grant == nil)
        #expect(grant.subject == "repo:acme/billing:ref:refs/heads/main" && grant.ttl == .seconds(900))
        let release = identity(
            "github", "repo:acme/billing:ref:refs/heads/release-3",
            ["repository": .string("acme/billing"), "ref": .string("refs/heads/release-3")])
        #expect(try IdentityMatcher.grant(for: release, in: policy).login == "release-bot")
    }

    @Test func noMatchSaysWhichClaimFailedForEachService() {
        let pullRequest = identity(
            "github", "repo:acme/billing:pull_request",
            ["repository": .string("acme/billing"), "ref": .string("refs/pull/7/merge")])
        #expect(throws: IdentityRefusal.self) { try IdentityMatcher.grant(for: pullRequest, in: self.policy) }
        do {
            _ = try IdentityMatcher.grant(for: pullRequest, in: policy)
        } catch {
            #expect(error.code == "no_matching_rule")
            #expect(error.description.contains("service deploy-bot: ref did not match"), "\(error)")
            #expect(error.description.contains("service release-bot: ref did not match"), "\(error)")
        }
    }

    @Test func aPersonByVerifiedEmailWinsOverTheirGroups() throws {
        let alice = identity(
            "corp-sso", "u-1", ["email": .string("Alice@Example.com"), "groups": .array([.string("oncall")])])
        let grant = try IdentityMatcher.grant(for: alice, in: policy)
        #expect(grant.login == "alice@example.com" && grant.role == "analyst_ro" && grant.grant == nil)
        // An unverified email is not an email to log in as.
        let unverified = identity(
            "corp-sso", "u-1", ["email": .string("alice@example.com"), "email_verified": .bool(false)])
        #expect(throws: IdentityRefusal.self) { try IdentityMatcher.grant(for: unverified, in: self.policy) }
    }

    @Test func aGroupMemberLogsInAsThemselvesWithTheGroupsRole() throws {
        let bob = identity(
            "corp-sso", "u-2", ["email": .string("bob@example.com"), "groups": .array([.string("data-team")])])
        let grant = try IdentityMatcher.grant(for: bob, in: policy)
        #expect(grant.login == "bob@example.com" && grant.role == "analyst_ro" && grant.grant == "group:data-team")
        // Two groups with two roles: one token is one role, so neither is chosen.
        let both = identity(
            "corp-sso", "u-3",
            ["email": .string("carol@example.com"), "groups": .array([.string("data-team"), .string("oncall")])])
        do {
            _ = try IdentityMatcher.grant(for: both, in: policy)
            Issue.record("two groups were accepted")
        } catch {
            #expect(error == .ambiguous(subject: "u-3", matches: ["group data-team", "group oncall"]))
        }
    }
}
