import NIOCore
import RolegateTestSupport
import Testing

@testable import RolegateHTTP

/// The order rules of the data API's requests, part by part (the handler that performs
/// them is tested through curl and raw sockets in HTTPTests and SecurityTests).
@Suite(.ownThreads) struct DataRequestMachineTests {
    typealias Machine = DataRequestMachine

    func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test func pathsMatchAsTheRouterMatchesThem() {
        for path in ["/v1/query", "/v1/query/", "/v1/query?x=1", "//v1//query", "/v1/query/?a=b/c"] {
            #expect(Machine.endpoint(path: path) == .query, "\(path)")
        }
        #expect(Machine.endpoint(path: "/v1/batch") == .batch)
        for path in ["/v1/queryx", "/v2/query", "/v1/query/more", "/v1", "/", "", "/V1/query", "/v1?/query", "query"] {
            #expect(Machine.endpoint(path: path) == nil, "\(path)")
        }
    }

    @Test func otherRoutesPassThroughPartByPart() {
        var machine = Machine(limit: 100)
        #expect(machine.head(isPost: true, path: "/admin/v1/tokens", declaredLength: 1000) == .forward)
        #expect(machine.endpoint == nil)
        // A body past the data API's limit is not the data API's business.
        #expect(machine.body(bytes(String(repeating: "x", count: 500))) == .forward)
        #expect(machine.end() == .forward)
        #expect(machine.state == .idle)
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: nil) == .authenticate(.query))
        #expect(machine.endpoint == .query)
    }

    @Test func aRequestRunsOnceItsTokenIsCheckedAndItsBodyIsWhole() {
        // The token checked while the body arrives.
        var machine = Machine(limit: 100)
        #expect(machine.head(isPost: true, path: "/v1/batch", declaredLength: 4) == .authenticate(.batch))
        #expect(machine.awaitsBody)
        #expect(machine.body(bytes("ab")) == .none)
        #expect(machine.authenticated() == .none)
        #expect(machine.body(bytes("cd")) == .none)
        #expect(machine.end() == .run(.batch, body: bytes("abcd")))
        #expect(machine.state == .running && !machine.awaitsBody)
        #expect(machine.bodyTimedOut() == .none, "a running request has its body")
        machine.answered()
        #expect(machine.state == .idle)

        // The body whole before the token is known (a store lookup).
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: nil) == .authenticate(.query))
        #expect(machine.body(bytes("{}")) == .none)
        #expect(machine.end() == .none)
        #expect(!machine.awaitsBody)
        #expect(machine.bodyTimedOut() == .none)
        #expect(machine.authenticated() == .run(.query, body: bytes("{}")))
        #expect(machine.authenticated() == .none, "runs once")
        machine.answered()

        // No body at all.
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: 0) == .authenticate(.query))
        #expect(machine.authenticated() == .none)
        #expect(machine.end() == .run(.query, body: ByteBuffer()))
    }

    @Test func theBodyLimitHoldsDeclaredAndGrowing() {
        var machine = Machine(limit: 10)
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: 11) == .refuse(.tooLarge))
        #expect(machine.body(bytes("0123456789x")) == .none)
        #expect(machine.end() == .none)
        #expect(machine.state == .idle)

        // Without a length (chunked): refused at the part that passes the limit, the rest dropped.
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: nil) == .authenticate(.query))
        #expect(machine.body(bytes("01234")) == .none)
        #expect(machine.body(bytes("567890")) == .refuse(.tooLarge))
        #expect(machine.authenticated() == .none)
        #expect(machine.body(bytes("more")) == .none)
        #expect(machine.end() == .none)
        #expect(machine.state == .idle)

        // Exactly the limit is fine.
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: 10) == .authenticate(.query))
        #expect(machine.body(bytes("01234")) == .none)
        #expect(machine.body(bytes("56789")) == .none)
        #expect(machine.authenticated() == .none)
        #expect(machine.end() == .run(.query, body: bytes("0123456789")))
    }

    @Test func refusalsDropTheRestOfTheirRequest() {
        var machine = Machine(limit: 100)
        #expect(machine.head(isPost: false, path: "/v1/batch/", declaredLength: nil) == .refuse(.methodNotAllowed))
        #expect(machine.endpoint == .batch, "a refused request is still the data API's to answer")
        #expect(machine.end() == .none)
        #expect(machine.state == .idle)

        // A refused token while the body still arrives.
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: 9) == .authenticate(.query))
        #expect(machine.body(bytes("abc")) == .none)
        machine.refused()
        #expect(machine.state == .discarding && !machine.awaitsBody)
        #expect(machine.authenticated() == .none)
        #expect(machine.body(bytes("def")) == .none)
        #expect(machine.end() == .none)
        #expect(machine.state == .idle)

        // Refused after the body's end.
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: 3) == .authenticate(.query))
        #expect(machine.body(bytes("abc")) == .none)
        #expect(machine.end() == .none)
        machine.refused()
        #expect(machine.state == .idle)
    }

    @Test func aSlowBodyTimesOut() {
        var machine = Machine(limit: 100)
        #expect(machine.head(isPost: true, path: "/v1/query", declaredLength: 50) == .authenticate(.query))
        #expect(machine.authenticated() == .none)
        #expect(machine.body(bytes("{\"sql\":")) == .none)
        #expect(machine.bodyTimedOut() == .refuse(.bodyTimedOut))
        #expect(machine.bodyTimedOut() == .none, "refused once")
        #expect(machine.body(bytes("\"SELECT 1\"}")) == .none)
        #expect(machine.end() == .none, "a late end does not run it")
        #expect(machine.state == .idle)
    }
}
