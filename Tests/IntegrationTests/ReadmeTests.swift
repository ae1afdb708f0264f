import Foundation
import PostgresCluster
import RolegateTestSupport
import Testing

/// The documentation is the user's guide: its CLI reference (docs/cli.md) must match the real
/// commands, and every relative link in the README and docs/ must lead somewhere.
@Suite(.ownThreads) struct ReadmeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let readme = root.appendingPathComponent("docs/cli.md")

    /// Command (e.g. "token issue") → the long flags the README's CLI block gives it.
    static func documentedFlags() throws -> [String: Set<String>] {
        let text = try String(contentsOf: readme, encoding: .utf8)
        let start = try #require(text.range(of: "# CLI\n\n```\n"))
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
            "token show", "token exchange",
            "serve", "audit list", "audit verify", "demo", "login", "env", "psql", "mcp",
            "access request", "access list", "access show", "access approve", "access deny", "access revoke",
            "access token", "access webhooks",
        ]
        #expect(Set(documented.keys) == Set(commands), "docs/cli.md commands: \(documented.keys.sorted())")
        for command in commands {
            let help = try Subprocess.run(
                RolegateBinary.path, command.split(separator: " ").map(String.init) + ["--help"])
            #expect(help.status == 0)
            let actual = Self.flags(in: help.stdout).subtracting(["help", "version"])
                .filter { !$0.hasPrefix("no-") }
            #expect(
                documented[command] == actual,
                "rolegate \(command): docs/cli.md \(documented[command]?.sorted() ?? []) vs --help \(actual.sorted())")
        }
    }

    /// Every relative link (`[text](path)` or `[text](path#anchor)`) in the README, SECURITY.md
    /// and docs/ names a file that exists, and an anchor names a heading in it.
    @Test func relativeLinksLeadSomewhere() throws {
        let documents =
            ["README.md", "SECURITY.md"]
            + (try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("docs").path))
            .filter { $0.hasSuffix(".md") }.map { "docs/" + $0 }
        let link = try NSRegularExpression(pattern: "\\]\\(([^)#:]*)(#[^)]*)?\\)")
        for document in documents {
            let url = Self.root.appendingPathComponent(document)
            let text = try String(contentsOf: url, encoding: .utf8)
            for match in link.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                let path = Range(match.range(at: 1), in: text).map { String(text[$0]) } ?? ""
                let anchor = Range(match.range(at: 2), in: text).map { String(text[$0].dropFirst()) }
                let target = path.isEmpty ? url : url.deletingLastPathComponent().appendingPathComponent(path)
                #expect(FileManager.default.fileExists(atPath: target.path), "\(document): \(path) does not exist")
                guard let anchor, let linked = try? String(contentsOf: target, encoding: .utf8) else { continue }
                let anchors = linked.split(separator: "\n").filter { $0.hasPrefix("#") }.map { heading in
                    String(heading.drop { $0 == "#" }.dropFirst()).lowercased()
                        .filter { $0.isLetter || $0.isNumber || $0 == " " || $0 == "-" || $0 == "_" }
                        .replacingOccurrences(of: " ", with: "-")
                }
                #expect(anchors.contains(anchor), "\(document): no heading for #\(anchor) in \(path)")
            }
        }
    }
}
