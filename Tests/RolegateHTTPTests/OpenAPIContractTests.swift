import Crypto
import Foundation
import RolegateCore
import RolegateTestSupport
import Testing
import Yams

@testable import RolegateHTTP
@testable import RolegateHTTPContract

/// The hand-kept parts of the HTTP API held to openapi.yaml: the generated code is as new as
/// the document, the string formats the handlers check are exactly the document's patterns,
/// and the operations that skip authentication are exactly those the document marks public.
@Suite(.ownThreads) struct OpenAPIContractTests {
    var document: [String: Any] {
        get throws { try #require(try Yams.load(yaml: OpenAPIDocument.yaml) as? [String: Any]) }
    }

    @Test func theGeneratedCodeIsAsNewAsTheDocument() throws {
        let hash = SHA256.hash(data: Array(OpenAPIDocument.yaml.utf8)).map { String(format: "%02x", $0) }.joined()
        #expect(
            hash == generatedFromDocumentSHA256,
            "openapi.yaml changed since Sources/RolegateHTTPContract was generated: run scripts/generate-openapi.sh")
    }

    func pattern(_ schema: String) throws -> NSRegularExpression {
        let components = try #require(try document["components"] as? [String: Any])
        let schemas = try #require(components["schemas"] as? [String: Any])
        let text = try #require((schemas[schema] as? [String: Any])?["pattern"] as? String)
        return try NSRegularExpression(pattern: text)
    }

    func matches(_ regex: NSRegularExpression, _ text: String) -> Bool {
        regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
    }

    /// Strings near the patterns' edges, and random ones from their alphabet.
    func candidates(_ alphabet: [Character], seed: UInt64) -> [String] {
        var fixed = [
            "", "1s", "30m", "1h30m", "7d", "0ms", "123456789d", "1234567890s", "1s2s3s4s", "1s2s3s4s5s", "1x", "s",
            " 1s", "1s ", "1S", "2026-12-01", "2026-13-01", "2026-12-32", "2026-02-31", "2026-12-01T09:30:00Z",
            "2026-12-01T24:00:00Z", "2026-12-01T09:60:00Z", "2026-12-01T09:30:60Z", "2026-12-01T09:30:00.1Z",
            "2026-12-01T09:30:00.1234Z", "2026-12-01T09:30:00+02:00", "2026-12-01T09:30:00+24:00",
            "2026-12-01T09:30:00", "2026-12-01T09:30Z", "12026-12-01", "2026-1-01",
        ]
        var generator = SplitMix64(seed: seed)
        for _ in 0..<20_000 {
            let length = Int(generator.next() % 26)
            fixed.append(String((0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }))
        }
        return fixed
    }

    @Test func durationsAreCheckedExactlyAsTheDocumentsPattern() throws {
        let regex = try pattern("Duration")
        let alphabet = Array("0123456789msmhd0123456789")
        for text in candidates(alphabet, seed: 1) {
            #expect(ContractFormats.isDuration(text[...]) == matches(regex, text), "\"\(text)\"")
        }
    }

    @Test func pointsInTimeAreCheckedExactlyAsTheDocumentsPattern() throws {
        let regex = try pattern("PointInTime")
        let alphabet = Array("0123456789-:T.Z+0123456789msh2")
        for text in candidates(alphabet, seed: 2) {
            #expect(ContractFormats.isPointInTime(text) == matches(regex, text), "\"\(text)\"")
        }
    }

    @Test func theOperationsWithoutAuthenticationAreThoseTheDocumentMarksPublic() throws {
        let paths = try #require(try document["paths"] as? [String: Any])
        var open: Set<String> = []
        var all: Set<String> = []
        for case let (_, item as [String: Any]) in paths {
            for case let (_, operation as [String: Any]) in item {
                guard let id = operation["operationId"] as? String else { continue }
                all.insert(id)
                if let security = operation["security"] as? [Any], security.isEmpty { open.insert(id) }
            }
        }
        #expect(ContractAuthentication.publicOperations == open)
        #expect(ContractAuthentication.peerOperations.isSubset(of: all.subtracting(open)))
    }

    @Test func theMethodTableComesFromTheDocument() {
        #expect(ContractPaths.methods(of: "/admin/v1/tokens") == ["GET", "POST"])
        #expect(ContractPaths.methods(of: "/admin/v1/tokens/abc/revoke") == ["POST"])
        #expect(ContractPaths.methods(of: "/admin/v1/sessions/abc") == ["DELETE"])
        #expect(ContractPaths.methods(of: "/v1/query") == ["POST"])
        #expect(ContractPaths.methods(of: "/admin/v1/tokens//revoke") == nil)
        #expect(ContractPaths.methods(of: "/nowhere") == nil)
    }

    @Test func problemsAreRFC9457WithTheStableCode() throws {
        let problem = Problem(status: .conflict, code: "self_revocation", message: "no")
        let body = try #require(
            try JSONSerialization.jsonObject(with: Data(problem.body(requestID: "r1").readableBytesView))
                as? [String: Any])
        #expect(body["type"] as? String == "urn:rolegate:problem:self_revocation")
        #expect(body["title"] as? String == "A token cannot revoke itself")
        #expect(
            body["status"] as? Int == 409 && body["detail"] as? String == "no" && body["message"] as? String == "no")
        #expect(body["code"] as? String == "self_revocation" && body["request_id"] as? String == "r1")
        #expect(problem.response(requestID: "r1").headers[.contentType] == "application/problem+json")
    }
}
