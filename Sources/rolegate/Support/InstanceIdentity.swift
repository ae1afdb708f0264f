import Foundation

/// A gateway instance's id: from `--instance-id`, else `$ROLEGATE_INSTANCE_ID`, else one
/// generated on first start and kept in a file beside the master key (one per listen port,
/// so several instances on one host keep theirs apart).
enum InstanceIdentity {
    static func problem(_ id: String) -> String? {
        if id.isEmpty || id.count > 63 { return "an instance id is 1 to 63 characters" }
        if !id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.@:".contains($0)) }) {
            return "'\(id)' may use letters, digits and - _ . @ : only"
        }
        return nil
    }

    static func resolve(flag: String?, directory: String, port: Int) throws -> String {
        if let flag { return flag }
        if let fromEnvironment = ProcessInfo.processInfo.environment["ROLEGATE_INSTANCE_ID"] {
            if let problem = problem(fromEnvironment) { throw CLIError("ROLEGATE_INSTANCE_ID: \(problem)") }
            return fromEnvironment
        }
        let path = directory + "/instance-\(port).id"
        if let kept = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines),
            problem(kept) == nil
        {
            return kept
        }
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let generated =
            "\(host.filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })-\(port)-"
            + String((0..<6).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try (generated + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw CLIError("cannot keep the generated instance id in \(path): \(error) (set --instance-id)")
        }
        return generated
    }
}
