import Foundation
import RolegateCore
import RolegateTestSupport
import Testing

/// Instances authenticate their calls to each other with a signature under the shared master key.
@Suite(.ownThreads) struct PeerRequestSignatureTests {
    let signer = PeerRequestSignature(masterKey: MasterKey.generate())
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aSignedRequestVerifiesAndNamesItsInstanceAndActor() {
        let header = signer.sign(
            method: "DELETE", path: "/admin/v1/sessions/abc?scope=local", instance: "gw-1", actor: "ops/tok1", at: now)
        #expect(
            signer.verify(
                header, method: "DELETE", path: "/admin/v1/sessions/abc?scope=local", actor: "ops/tok1",
                now: now.addingTimeInterval(5))
                == .success(.init(instance: "gw-1", actor: "ops/tok1")))
    }

    @Test func anythingChangedOrLateOrUnderAnotherKeyIsRefused() {
        let path = "/admin/v1/sessions?scope=local"
        let header = signer.sign(method: "GET", path: path, instance: "gw-1", actor: "ops/tok1", at: now)
        #expect(
            signer.verify(header, method: "DELETE", path: path, actor: "ops/tok1", now: now) == .failure(.badSignature))
        #expect(
            signer.verify(header, method: "GET", path: "/admin/v1/sessions", actor: "ops/tok1", now: now)
                == .failure(.badSignature))
        #expect(signer.verify(header, method: "GET", path: path, actor: "mallory", now: now) == .failure(.badSignature))
        let otherInstance = header.replacingOccurrences(of: "i=gw-1", with: "i=gw-2")
        #expect(
            signer.verify(otherInstance, method: "GET", path: path, actor: "ops/tok1", now: now)
                == .failure(.badSignature))
        #expect(
            signer.verify(header, method: "GET", path: path, actor: "ops/tok1", now: now.addingTimeInterval(31))
                == .failure(.outsideWindow))
        let stranger = PeerRequestSignature(masterKey: MasterKey.generate())
        #expect(
            stranger.verify(header, method: "GET", path: path, actor: "ops/tok1", now: now) == .failure(.badSignature))
        for malformed in ["", "t=1", "t=x,i=gw-1,s=00", "garbage", "t=1,i=,s=00"] {
            #expect(signer.verify(malformed, method: "GET", path: path, actor: "", now: now) == .failure(.malformed))
        }
    }
}
