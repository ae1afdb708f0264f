import Foundation
import Logging
import RolegateTestSupport
import Testing

@testable import RolegateHTTP

@Suite(.ownThreads) struct LogLineHandlerTests {
    struct Refused: Error, CustomStringConvertible {
        var description: String { "refused" }
    }

    let time = Date(timeIntervalSince1970: 1_795_000_000.5)

    func event(
        _ level: Logger.Level, _ message: Logger.Message, error: (any Error)? = nil, _ metadata: Logger.Metadata?
    )
        -> LogEvent
    {
        LogEvent(
            level: level, message: message, error: error, metadata: metadata, source: "RolegateHTTP", file: #fileID,
            function: #function, line: #line)
    }

    func text(_ handler: LogLineHandler, _ event: LogEvent) -> String {
        String(decoding: handler.line(event, time: time), as: UTF8.self)
    }

    /// A text line reads as swift-log's stream handler writes one: time (RFC 3339 UTC), level,
    /// label, the handler's and the event's metadata sorted by key (the event's winning), the
    /// source and the message; an error adds its message and type.
    @Test func textLinesCarryTheMetadataSorted() {
        var handler = LogLineHandler(label: "rolegate.http", format: .text)
        handler[metadataKey: "hb.request.id"] = "7"
        handler[metadataKey: "status"] = "0"
        let access = event(.info, "http request", ["status": "200", "path": "/v1/query", "duration_ms": "1.25"])
        #expect(
            text(handler, access)
                == "2026-11-18T11:06:40.500Z info rolegate.http : duration_ms=1.25 hb.request.id=7 path=/v1/query status=200 [RolegateHTTP] http request\n"
        )
        let failed = event(.error, "store down", error: Refused(), nil)
        #expect(
            text(LogLineHandler(label: "x", format: .text), failed)
                == "2026-11-18T11:06:40.500Z error x : error.message=refused error.type=RolegateHTTPTests.LogLineHandlerTests.Refused [RolegateHTTP] store down\n"
        )
    }

    /// A JSON line is one object with sorted keys; the line's own four keys are not replaced by metadata.
    @Test func jsonLinesAreOneObject() {
        var handler = LogLineHandler(label: "rolegate.http", format: .json)
        handler[metadataKey: "request_id"] = "abc"
        let line = text(handler, event(.warning, "slow \"q\"", ["message": "not this", "status": "504"]))
        #expect(
            line
                == #"{"label":"rolegate.http","level":"warning","message":"slow \"q\"","request_id":"abc","status":"504","ts":"2026-11-18T11:06:40.500Z"}"#
                + "\n")
    }

    /// The access line's `duration_ms` reads as the microsecond-rounded milliseconds did when
    /// they were a `Double` (`1.5`, `0.042`, `12.0`), without formatting one per request.
    @Test func durationsAreMillisecondsToTheMicrosecond() {
        #expect(millisecondsText(.microseconds(1500)) == "1.5")
        #expect(millisecondsText(.microseconds(42)) == "0.042")
        #expect(millisecondsText(.milliseconds(12)) == "12.0")
        #expect(millisecondsText(.nanoseconds(1_234_567)) == "1.235")
        #expect(millisecondsText(.nanoseconds(400)) == "0.0")
        // A half microsecond rounds up; the `Double` reference below cannot say so reliably
        // (53,072,587,500 ns became 53072.587 through it), so those points are checked here.
        #expect(millisecondsText(.nanoseconds(53_072_587_500)) == "53072.588")
        #expect(millisecondsText(.nanoseconds(1_500)) == "0.002")
        for _ in 0..<2000 {
            var nanoseconds = Int64.random(in: 0...90_000_000_000)
            if nanoseconds % 1000 == 500 { nanoseconds += 1 }
            let elapsed = Duration.nanoseconds(nanoseconds)
            let asDouble = ((elapsed.timeInterval * 1000 * 1000).rounded() / 1000).description
            #expect(millisecondsText(elapsed) == asDouble, "\(elapsed)")
        }
    }
}
