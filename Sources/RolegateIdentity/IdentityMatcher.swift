public import RolegateCore

/// Finds the one entry of the policy a verified identity is entitled to: a service whose
/// `identity:` rule its claims satisfy, a person whose name is its verified email, or a group
/// its `groups` claim lists. A person's own entry wins over their groups; otherwise zero or
/// several matches are refused, saying which.
public enum IdentityMatcher {
    public static func grant(
        for identity: VerifiedIdentity, in policy: Policy
    ) throws(IdentityRefusal)
        -> IdentityGrant
    {
        var matches: [IdentityGrant] = []
        var reasons: [String] = []
        for service in policy.services {
            guard let rule = service.identity, rule.trust == identity.trust else { continue }
            let failed = rule.claims.filter { !$0.matches(identity.claims) }
            if failed.isEmpty {
                matches.append(
                    IdentityGrant(
                        login: service.name, role: service.role, subject: identity.subject, trust: identity.trust,
                        source: "service \(service.name)", ttl: service.tokenTTL, grace: service.grace,
                        maxLive: service.maxLiveTokens, scramIterations: service.scramIterations))
            } else {
                let names = failed.map { identity.claims[$0.claim] == nil ? "\($0.claim) (missing)" : $0.claim }
                reasons.append("service \(service.name): \(names.joined(separator: ", ")) did not match")
            }
        }
        let name = personName(identity.claims)
        var personal: [IdentityGrant] = []
        for person in policy.people where person.trust == identity.trust {
            if let name, name.lowercased() == person.name.lowercased() {
                personal.append(
                    IdentityGrant(
                        login: person.name, role: person.role, subject: identity.subject, trust: identity.trust,
                        source: "person \(person.name)", ttl: PersonSpec.tokenTTL,
                        grace: ServiceSpec.defaultGrace, maxLive: ServiceSpec.defaultMaxLiveTokens,
                        scramIterations: ServiceSpec.defaultSCRAMIterations))
            }
        }
        if personal.isEmpty {
            for group in policy.groups where group.trust == identity.trust {
                let listed = identity.claims[group.claim]?.strings ?? []
                guard listed.contains(group.name) else { continue }
                guard let name else {
                    reasons.append("group \(group.name): the token carries no verified email to log in as")
                    continue
                }
                if policy.service(named: name) != nil {
                    reasons.append("group \(group.name): \(name) is the name of a service")
                    continue
                }
                personal.append(
                    IdentityGrant(
                        login: name, role: group.role, subject: identity.subject, trust: identity.trust,
                        grant: group.grant, source: "group \(group.name)",
                        ttl: PersonSpec.tokenTTL, grace: ServiceSpec.defaultGrace,
                        maxLive: ServiceSpec.defaultMaxLiveTokens, scramIterations: ServiceSpec.defaultSCRAMIterations))
            }
        }
        matches += personal
        if matches.count == 1 {
            var grant = matches[0]
            grant.groups = identity.claims["groups"]?.strings ?? []
            return grant
        }
        if matches.isEmpty {
            if policy.people.contains(where: { $0.trust == identity.trust }) {
                reasons.append(
                    name.map { "no person is \($0)" } ?? "people: the token carries no verified email")
            }
            throw .noMatch(subject: identity.subject, trust: identity.trust, reasons: reasons)
        }
        throw .ambiguous(subject: identity.subject, matches: matches.map(\.source))
    }

    /// The name a person logs in as: their `email` unless the provider says it is not verified,
    /// else `preferred_username`.
    static func personName(_ claims: [String: ClaimValue]) -> String? {
        if case .string(let email)? = claims["email"], !email.isEmpty, claims["email_verified"] != .bool(false) {
            return email
        }
        if case .string(let name)? = claims["preferred_username"], !name.isEmpty { return name }
        return nil
    }
}
