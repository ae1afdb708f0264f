import ArgumentParser
import Foundation
import RolegateCore

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Write a commented example rolegate.yaml.")

    @OptionGroup var policy: PolicyOptions

    @Flag(help: "Overwrite an existing file.")
    var force = false

    func run() throws {
        let path = policy.path
        if FileManager.default.fileExists(atPath: path), !force {
            throw CLIError("\(path) already exists; pass --force to overwrite it")
        }
        do {
            try PolicyTemplate.example.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw CLIError("cannot write \(path): \(error.localizedDescription)")
        }
        print("Wrote \(path). Next: set APP_ADMIN_URL, edit the roles, then run 'rolegate plan'.")
    }
}

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check the policy file without touching any database.",
        discussion: "Exits 0 when the policy is valid, 1 with every problem (file:line:column: key: message) otherwise."
    )

    @OptionGroup var policy: PolicyOptions

    func run() throws {
        let loaded = try policy.load()
        var parts = [
            "\(loaded.databases.count) database(s)", "\(loaded.roles.count) role(s)",
            "\(loaded.services.count) service(s)",
        ]
        // The identity and access sections, when the policy has them.
        for (count, name) in [
            (loaded.trusts.count, "trusted issuer(s)"), (loaded.people.count, "person(s)"),
            (loaded.groups.count, "group(s)"), (loaded.access.count, "requestable grant(s)"),
            (loaded.webhooks.count, "webhook(s)"),
        ] where count > 0 {
            parts.append("\(count) \(name)")
        }
        print("\(policy.path): valid (\(parts.joined(separator: ", ")))")
    }
}
