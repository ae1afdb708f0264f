import Foundation
import RolegateCore
import RolegateStore
import RolegateTestSupport
import Testing

@testable import RolegateHTTP

/// The console's pieces that need no browser: the audit export's cells, the activity chart, and
/// the tables' escaping.
@Suite(.ownThreads) struct ConsolePageTests {
    @Test func csvCellsAreQuotedAndFormulasDisarmed() {
        #expect(AuditExport.field("plain") == "plain")
        #expect(AuditExport.field("a,b") == "\"a,b\"")
        #expect(AuditExport.field("say \"hi\"\nnow") == "\"say \"\"hi\"\"\nnow\"")
        #expect(AuditExport.field("=HYPERLINK(\"x\")") == "\"'=HYPERLINK(\"\"x\"\")\"")
        #expect(AuditExport.field("@SUM(1)") == "'@SUM(1)")
        #expect(AuditExport.field("-- a comment") == "-- a comment", "SQL comments stay as they are")
        let event = AuditEvent(at: Date(timeIntervalSince1970: 0), kind: .statement, action: "ok", sql: "SELECT 1, 2")
        let csv = AuditExport.csv([event])
        let lines = csv.components(separatedBy: "\r\n")
        #expect(lines[0].hasPrefix("id,instance,sequence,at,kind,action") && lines[1].contains("\"SELECT 1, 2\""))
        #expect(lines[0].split(separator: ",").count == AuditExport.columns.count)
    }

    @Test func theChartDrawsEachMinuteScaledToItsPeak() {
        let from = Date(timeIntervalSince1970: 1_800_000_000)
        let to = from + 600
        let activity = [
            AuditActivity(start: from + 60, kind: .statement, action: "ok", count: 40),
            AuditActivity(start: from + 60, kind: .statement, action: "error", count: 10),
            AuditActivity(start: from + 120, kind: .statement, action: "ok", count: 25),
            AuditActivity(start: from + 120, kind: .session, action: "start", count: 3),
            AuditActivity(start: from + 120, kind: .session, action: "end", count: 9),
        ]
        let svg = ActivityChart.svg(activity, from: from, to: to).text
        #expect(svg.components(separatedBy: "<rect").count - 1 == 2, "one bar per minute with statements")
        #expect(svg.contains("peak 50") && svg.contains("peak 3"), "statements of every action; sessions started only")
        #expect(svg.contains("75 statements, 3 sessions in all"))
        #expect(ActivityChart.svg([], from: from, to: to).text.contains("No session started"))
    }

    @Test func textIsEscapedAndOnlyMarkupIsInsertedAsItIs() {
        let hostile = "\"><script>alert(1)</script>"
        let page: HTML = "<p title=\"\(hostile)\">\(hostile)</p>"
        #expect(
            page.text
                == "<p title=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\">&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        )
        let inner: HTML = "<b>\(hostile)</b>"
        let outer: HTML = "<div>\(inner)</div>"
        #expect(outer.text.hasPrefix("<div><b>&quot;"), "markup nests without being escaped twice")
        let select = ConsolePage.select(
            "kind", label: "Kind <b>", options: [("x\"><script>", "<i>")], selected: "x\"><script>"
        ).text
        #expect(!select.contains("<script>") && !select.contains("<i>") && select.contains("selected"))
        let input = ConsolePage.input("q", label: "Q", value: "\"><img src=x>").text
        #expect(!input.contains("<img") && input.contains("&quot;&gt;&lt;img"))
        let table = ConsolePage.table(["A<"], [["<b>\(hostile)</b>"]]).text
        #expect(table.contains("data-label=\"A&lt;\"") && table.contains("<b>&quot;&gt;&lt;script"))
        #expect(
            [HTML("<br>"), "\(hostile)"].joined(separator: ", ").text
                == "<br>, &quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;")
    }
}
