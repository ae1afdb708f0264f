import Foundation
import RolegateTestSupport
import Testing

/// Fails the calling test, naming the command that fixes it, when the test client's Python
/// lacks `module` (a missing client is a failure, never a silent skip: see ./test.sh).
func requirePythonModule(_ module: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let missing = TestClients.missingPythonModule(module)
    try #require(missing == nil, "\(missing ?? "")", sourceLocation: sourceLocation)
}

/// Fails the calling test, naming what installs them, unless Selenium and Debian's headless
/// Chromium are there (the browser-driven tests: the console and people's logins).
func requireBrowser(sourceLocation: SourceLocation = #_sourceLocation) throws {
    try requirePythonModule("selenium", sourceLocation: sourceLocation)
    try #require(
        FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"),
        "chromium is not installed (./test.sh installs Debian's chromium and chromium-driver)",
        sourceLocation: sourceLocation)
}
