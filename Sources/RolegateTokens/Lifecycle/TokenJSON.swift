public import Foundation
public import RolegateCore

/// The stable JSON shape of a token (documented in the README).
public struct TokenJSON: Encodable, Sendable {
    public var id: String
    public var service: String
    public var role: String
    public var state: String
    public var issued_at: String
    public var expires_at: String
    public var revoked_at: String?
    public var revoke_reason: String?
    public var last_used_at: String?
    public var superseded_by: String?
    public var issuer: String
    public var note: String?
    public var subject: String?
    public var grant: String?

    public init(_ record: TokenRecord, now: Date) {
        id = record.id
        service = record.service
        role = record.role
        state = record.state(at: now).rawValue
        issued_at = record.issuedAt.rfc3339
        expires_at = record.expiresAt.rfc3339
        revoked_at = record.revokedAt?.rfc3339
        revoke_reason = record.revokeReason
        last_used_at = record.lastUsedAt?.rfc3339
        superseded_by = record.supersededBy
        issuer = record.issuer
        note = record.note
        subject = record.subject
        grant = record.grant
    }

    public func encode(to encoder: any Encoder) throws {
        enum Key: String, CodingKey {
            case id, service, role, state, issued_at, expires_at, revoked_at, revoke_reason, last_used_at,
                superseded_by, issuer, note, subject, grant
        }
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(id, forKey: .id)
        try c.encode(service, forKey: .service)
        try c.encode(role, forKey: .role)
        try c.encode(state, forKey: .state)
        try c.encode(issued_at, forKey: .issued_at)
        try c.encode(expires_at, forKey: .expires_at)
        // Always present (null when unset), so consumers can rely on every key.
        try c.encode(revoked_at, forKey: .revoked_at)
        try c.encode(revoke_reason, forKey: .revoke_reason)
        try c.encode(last_used_at, forKey: .last_used_at)
        try c.encode(superseded_by, forKey: .superseded_by)
        try c.encode(issuer, forKey: .issuer)
        try c.encode(note, forKey: .note)
        try c.encode(subject, forKey: .subject)
        try c.encode(grant, forKey: .grant)
    }
}
