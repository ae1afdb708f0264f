import Foundation

/// The identity sections of `rolegate.yaml`: `trust:` (the issuers whose tokens may be
/// exchanged), a service's `identity:`, `people:` and `groups:`. As strict as the rest of the
/// file: every problem names its file, line, column and key.
enum IdentityPolicyLoader {
    static let trustKeys: Set<String> = [
        "issuer", "jwks_url", "jwks_file", "audiences", "max_age", "leeway", "client_id", "client_secret",
        "description",
    ]
    static let identityKeys: Set<String> = ["trust", "claims"]
    static let personKeys: Set<String> = ["role", "trust", "description"]
    static let groupKeys: Set<String> = ["role", "trust", "claim", "description"]
    /// The most clock difference a trust may tolerate.
    static let maxLeeway: Duration = .seconds(300)

    static func buildTrusts(_ value: YAMLValue) -> [TrustedIssuer] {
        guard let items = value.mapping(what: "trusted issuers by name") else { return [] }
        var result: [TrustedIssuer] = []
        for (name, spec) in items {
            if let problem = NameRules.serviceNameProblem(name) {
                spec.fail("trust name: \(problem.replacingOccurrences(of: "service name", with: "name"))")
                continue
            }
            let before = spec.report.issues.count
            guard let fields = spec.mapping(allowed: trustKeys, what: "a trusted issuer") else { continue }
            if spec.report.issues.count > before { continue }
            let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let issuerValue = f["issuer"] else {
                spec.fail(
                    "missing key 'issuer' (the exact 'iss' of its tokens, e.g. https://token.actions.githubusercontent.com)"
                )
                continue
            }
            guard let issuer = issuerValue.string(what: "an issuer URL") else { continue }
            if let problem = urlProblem(issuer, what: "issuer") {
                issuerValue.fail(problem)
                continue
            }
            var keys: TrustedIssuer.KeySource
            switch (f["jwks_url"], f["jwks_file"]) {
            case (let urlValue?, _?):
                urlValue.fail("jwks_url and jwks_file name the keys twice: keep one of them")
                continue
            case (let urlValue?, nil):
                guard let text = urlValue.string(what: "a JWKS URL") else { continue }
                if let problem = urlProblem(text, what: "jwks_url") {
                    urlValue.fail(problem)
                    continue
                }
                keys = .url(URL(string: text)!)
            case (nil, let fileValue?):
                guard let path = fileValue.string(what: "a JWKS file path") else { continue }
                keys = .file(path)
            case (nil, nil):
                guard let discovery = TrustedIssuer.discoveryURL(issuer: issuer) else { continue }
                keys = .discovery(discovery)
            }
            let audiences = f["audiences"]?.stringList(what: "audiences") ?? []
            if audiences.contains(where: \.isEmpty) { f["audiences"]?.fail("an audience cannot be empty") }
            let clientID = f["client_id"]?.string(what: "an OAuth client id")
            if clientID?.isEmpty == true { f["client_id"]?.fail("client_id cannot be empty") }
            if audiences.isEmpty, clientID == nil {
                (f["audiences"] ?? spec).fail(
                    "a trust needs 'audiences' (the aud your tokens are minted for, e.g. [rolegate-prod]) or a 'client_id': without one, a token minted for any other service of this issuer would be accepted"
                )
                continue
            }
            var maxAge: Duration?
            if let field = f["max_age"], let age = field.duration(what: "a duration") {
                if age <= .zero { field.fail("max_age must be longer than zero") } else { maxAge = age }
            }
            var leeway = TrustedIssuer.defaultLeeway
            if let field = f["leeway"], let value = field.duration(what: "a duration") {
                if value < .zero || value > maxLeeway {
                    field.fail("leeway must be between 0s and \(DurationText.format(maxLeeway))")
                } else {
                    leeway = value
                }
            }
            _ = f["description"]?.string(what: "a description")
            let clientSecret = f["client_secret"]?.string(what: "the installed-app client secret")
            if clientSecret != nil, clientID == nil {
                f["client_secret"]?.fail("client_secret goes with a client_id")
            }
            var trust = TrustedIssuer(
                name: name, issuer: issuer, keys: keys, audiences: audiences, maxAge: maxAge, leeway: leeway,
                clientID: clientID, location: spec.location)
            trust.clientSecret = clientSecret
            result.append(trust)
        }
        let issuers = Dictionary(grouping: result, by: \.issuer)
        for (issuer, trusts) in issuers where trusts.count > 1 {
            value.report.issues.append(
                PolicyIssue(
                    location: trusts[1].location, keyPath: "trust.\(trusts[1].name)",
                    message:
                        "issuer \(issuer) is already trusted as '\(trusts[0].name)': one trust per issuer (list several audiences there)"
                ))
        }
        return result
    }

