import Foundation
import RolegateCore
import RolegateTestSupport
import Testing

@testable import PostgresWire

@Suite(.ownThreads) struct SCRAMTests {
    let salt = Array(Data(base64Encoded: "W22ZaJ0SNY7soEsUEjb6gQ==")!)

    /// RFC 7677's exchange, reproduced byte for byte by both sides.
    @Test func rfc7677Exchange() throws {
        var client = SCRAMClient(password: "pencil", clientNonce: "rOprNGfwEbeRWgbNEkqO")
        client.clientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
        #expect(String(decoding: client.clientFirst(), as: UTF8.self) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        var server = SCRAMServer(salt: salt, iterations: 4096, serverNonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
        let serverFirst = try server.receiveClientFirst(client.clientFirst())
        #expect(
            String(decoding: serverFirst, as: UTF8.self)
                == "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        let clientFinal = try client.receiveServerFirst(serverFirst)
        #expect(
            String(decoding: clientFinal, as: UTF8.self)
                == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        )
        let verifier = SCRAMSHA256.verifier(password: "pencil", salt: salt)
        let (index, serverFinal) = try server.receiveClientFinal(clientFinal, candidates: [verifier])
        #expect(index == 0)
        #expect(String(decoding: serverFinal, as: UTF8.self) == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        try client.receiveServerFinal(serverFinal)
    }

    @Test func matchesWhicheverCandidateTheClientHolds() throws {
        let old = SCRAMSHA256.verifier(password: "old-token", salt: salt)
        let new = SCRAMSHA256.verifier(password: "new-token", salt: salt)
        for (password, expected) in [("old-token", 0), ("new-token", 1)] {
            var client = SCRAMClient(password: password)
            var server = SCRAMServer(salt: salt, iterations: 4096)
            let final = try client.receiveServerFirst(try server.receiveClientFirst(client.clientFirst()))
            let (index, serverFinal) = try server.receiveClientFinal(final, candidates: [old, new])
            #expect(index == expected)
            try client.receiveServerFinal(serverFinal)
        }
        var client = SCRAMClient(password: "wrong")
        var server = SCRAMServer(salt: salt, iterations: 4096)
        let final = try client.receiveServerFirst(try server.receiveClientFirst(client.clientFirst()))
        #expect(throws: SCRAMError.proofRejected) { try server.receiveClientFinal(final, candidates: [old, new]) }
        var none = SCRAMServer(salt: salt, iterations: 4096)
        var c2 = SCRAMClient(password: "x")
        let f2 = try c2.receiveServerFirst(try none.receiveClientFirst(c2.clientFirst()))
        #expect(throws: SCRAMError.proofRejected) { try none.receiveClientFinal(f2, candidates: []) }
    }

    @Test func hostileClientMessages() throws {
        func freshServer() -> SCRAMServer { SCRAMServer(salt: salt, iterations: 4096, serverNonce: "SERVERNONCE") }
        var server = freshServer()
        #expect(throws: SCRAMError.channelBindingUnsupported) {
            try server.receiveClientFirst(Array("p=tls-server-end-point,,n=,r=abc".utf8))
        }
        for bad in ["", "n,,", "x,,n=,r=abc", "n,a=admin,n=,r=abc", "n,,n=,r=", "n,,m=ext,n=,r=abc", "n,,n=,r=a,b"] {
            var s = freshServer()
            #expect(throws: SCRAMError.self, "\(bad)") { try s.receiveClientFirst(Array(bad.utf8)) }
        }
        #expect(throws: SCRAMError.self) { try server.receiveClientFinal([], candidates: []) }  // out of order

        let verifier = SCRAMSHA256.verifier(password: "token", salt: salt)
        var client = SCRAMClient(password: "token", clientNonce: "CLIENTNONCE")
        let proper = String(
            decoding: try client.receiveServerFirst(
                Array("r=CLIENTNONCESERVERNONCE,s=\(Data(salt).base64EncodedString()),i=4096".utf8)), as: UTF8.self)
        let cases: [(String, SCRAMError)] = [
            (
                proper.replacingOccurrences(of: "r=CLIENTNONCESERVERNONCE", with: "r=CLIENTNONCEOTHERNONCE"),
                .nonceMismatch
            ),
            (proper.replacingOccurrences(of: "c=biws", with: "c=eSws"), .channelBindingMismatch),
            (String(proper.dropLast(8)), .malformed("proof")),
            (proper.components(separatedBy: ",p=")[0], .malformed("no proof")),
        ]
        for (message, expected) in cases {
            var s = freshServer()
            _ = try s.receiveClientFirst(client.clientFirst())
            #expect(throws: expected, "\(message)") {
                try s.receiveClientFinal(Array(message.utf8), candidates: [verifier])
            }
        }
        // Bytes that are not UTF-8 are refused by name; UTF-8 beyond ASCII (allowed in an
        // extension) gets as far as the proof, which no longer covers what was sent.
        let proofAt = proper.range(of: ",p=")!.lowerBound
        let bytesCases: [([UInt8], SCRAMError)] = [
            (Array(proper.utf8) + [0xFF], .malformed("not UTF-8")),
            (Array((proper[..<proofAt] + ",x=\u{E9}" + proper[proofAt...]).utf8), .proofRejected),
        ]
        for (message, expected) in bytesCases {
            var s = freshServer()
            _ = try s.receiveClientFirst(client.clientFirst())
            #expect(throws: expected) { try s.receiveClientFinal(message, candidates: [verifier]) }
        }
        // The untouched message is accepted, once: a replay on the same exchange is out of order.
        var s = freshServer()
        _ = try s.receiveClientFirst(client.clientFirst())
        _ = try s.receiveClientFinal(Array(proper.utf8), candidates: [verifier])
        #expect(throws: SCRAMError.outOfOrder) { try s.receiveClientFinal(Array(proper.utf8), candidates: [verifier]) }
        // Replayed against a new exchange (new server nonce), it fails.
        var replay = SCRAMServer(salt: salt, iterations: 4096, serverNonce: "ANOTHERNONCE")
        _ = try replay.receiveClientFirst(client.clientFirst())
        #expect(throws: SCRAMError.nonceMismatch) {
            try replay.receiveClientFinal(Array(proper.utf8), candidates: [verifier])
        }
    }

    @Test func clientChecksTheServer() throws {
        var client = SCRAMClient(password: "token", clientNonce: "CN")
        #expect(throws: SCRAMError.nonceMismatch) {
            try client.receiveServerFirst(Array("r=OTHER,s=\(Data(salt).base64EncodedString()),i=4096".utf8))
        }
        #expect(throws: SCRAMError.self) { try client.receiveServerFirst(Array("r=CNx,s=!!,i=4096".utf8)) }
        _ = try client.receiveServerFirst(Array("r=CNxyz,s=\(Data(salt).base64EncodedString()),i=4096".utf8))
        #expect(throws: SCRAMError.serverSignatureMismatch) { try client.receiveServerFinal(Array("v=AAAA".utf8)) }
        #expect(throws: SCRAMError.proofRejected) { try client.receiveServerFinal(Array("e=invalid-proof".utf8)) }
    }
}
