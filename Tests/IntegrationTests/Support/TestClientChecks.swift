import RolegateTestSupport
import Testing

/// Fails the calling test, naming the command that fixes it, when the test client's Python
/// lacks `module` (a missing client is a failure, never a silent skip: see ./test.sh).
func requirePythonModule(_ module: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let missing = TestClients.missingPythonModule(module)
    try #require(missing == nil, "\(missing ?? "")", sourceLocation: sourceLocation)
}
