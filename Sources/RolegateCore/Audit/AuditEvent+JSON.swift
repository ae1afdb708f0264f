import Foundation

extension AuditEvent {
    /// The documented JSON shape of an event (`rolegate audit --format json`, the admin API):
    /// every key present, `null` where it does not apply.
    public var jsonObject: [String: Any] {
        var object: [String: Any] = [
            "id": id ?? 0, "instance": instance, "sequence": sequence, "at": at.rfc3339Milliseconds,
            "kind": kind.rawValue, "action": action, "detail": detail, "previous_hash": previousHash, "hash": hash,
        ]
        let optional: [(String, Any?)] = [
            ("service", service), ("token_id", tokenID), ("role", role), ("database", database),
            ("session_id", sessionID), ("client", client), ("sql", sql), ("sql_state", sqlState), ("rows", rows),
            ("duration_ms", durationMicros.map { Double($0) / 1000 }),
        ]
        for (key, value) in optional { object[key] = value ?? NSNull() }
        return object
    }
}
