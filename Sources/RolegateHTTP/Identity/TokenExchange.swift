import Foundation
import HTTPTypes
import RolegateCore
import RolegateHTTPContract
import RolegateIdentity
import RolegateTokens

/// `POST /v1/auth/exchange`: an identity token (a JWT from a `trust:` issuer) in, a Rolegate
/// token bound to its subject out (RFC 8693). The JWT is the credential, so the route takes no
/// bearer token. Every exchange and every refusal is an audit event.
extension ContractHandlers {
    func exchangeToken(_ input: Operations.ExchangeToken.Input) async throws -> Operations.ExchangeToken.Output {
        let body: Components.Schemas.ExchangeRequest =
            switch input.body {
            case .json(let body): body
            case .urlEncodedForm(let body): body
            }
        let scope = RequestScope.current
        guard let exchange = api.identity else {
            throw Problem(
                status: .notFound, code: "exchange_disabled",
                message: "this gateway trusts no identity issuer (add a trust: section to the policy)")
        }
        let issued: TokenService.Issued
        do {
            issued = try await exchange.exchange(
                body.subjectToken, issuer: "exchange:http" + (scope?.clientAddress.map { "@\($0)" } ?? ""))
        } catch {
            let problem = Self.problem(error)
            api.metrics.increment("rolegate_token_exchanges_total", ["outcome": problem.code])
            if problem.status != .serviceUnavailable || problem.code == "issuer_unreachable" {
                api.audit?.record(
                    AuditEvent(
                        kind: .auth, action: "refused", sessionID: scope?.requestID, client: scope?.clientAddress,
                        detail: ["channel": "exchange", "code": problem.code, "reason": problem.message]))
            }
            throw problem
        }
        let record = issued.record
        api.metrics.increment("rolegate_token_exchanges_total", ["outcome": "issued"])
        return .ok(
            .init(
                body: .json(
                    .init(
                        accessToken: issued.token,
                        issuedTokenType: .urn_colon_ietf_colon_params_colon_oauth_colon_tokenType_colon_accessToken,
                        tokenType: .bearer, expiresIn: max(0, Int(record.expiresAt.timeIntervalSinceNow.rounded())),
                        tokenId: record.id, service: record.service, role: record.role, subject: record.subject ?? "",
                        grant: record.grant, database: api.policy.role(named: record.role)?.database,
                        expiresAt: record.expiresAt))))
    }

    func identityProviders(
        _ input: Operations.IdentityProviders.Input
    ) async throws -> Operations.IdentityProviders.Output {
        let providers = api.policy.trusts.compactMap { trust in
            trust.clientID.map {
                Components.Schemas.IdentityProviders.ProvidersPayloadPayload(
                    name: trust.name, issuer: trust.issuer, clientId: $0, clientSecret: trust.clientSecret)
            }
        }
        return .ok(.init(body: .json(.init(providers: providers, wireAddress: api.settings.wireAddress ?? ""))))
    }

    /// Each refusal's status: the identity token is wrong or spent (401), the policy accepts no
    /// one or too many for it (403), too many subjects hold tokens (409), the issuer's keys or
    /// the store cannot be read (503).
    static func problem(_ refusal: IdentityExchange.Refusal) -> Problem {
        switch refusal {
        case .identity(let refusal):
            let status: HTTPResponse.Status =
                switch refusal {
                case .noMatch, .ambiguous: .forbidden
                case .issuerUnreachable: .serviceUnavailable
                default: .unauthorized
                }
            return Problem(status: status, code: refusal.code, message: refusal.description)
        case .tokens(let failure):
            return ContractProblems.problem(for: failure)
        }
    }
}
