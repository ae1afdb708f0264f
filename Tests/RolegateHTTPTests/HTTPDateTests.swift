import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateHTTP

@Suite(.ownThreads) struct HTTPDateTests {
    /// IMF-fixdate as RFC 9110 spells it (its own example), and what HTTP clients parse.
    @Test func datesAreIMFFixdate() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(1_798_761_599) == "Thu, 31 Dec 2026 23:59:59 GMT")
        let parser = DateFormatter()
        parser.locale = Locale(identifier: "en_US_POSIX")
        parser.timeZone = TimeZone(identifier: "GMT")
        parser.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let now = HTTPDate.now()
        let parsed = parser.date(from: now)
        #expect(parsed.map { abs($0.timeIntervalSinceNow) < 5 } == true, "\(now)")
    }
}
