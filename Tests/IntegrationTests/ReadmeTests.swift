import Foundation
import PostgresCluster
import Testing

/// The README is the user's guide: its CLI reference must match the real commands.
@Suite struct ReadmeTests {
    static let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("README.md")

    /// Command (e.g. "token issue") → the long flags the README's CLI block gives it.
    static func documentedFlags() throws -> [String: Set<String>] {
        let text = try String(contentsOf: readme, encoding: .utf8)
        let start = try #require(text.range(of: "## CLI\n\n```\n"))
        let end = try #require(text.range(of: "```", range: start.upperBound..<text.endIndex))
        var result: [String: Set<String>] = [:]
        var command: String?
        for line in text[start.upperBound..<end.lowerBound].split(separator: "\n") {
            if line.hasPrefix("rolegate ") {
                let words = line.dropFirst("rolegate ".count).split(separator: " ")
                command = words.prefix {
                    !$0.hasPrefix("[") && !$0.hasPrefix("<") && !$0.hasPrefix("(") && !$0.hasPrefix("-")
                }
                .joined(separator: " ")
            }
            guard let command else { continue }
            result[command, default: []].formUnion(flags(in: String(line)))
        }
        return result
    }

    static func flags(in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "--(?:\\[no-\\])?([a-z][a-z0-9-]*)")
        let range = NSRange(text.startIndex..., in: text)
        return Set(regex.matches(in: text, range: range).map { String(text[Range($0.range(at: 1), in: text)!]) })
    }

    @Test func theCLIReferenceMatchesEveryCommandsHelp() throws {
        let documented = try Self.documentedFlags()
        let commands = [
            "init", "validate", "plan", "apply", "token issue", "token rotate", "token revoke", "token list",
            "token show",
            "serve", "audit list", "audit verify", "demo",
        ]
        #expect(Set(documented.keys) == Set(commands), "README commands: \(documented.keys.sorted())")
        for command in commands {
            let help = try Subprocess.run(
                RolegateBinary.path, command.split(separator: " ").map(String.init) + ["--help"])
            #expect(help.status == 0)
            let actual = Self.flags(in: help.stdout).subtracting(["help", "version"])
                .filter { !$0.hasPrefix("no-") }
            #expect(
                documented[command] == actual,
                "rolegate \(command): README \(documented[command]?.sorted() ?? []) vs --help \(actual.sorted())")
        }
    }
}