    /// Issuers and key URLs are HTTPS; plain HTTP only on loopback (a provider on the same host).
    static func urlProblem(_ text: String, what: String) -> String? {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let host = url.host, !host.isEmpty
        else { return "\(what) '\(text)' is not a URL (e.g. https://issuer.example.com)" }
        if scheme == "https" { return nil }
        if scheme == "http", ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host.lowercased()) { return nil }
        return "\(what) '\(text)' must use https (plain http only on loopback)"
    }

    /// `identity: {trust: NAME, claims: {claim: value-or-glob, …}}`.
    static func buildIdentity(_ value: YAMLValue, trustNames: [String]) -> IdentityRule? {
        let before = value.report.issues.count
        guard let fields = value.mapping(allowed: identityKeys, what: "an identity rule") else { return nil }
        if value.report.issues.count > before { return nil }
        let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let trustValue = f["trust"] else {
            value.fail("missing key 'trust' (the name of a trust: entry)")
            return nil
        }
        guard let trust = trustValue.string(what: "a trust name") else { return nil }
        guard trustNames.contains(trust) else {
            let known = trustNames.joined(separator: ", ")
            trustValue.fail("unknown trust '\(trust)'; declared trusts: \(known.isEmpty ? "none" : known)")
            return nil
        }
        guard let claimsValue = f["claims"] else {
            value.fail(
                "missing key 'claims': without them every token \(trust) signs for your audience would be accepted (for GitHub: any repository's workflow); name at least the repository or subject"
            )
            return nil
        }
        guard let entries = claimsValue.mapping(what: "claims by name") else { return nil }
        var rules: [ClaimRule] = []
        for (claim, pattern) in entries {
            if case .mapping(let mapping) = pattern.node {
                let operators = mapping.compactMap { $0.key.string }.joined(separator: ", ")
                pattern.fail(
                    "unknown claim operator '\(operators)': a claim's value is matched exactly, or as a glob where '*' stands for any run of characters"
                )
                continue
            }
            if case .sequence = pattern.node {
                pattern.fail("a claim names one value (exact, or a glob with '*'), not a list")
                continue
            }
            guard let text = pattern.string(what: "a claim value") else { continue }
            if text.isEmpty {
                pattern.fail("a claim's value cannot be empty")
                continue
            }
            rules.append(ClaimRule(claim: claim, pattern: text))
        }
        if !entries.isEmpty, rules.count == entries.count, rules.allSatisfy({ $0.pattern.allSatisfy { $0 == "*" } }) {
            claimsValue.fail(
                "every claim is '*': the rule would accept every token \(trust) signs; pin at least one claim to a value"
            )
            return nil
        }
        if entries.isEmpty {
            claimsValue.fail("list at least one claim (e.g. repository: acme/billing)")
            return nil
        }
        guard rules.count == entries.count else { return nil }
        return IdentityRule(trust: trust, claims: rules, location: value.location)
    }

    /// `max_live_tokens` (only with `identity:`), and the settings `identity:` contradicts:
    /// `max_token_ttl` and `max_grace` cap what is asked for by hand (`token issue --ttl`,
    /// `token rotate --grace`), and a service with `identity:` gets no token by hand.
    static func maxLiveTokens(_ f: [String: YAMLValue], hasIdentity: Bool) -> Int {
        if hasIdentity {
            for key in ["max_token_ttl", "max_grace"] {
                f[key]?.fail(
                    "\(key) caps tokens issued or rotated by hand; a service with identity: gets its tokens only by exchange (remove \(key), or set token_ttl/grace)"
                )
            }
        }
        guard let field = f["max_live_tokens"], let number = field.int(what: "max_live_tokens") else {
            return ServiceSpec.defaultMaxLiveTokens
        }
        if !hasIdentity {
            field.fail(
                "max_live_tokens applies to a service with identity: (one live token per subject); a service without one has one live token"
            )
        } else if number < 1 || number > 100_000 {
            field.fail("max_live_tokens must be between 1 and 100000, found \(number)")
        }
        return number
    }

    static func buildPeople(
        _ value: YAMLValue, roleNames: [String], trusts: [TrustedIssuer], trustNames: [String],
        services: [ServiceSpec]
    ) -> [PersonSpec] {
        guard let items = value.mapping(what: "people by name (their email)") else { return [] }
        var result: [PersonSpec] = []
        for (name, spec) in items {
            if let problem = personNameProblem(name) {
                spec.fail(problem)
                continue
            }
            if services.contains(where: { $0.name == name }) {
                spec.fail("'\(name)' is also a service: people and services log in by name, so the names must differ")
                continue
            }
            guard
                let (role, trust, _) = roleAndTrust(
                    spec, keys: personKeys, roleNames: roleNames, trusts: trusts, trustNames: trustNames,
                    what: "a person")
            else { continue }
            result.append(PersonSpec(name: name, role: role, trust: trust, location: spec.location))
        }
        return result
    }

    static func buildGroups(
        _ value: YAMLValue, roleNames: [String], trusts: [TrustedIssuer], trustNames: [String]
    ) -> [GroupSpec] {
        guard let items = value.mapping(what: "groups by name") else { return [] }
        var result: [GroupSpec] = []
        for (name, spec) in items {
            if name.isEmpty || name.count > 200
                || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            {
                spec.fail("a group name is 1 to 200 characters without control characters")
                continue
            }
            guard
                let (role, trust, f) = roleAndTrust(
                    spec, keys: groupKeys, roleNames: roleNames, trusts: trusts, trustNames: trustNames,
                    what: "a group")
            else { continue }
            var claim = "groups"
            if let field = f["claim"], let text = field.string(what: "a claim name") {
                if text.isEmpty { field.fail("claim cannot be empty") } else { claim = text }
            }
            result.append(GroupSpec(name: name, role: role, trust: trust, claim: claim, location: spec.location))
        }
        return result
    }

    /// The `role` and `trust` every person and group names; the trust must let people log in.
    private static func roleAndTrust(
        _ spec: YAMLValue, keys: Set<String>, roleNames: [String], trusts: [TrustedIssuer], trustNames: [String],
        what: String
    ) -> (String, String, [String: YAMLValue])? {
        let before = spec.report.issues.count
        guard let fields = spec.mapping(allowed: keys, what: what) else { return nil }
        if spec.report.issues.count > before { return nil }
        let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let roleValue = f["role"], let role = roleValue.string(what: "a role name") else {
            if f["role"] == nil { spec.fail("missing key 'role': \(what) is bound to exactly one role") }
            return nil
        }
        guard roleNames.contains(role) else {
            let known = roleNames.joined(separator: ", ")
            roleValue.fail("unknown role '\(role)'; declared roles: \(known.isEmpty ? "none" : known)")
            return nil
        }
        guard let trustValue = f["trust"], let trust = trustValue.string(what: "a trust name") else {
            if f["trust"] == nil { spec.fail("missing key 'trust': the issuer \(what) logs in through") }
            return nil
        }
        guard trustNames.contains(trust) else {
            let known = trustNames.joined(separator: ", ")
            trustValue.fail("unknown trust '\(trust)'; declared trusts: \(known.isEmpty ? "none" : known)")
            return nil
        }
        if let issuer = trusts.first(where: { $0.name == trust }), issuer.clientID == nil {
            trustValue.fail(
                "trust '\(trust)' has no client_id: people log in through an OAuth client (add client_id to trust.\(trust))"
            )
            return nil
        }
        _ = f["description"]?.string(what: "a description")
        return (role, trust, f)
    }

    /// A person's name is what they type as `user=`: their email or a user name.
    static func personNameProblem(_ name: String) -> String? {
        let allowed = name.unicodeScalars.allSatisfy {
            $0.isASCII
                && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-@+".unicodeScalars.contains($0))
        }
        guard !name.isEmpty, name.utf8.count <= NameRules.maxIdentifierBytes, allowed,
            let first = name.unicodeScalars.first, first.properties.isAlphabetic || ("0"..."9").contains(first)
        else {
            return
                "'\(name)' is not a valid person name (their email or user name: letters, digits, '.', '_', '-', '@', '+', at most \(NameRules.maxIdentifierBytes) bytes)"
        }
        return nil
    }

    /// One service, one role: a role bound to a service is that service's alone (unless
    /// `shared: true`), so people and groups may not be bound to it. People and groups may
    /// share roles among themselves: they are people reading with the same privileges.
    static func checkRoleBindings(
        people: [PersonSpec], groups: [GroupSpec], services: [ServiceSpec], roles: [RoleSpec], report: YAMLReport
    ) {
        let serviceRoles = Dictionary(services.map { ($0.role, $0.name) }, uniquingKeysWith: { a, _ in a })
        let shared = Set(roles.filter(\.shared).map(\.name))
        let bound =
            people.map { ($0.role, "people.\($0.name)", $0.location) }
            + groups.map { ($0.role, "groups.\($0.name)", $0.location) }
        for (role, path, location) in bound {
            if let service = serviceRoles[role], !shared.contains(role) {
                report.issues.append(
                    PolicyIssue(
                        location: location, keyPath: "\(path).role",
                        message:
                            "role '\(role)' is service '\(service)''s; one service, one role (give people a role of their own, or mark the role 'shared: true')"
                    ))
            }
        }
    }
}
