import NIOCore
import RolegateTestSupport
import Testing

@testable import RolegateGateway

@Suite(.ownThreads) struct LoginThrottleTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let settings = LoginThrottleSettings(limit: 3, window: .seconds(60), delay: .seconds(2), maxDelayedPerAddress: 2)

    @Test func failuresUpToTheLimitAreAnsweredAtOnceThenDelayed() {
        var state = LoginThrottleState(settings: settings)
        for _ in 0..<3 {
            #expect(state.failed(address: "10.0.0.1", now: start).verdict == .answerNow)
        }
        let fourth = state.failed(address: "10.0.0.1", now: start + .seconds(1))
        #expect(fourth.verdict == .delay(.seconds(2)))
        #expect(fourth.crossedLimit)
        #expect(fourth.failuresInWindow == 4)
        // Crossing is reported once per window, not per attempt.
        #expect(!state.failed(address: "10.0.0.1", now: start + .seconds(1)).crossedLimit)
        // Another address is not affected.
        #expect(state.failed(address: "10.0.0.2", now: start + .seconds(1)).verdict == .answerNow)
    }

    @Test func heldAnswersPerAddressAreCappedSoSlotsCannotBeFilled() {
        var state = LoginThrottleState(settings: settings)
        for _ in 0..<3 { _ = state.failed(address: "a", now: start) }
        #expect(state.failed(address: "a", now: start).verdict == .delay(.seconds(2)))
        #expect(state.failed(address: "a", now: start).verdict == .delay(.seconds(2)))
        // Two answers are held: the next failure is answered at once.
        #expect(state.failed(address: "a", now: start).verdict == .answerNow)
        state.delayedAnswerSent(address: "a")
        #expect(state.failed(address: "a", now: start).verdict == .delay(.seconds(2)))
    }

    @Test func theWindowResets() {
        var state = LoginThrottleState(settings: settings)
        for _ in 0..<4 { _ = state.failed(address: "a", now: start) }
        let later = state.failed(address: "a", now: start + .seconds(61))
        #expect(later.verdict == .answerNow)
        #expect(later.failuresInWindow == 1)
    }

    @Test func limitZeroTurnsItOff() {
        var state = LoginThrottleState(settings: .off)
        for _ in 0..<100 { #expect(state.failed(address: "a", now: start).verdict == .answerNow) }
        #expect(state.entries.isEmpty)
    }

    @Test func memoryIsBoundedUnderASpreadOutAttack() {
        var state = LoginThrottleState(settings: settings, capacity: 100)
        for i in 0..<1000 {
            _ = state.failed(address: "10.0.\(i / 256).\(i % 256)", now: start + .milliseconds(Int64(i)))
        }
        #expect(state.entries.count <= 100)
        // Expired windows go first.
        var aged = LoginThrottleState(settings: settings, capacity: 10)
        for i in 0..<10 { _ = aged.failed(address: "old\(i)", now: start) }
        _ = aged.failed(address: "new", now: start + .seconds(120))
        #expect(aged.entries.keys.sorted() == ["new"])
    }
}
