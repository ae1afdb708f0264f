import RolegateTestSupport
import Testing

@testable import RolegateHTTP

/// The order rules of ``HTTPRequestSequencer``: what goes on at once, what waits behind an
/// unanswered request, when reading is held, and what quiescing does.
@Suite(.ownThreads) struct RequestSequenceTests {
    /// The sequence under test, in a box so that `#expect` can call its mutating members.
    final class Sequence {
        var state = RequestSequence<String>()
        var quiescing: Bool { state.quiescing }
        var shouldClose: Bool { state.shouldClose }
        var waitingCount: Int { state.waitingCount }
        func arrived(_ item: String, _ kind: RequestSequence<String>.Kind) -> Bool { state.arrived(item, kind) }
        func responseEnded() { state.responseEnded() }
        func nextDeliverable() -> String? { state.nextDeliverable() }
        func readRequested() -> Bool { state.readRequested() }
        func takeHeldRead() -> Bool { state.takeHeldRead() }
        func quiesce() -> Bool { state.quiesce() }
        /// Delivers whatever may go on now, as the handler does after an answer's end.
        func drain() -> [String] {
            var out: [String] = []
            while let item = state.nextDeliverable() { out.append(item) }
            return out
        }
    }

    /// Requests one after another (no pipelining): everything goes on at once and reading is never held.
    @Test func requestsOneAfterAnotherAreNeverHeld() {
        let sequence = Sequence()
        for round in 0..<3 {
            #expect(sequence.arrived("head\(round)", .head))
            #expect(sequence.arrived("body\(round)", .body))
            #expect(sequence.arrived("end\(round)", .end))
            // Awaiting the answer, reading goes on (nothing waits).
            #expect(sequence.readRequested())
            sequence.responseEnded()
            #expect(sequence.drain().isEmpty)
            #expect(!sequence.takeHeldRead())
        }
    }

    /// A pipelined request waits whole behind the unanswered one, reading stops meanwhile,
    /// and it goes on (with the read) once the first answer has ended.
    @Test func aPipelinedRequestWaitsForTheAnswerBeforeIt() {
        let sequence = Sequence()
        #expect(sequence.arrived("h1", .head))
        #expect(sequence.arrived("e1", .end))
        #expect(!sequence.arrived("h2", .head))
        #expect(!sequence.arrived("b2", .body))
        #expect(!sequence.arrived("e2", .end))
        #expect(!sequence.arrived("h3", .head))
        #expect(sequence.waitingCount == 4)
        #expect(!sequence.readRequested())
        #expect(!sequence.takeHeldRead())
        sequence.responseEnded()
        // The second request, whole; the third waits for the second's answer.
        #expect(sequence.drain() == ["h2", "b2", "e2"])
        #expect(!sequence.takeHeldRead())
        sequence.responseEnded()
        #expect(sequence.drain() == ["h3"])
        #expect(sequence.takeHeldRead())
        #expect(!sequence.takeHeldRead())
        // The third is still arriving: its parts go straight on.
        #expect(sequence.arrived("e3", .end))
    }

    /// An answer that ends before its request has arrived (413, or a refusal at the head):
    /// the rest of that request still goes on to its handler, not taken for a new request.
    @Test func theRestOfARequestAnsweredEarlyStillGoesOn() {
        let sequence = Sequence()
        #expect(sequence.arrived("h1", .head))
        sequence.responseEnded()
        #expect(sequence.arrived("b1", .body))
        #expect(sequence.arrived("e1", .end))
        #expect(sequence.arrived("h2", .head))
        #expect(sequence.arrived("e2", .end))
        #expect(!sequence.arrived("x", .event))
    }

    /// Answered while its parts are being delivered (the handler answers at the head): the
    /// delivery goes on from where it was, in order.
    @Test func anAnswerDuringDeliveryKeepsTheOrder() {
        let sequence = Sequence()
        _ = sequence.arrived("h1", .head)
        _ = sequence.arrived("e1", .end)
        for item in ["h2", "b2", "e2", "h3", "e3"] {
            _ = sequence.arrived(item, item.hasPrefix("h") ? .head : item.hasPrefix("b") ? .body : .end)
        }
        sequence.responseEnded()
        var order: [String] = []
        order.append(sequence.nextDeliverable()!)  // h2
        // Its handler answers at once, before b2 and e2 went on.
        sequence.responseEnded()
        order += sequence.drain()
        #expect(order == ["h2", "b2", "e2", "h3", "e3"])
    }

    /// A parse error or the input's close behind an unanswered request waits its turn; with
    /// no request in hand it goes on at once.
    @Test func eventsKeepTheirPlace() {
        let sequence = Sequence()
        #expect(sequence.arrived("error", .event))
        #expect(sequence.arrived("h1", .head))
        #expect(sequence.arrived("e1", .end))
        #expect(!sequence.arrived("closed", .event))
        sequence.responseEnded()
        #expect(sequence.drain() == ["closed"])
    }

    /// Quiescing: an idle connection closes at once; a busy one after its answer, and what
    /// waited behind it is dropped.
    @Test func quiescingClosesAfterTheAnswer() {
        let idle = Sequence()
        #expect(idle.quiesce())
        let busy = Sequence()
        _ = busy.arrived("h1", .head)
        _ = busy.arrived("e1", .end)
        _ = busy.arrived("h2", .head)
        #expect(!busy.quiesce())
        #expect(busy.quiescing && !busy.shouldClose)
        busy.responseEnded()
        #expect(busy.shouldClose)
        #expect(busy.nextDeliverable() == nil)
        // Quiesced while a request was still arriving: it closes once that request is whole and answered.
        let arriving = Sequence()
        _ = arriving.arrived("h1", .head)
        #expect(!arriving.quiesce())
        arriving.responseEnded()
        #expect(!arriving.shouldClose)
        #expect(arriving.arrived("e1", .end))
        #expect(arriving.shouldClose)
    }
}
