import Foundation

/// The outside programs the tests drive the gateway with, and what to run when one is missing.
/// `./test.sh` (the README's test command) installs them: the Python clients into a venv under
/// `.build/test-venv`, the JDBC driver from Debian's packages.
public enum TestClients {
    /// The package's root folder (this file is `Sources/RolegateTestSupport/TestClients.swift`).
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    /// The Python that runs the test clients: `$ROLEGATE_TEST_PYTHON` (set by `./test.sh`), else
    /// the venv `./test.sh` made, else `python3` (whose missing modules the tests then name).
    public static let python: String = {
        if let chosen = ProcessInfo.processInfo.environment["ROLEGATE_TEST_PYTHON"], !chosen.isEmpty {
            return chosen
        }
        let venv = packageRoot + "/.build/test-venv/bin/python"
        return FileManager.default.isExecutableFile(atPath: venv) ? venv : "python3"
    }()

    /// What to tell a person whose machine lacks a test client.
    public static let setUpHint =
        "run ./test.sh, which installs the test clients (Tests/requirements.txt into .build/test-venv)"

    /// Nil when ``python`` can import `module`; otherwise why not and the command that fixes it.
    public static func missingPythonModule(_ module: String) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, "-c", "import \(module)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
            process.waitUntilExit()
        } catch {
            return "\(python) cannot be started (\(error)): \(setUpHint)"
        }
        return process.terminationStatus == 0 ? nil : "\(python) has no module \(module): \(setUpHint)"
    }

    /// The PostgreSQL JDBC driver, as Debian's libpostgresql-jdbc-java installs it.
    public static let jdbcDriver = "/usr/share/java/postgresql.jar"

    /// Set to 1 to skip the JDBC client test on a machine without Java.
    public static var skipJDBC: Bool { ProcessInfo.processInfo.environment["ROLEGATE_SKIP_JDBC"] == "1" }
}
