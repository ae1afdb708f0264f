import ArgumentParser
import Foundation
import RolegateCore
import RolegateProvision

@main
struct Rolegate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rolegate",
        abstract: "Bind short-lived API tokens to least-privilege PostgreSQL roles.",
        discussion: """
            Exit codes: 0 success; 1 error (bad input, bad policy, PostgreSQL refused); \
            2 drift found by 'plan --check'.
            """,
        version: RolegateVersion.current,
        subcommands: [
            InitCommand.self, ValidateCommand.self, PlanCommand.self, ApplyCommand.self, TokenCommand.self,
            ServeCommand.self, AuditCommand.self, DemoCommand.self, LoginCommand.self, EnvCommand.self,
            PsqlCommand.self, MCPCommand.self, AccessCommand.self,
        ]
    )

    /// Runs the command tree; maps every failure to a message on stderr and exit 1
    /// (argument errors included), keeping 2 for "drift" alone.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if let serve = command as? ServeCommand {
                ServeCommand.pinTimeZone()
                if serve.sharedEventLoops { ServeCommand.runConcurrencyOnEventLoops(threads: serve.threads) }
            }
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as PolicyError {
            for issue in error.issues { Terminal.error(issue.description) }
            Foundation.exit(1)
        } catch let error as ResolutionError {
            for issue in error.issues { Terminal.error(issue.description) }
            Foundation.exit(1)
        } catch let error as ProvisionError {
            Terminal.error(error.description)
            Foundation.exit(1)
        } catch let error as CLIError {
            Terminal.error(error.description)
            Foundation.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            if let exit = error as? ExitCode {
                Foundation.exit(exit.rawValue)
            }
            Terminal.error(fullMessage(for: error).replacingOccurrences(of: "Error: ", with: ""))
            Foundation.exit(1)
        }
    }
}

enum RolegateVersion {
    static let current = "0.1.0"
}

/// A failure of the CLI itself, with a message that names the problem.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Terminal {
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    }

    static func note(_ message: String) {
        FileHandle.standardError.write(Data("\(message)\n".utf8))
    }

    static var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// `--config`, and loading the policy it names.
struct PolicyOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The policy file.", discussion: "Default: $ROLEGATE_CONFIG, else ./rolegate.yaml.", valueName: "path"))
    var config: String?

    var path: String {
        PolicyLoader.resolvePath(explicit: config, environment: ProcessInfo.processInfo.environment)
    }

    func load() throws -> Policy {
        try PolicyLoader.load(path: path, environment: ProcessInfo.processInfo.environment)
    }
}

/// `--database`: limit plan/apply to some of the policy's databases.
struct DatabaseSelection: ParsableArguments {
    @Option(
        name: .customLong("database"),
        help: ArgumentHelp("Only this policy database (repeatable). Default: all.", valueName: "name"))
    var names: [String] = []

    func select(from policy: Policy) throws -> [DatabaseSpec] {
        for name in names where policy.database(named: name) == nil {
            throw CLIError(
                "--database \(name): the policy declares no such database (declared: \(policy.databases.map(\.name).joined(separator: ", ")))"
            )
        }
        return names.isEmpty ? policy.databases : policy.databases.filter { names.contains($0.name) }
    }
}

enum MasterKeySupport {
    static func path(for policy: Policy) -> String {
        MasterKeyFile.path(policy: policy, environment: ProcessInfo.processInfo.environment)
    }

    /// The key when its file exists; nil when there is none yet.
    static func loadIfPresent(for policy: Policy) throws -> MasterKey? {
        let path = path(for: policy)
        guard MasterKeyFile.exists(at: path) else { return nil }
        do {
            return try MasterKeyFile.load(from: path)
        } catch {
            throw CLIError(error.description)
        }
    }
}
