import Foundation
import RolegateTestSupport
import Testing

@testable import RolegateCore

@Suite(.ownThreads) struct CredentialTests {
    /// RFC 7677, section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    /// The server signature there is computed from ServerKey; check both derived keys against it.
    @Test func scramMatchesRFC7677() throws {
        let salt = Array(Data(base64Encoded: "W22ZaJ0SNY7soEsUEjb6gQ==")!)
        let verifier = SCRAMSHA256.verifier(password: "pencil", salt: salt, iterations: 4096)
        let authMessage =
            "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        let serverSignature = SCRAMSHA256.hmac(key: verifier.serverKey, message: Array(authMessage.utf8))
        #expect(Data(serverSignature).base64EncodedString() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        // ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage); recover ClientKey and hash it.
        let proof = Array(Data(base64Encoded: "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")!)
        let signature = SCRAMSHA256.hmac(key: verifier.storedKey, message: Array(authMessage.utf8))
        let clientKey = zip(proof, signature).map { $0 ^ $1 }
        #expect(Data(SHA256Digest(clientKey)).base64EncodedString() == Data(verifier.storedKey).base64EncodedString())
        #expect(verifier.postgresText.hasPrefix("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"))
    }

    @Test func roleCredentialsAreStablePerKeyAndDistinctPerRole() {
        let key = MasterKey(bytes: Array(repeating: 7, count: 32))
        let other = MasterKey(bytes: Array(repeating: 8, count: 32))
        #expect(key.rolePassword(role: "a") == key.rolePassword(role: "a"))
        #expect(key.rolePassword(role: "a") != key.rolePassword(role: "b"))
        #expect(key.rolePassword(role: "a") != other.rolePassword(role: "a"))
        #expect(key.rolePassword(role: "a").count == 43)
        #expect(key.roleVerifier(role: "a") == key.roleVerifier(role: "a"))
        #expect(key.fingerprint.count == 16)
        #expect(key.fingerprint != other.fingerprint)
        #expect(!key.roleVerifier(role: "a").postgresText.contains(key.rolePassword(role: "a")))
    }

    @Test func keyFileIsPrivateAndRefusedWhenNot() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rg-key-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/sub/master.key"
        let created = try MasterKeyFile.create(at: path)
        let loaded = try MasterKeyFile.load(from: path)
        #expect(created.fingerprint == loaded.fingerprint)
        let fileMode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        let dirMode = try FileManager.default.attributesOfItem(atPath: "\(dir)/sub")[.posixPermissions] as? Int
        #expect(fileMode == 0o600)
        #expect(dirMode == 0o700)
        #expect(throws: MasterKeyFile.Failure.self) { try MasterKeyFile.create(at: path) }  // never overwrites
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        #expect {
            try MasterKeyFile.load(from: path)
        } throws: { error in
            "\(error)".contains("chmod 600")
        }
    }
}

/// SHA-256 of bytes, via the same primitive the SCRAM code uses.
func SHA256Digest(_ bytes: [UInt8]) -> [UInt8] {
    // H(ClientKey) = StoredKey; computed with HMAC-free SHA-256 through Crypto in RolegateCore.
    SCRAMSHA256.sha256(bytes)
}
