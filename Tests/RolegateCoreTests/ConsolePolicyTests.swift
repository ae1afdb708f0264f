import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

/// `console:` in the policy (who is admin, operator or viewer in the web console), and the
/// sealing the console hands a just-issued token to the browser with.
@Suite(.ownThreads) struct ConsolePolicyTests {
    static let base = """
        version: 1
        databases:
          app:
            url: ${APP_ADMIN_URL}
        roles:
          reader: {}
        services:
          reports: {role: reader}
          ops: {admin: true}

        """

    @Test func rolesComeFromPeopleGroupsAndServicesAndAdminServicesAreAdmin() throws {
        let policy = try load(
            Self.base + """
                console:
                  admin: [alice@example.com]
                  operator: [group:oncall, alice@example.com]
                  viewer: [service:reports, group:security]
                """)
        let console = policy.console
        func role(_ login: String, groups: [String] = [], service: Bool = false, admin: Bool = false) -> ConsoleRole? {
            console.role(login: login, groups: groups, isService: service, isAdminService: admin)
        }
        #expect(role("Alice@Example.com") == .admin, "the highest role a person holds, names case-insensitive")
        #expect(role("bob@example.com", groups: ["oncall", "security"]) == .operator)
        #expect(role("carol@example.com", groups: ["security"]) == .viewer)
        #expect(role("reports", service: true) == .viewer)
        #expect(role("ops", service: true, admin: true) == .admin)
        #expect(role("dave@example.com") == nil, "named nowhere: no console role")
        #expect(role("reports") == nil, "a person named like a service is not the service")
        #expect(ConsoleRole.viewer < .operator && ConsoleRole.operator < .admin)
    }

    @Test func mistakesAreNamedWhereTheyAre() {
        let typo = issues(Self.base + "console:\n  admins: [alice@example.com]\n")
        #expect(typo.count == 1 && typo[0].message.contains("admins") && typo[0].location?.line == 11, "\(typo)")
        let unknown = issues(Self.base + "console:\n  viewer: [service:nobody]\n")
        #expect(unknown.contains { $0.message.contains("service:nobody is not a service") }, "\(unknown)")
        let notAPerson = issues(Self.base + "console:\n  viewer: [\"al ice\"]\n")
        #expect(notAPerson.contains { $0.message.contains("not a person's name") }, "\(notAPerson)")
    }

    @Test func aSealOpensOnlyWithItsKeyUnalteredAndInTime() throws {
        let key = Array(repeating: UInt8(7), count: 32)
        let now = Date()
        let sealed = SealedText.seal("rg_secret_value", key: key, expires: now + 60)
        #expect(!sealed.contains("rg_secret_value"))
        #expect(SealedText.open(sealed, key: key, now: now) == "rg_secret_value")
        #expect(SealedText.open(sealed, key: Array(repeating: 8, count: 32), now: now) == nil, "another key")
        #expect(SealedText.open(sealed, key: key, now: now + 61) == nil, "expired")
        var bytes = Array(sealed)
        bytes[bytes.count / 2] = bytes[bytes.count / 2] == "A" ? "B" : "A"
        #expect(SealedText.open(String(bytes), key: key, now: now) == nil, "altered")
        #expect(SealedText.open("not a seal", key: key, now: now) == nil)
        #expect(sealed != SealedText.seal("rg_secret_value", key: key, expires: now + 60), "a fresh nonce each time")
    }
}
