import Foundation
import RolegateCore
import RolegateStore

/// Audit events written by the CLI itself (token changes, apply, drift found by
/// `plan --check`): appended at once to the `cli@<host>` chain.
enum AuditSupport {
    static var cliInstance: String { "cli@\(ProcessInfo.processInfo.hostName)" }

    static var actor: String {
        let user =
            ProcessInfo.processInfo.environment["USER"]
            ?? getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) } ?? "unknown"
        return "cli:\(user)@\(ProcessInfo.processInfo.hostName)"
    }

    /// Appends `events`; a failure is reported on stderr, never hidden, but does not undo
    /// what the command already did.
    static func record(_ events: [AuditEvent], policy: Policy, store: any Store) async {
        guard policy.audit.enabled, !events.isEmpty else { return }
        do {
            _ = try await store.appendAudit(events, instance: cliInstance)
        } catch {
            Terminal.note("warning: could not write \(events.count) audit event(s): \(error)")
        }
    }

    /// Opens the store just to record `events` (apply and plan do not otherwise need it).
    static func record(_ events: [AuditEvent], policy: Policy, policyPath: String, storeOptions: StoreOptions) async {
        guard policy.audit.enabled, !events.isEmpty else { return }
        do {
            let store = try await storeOptions.open(policy: policy, policyPath: policyPath)
            await record(events, policy: policy, store: store)
            await store.close()
        } catch {
            Terminal.note("warning: could not write \(events.count) audit event(s): \(error)")
        }
    }
}
