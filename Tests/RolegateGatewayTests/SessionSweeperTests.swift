import Foundation
import RolegateCore
import RolegateTestSupport
import Testing

@testable import RolegateGateway

/// What the sweeper ends and records at each look, without a gateway.
@Suite(.ownThreads) struct SessionSweeperTests {
    let now = Date(timeIntervalSince1970: 2_000_000_000)

    func token(_ id: String, expiresIn seconds: TimeInterval) -> TokenRecord {
        var record = ClientSessionMachineTests().record(id: id)
        record.expiresAt = now.addingTimeInterval(seconds)
        return record
    }

    @Test func anExpiredTokenIsRecordedOnceAndItsSessionsEnd() {
        var sweeper = SessionSweeper(endOnExpiry: true, endOnOutage: false)
        let expired = token("aaaaaaaaaaaaaaaa", expiresIn: -1)
        let live = token("bbbbbbbbbbbbbbbb", expiresIn: 60)
        // Two sessions of the expired token, one of a live one.
        let first = sweeper.sweep([expired, live, expired], now: now, storeCurrent: true)
        #expect(first == [.recordExpiry(expired), .end(0, .expired), .end(2, .expired)])
        // Sessions still closing at the next look: ended again, never recorded twice.
        let second = sweeper.sweep([expired, live], now: now, storeCurrent: true)
        #expect(second == [.end(0, .expired)])
        // Once its sessions are gone, the token is forgotten (memory does not grow).
        #expect(sweeper.sweep([live], now: now, storeCurrent: true).isEmpty)
        #expect(sweeper.expiryRecorded.isEmpty)
    }

    @Test func withoutEndOnExpiryTheExpiryIsRecordedButSessionsGoOn() {
        var sweeper = SessionSweeper(endOnExpiry: false, endOnOutage: false)
        let expired = token("aaaaaaaaaaaaaaaa", expiresIn: -1)
        #expect(sweeper.sweep([expired], now: now, storeCurrent: true) == [.recordExpiry(expired)])
        #expect(sweeper.sweep([expired], now: now, storeCurrent: true).isEmpty)
    }

    @Test func aStoreOutageEndsEverySessionOnlyWhenThePolicySaysSo() {
        let live = token("bbbbbbbbbbbbbbbb", expiresIn: 60)
        var ending = SessionSweeper(endOnExpiry: true, endOnOutage: true)
        #expect(
            ending.sweep([live, live], now: now, storeCurrent: false) == [.end(0, .storeOutage), .end(1, .storeOutage)])
        #expect(ending.sweep([live], now: now, storeCurrent: true).isEmpty)
        var keeping = SessionSweeper(endOnExpiry: true, endOnOutage: false)
        #expect(keeping.sweep([live], now: now, storeCurrent: false).isEmpty)
    }
}
