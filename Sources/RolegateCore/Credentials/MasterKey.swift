import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The secret from which Rolegate derives each managed role's login credential.
///
/// Role credentials are never stored anywhere: the credential of role `r` is
/// `HMAC-SHA256(masterKey, "rolegate/role-credential/v1" || 0 || r)`, and PostgreSQL is
/// given only its SCRAM verifier. Whoever holds the key file can log in as every
/// managed role, so it lives in a 0600 file inside a 0700 folder and Rolegate refuses
/// to read it when others could.
public struct MasterKey: Sendable {
    public static let byteCount = 32

    private let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount)
        self.bytes = bytes
    }

    public static func generate() -> MasterKey {
        MasterKey(bytes: SecureRandom.bytes(byteCount))
    }

    /// A public, stable name for this key (16 hex digits), recorded in each managed role's
    /// marker so that `plan` sees which roles carry a credential from another key.
    public var fingerprint: String {
        hex(Array(derive("rolegate/key-fingerprint/v1").prefix(8)))
    }

    /// The login credential of a managed role: 43 characters of base64url, 256 bits.
    public func rolePassword(role: String) -> String {
        Data(derive("rolegate/role-credential/v1", role)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The SCRAM-SHA-256 verifier PostgreSQL is given for a role's credential. The salt is
    /// derived too, so the same key always yields the same verifier.
    public func roleVerifier(role: String) -> SCRAMSHA256.Verifier {
        let salt = Array(derive("rolegate/role-salt/v1", role).prefix(16))
        return SCRAMSHA256.verifier(password: rolePassword(role: role), salt: salt)
    }

    /// The key instances sharing this master key sign their requests to each other with
    /// (``PeerRequestSignature``): never an admin token forwarded from a caller.
    public var peerRequestKey: [UInt8] { derive("rolegate/peer-requests/v1") }

    /// The key the console signs its session cookies and form tokens with: every instance sharing
    /// the master key accepts a session another one started.
    public var consoleKey: [UInt8] { derive("rolegate/console/v1") }

    /// The key the console seals a just-issued token with for the one page that shows it.
    public var consoleSealKey: [UInt8] { derive("rolegate/console/seal/v1") }

    private func derive(_ label: String, _ context: String = "") -> [UInt8] {
        SCRAMSHA256.hmac(key: bytes, message: Array(label.utf8) + [0] + Array(context.utf8))
    }

    var fileText: String { hex(bytes) + "\n" }

    private func hex(_ data: [UInt8]) -> String {
        data.hexString
    }
}

/// Reading and creating the master key file.
public enum MasterKeyFile {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// `master_key_file:` (relative to the policy file), else `ROLEGATE_MASTER_KEY_FILE`,
    /// else `.rolegate/master.key` beside the policy file.
    public static func path(policy: Policy, environment: [String: String]) -> String {
        let policyDirectory = (policy.sourcePath as NSString).deletingLastPathComponent
        func resolve(_ p: String) -> String {
            p.hasPrefix("/") ? p : (policyDirectory.isEmpty ? p : "\(policyDirectory)/\(p)")
        }
        if let configured = policy.masterKeyFile { return resolve(configured) }
        if let fromEnv = environment["ROLEGATE_MASTER_KEY_FILE"], !fromEnv.isEmpty { return fromEnv }
        return resolve(".rolegate/master.key")
    }

    public static func exists(at path: String) -> Bool {
        FileManager.default.fileExists(atPath: path)
    }

    /// Reads the key; refuses a file that group or others can read or write.
    public static func load(from path: String) throws(Failure) -> MasterKey {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw Failure(description: "master key file \(path) cannot be read: \(String(cString: strerror(errno)))")
        }
        if info.st_mode & 0o077 != 0 {
            throw Failure(
                description:
                    "master key file \(path) is accessible to group or others (mode \(String(info.st_mode & 0o777, radix: 8))); run: chmod 600 \(path)"
            )
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Failure(description: "master key file \(path) cannot be read")
        }
        let hexText = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard hexText.count == MasterKey.byteCount * 2, let bytes = decodeHex(hexText) else {
            throw Failure(
                description:
                    "master key file \(path) is not a Rolegate key (expected \(MasterKey.byteCount * 2) hex digits)")
        }
        return MasterKey(bytes: bytes)
    }

    /// Creates a new key file (0600, its folder 0700). Never overwrites an existing file.
    @discardableResult
    public static func create(at path: String) throws(Failure) -> MasterKey {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw Failure(
                    description: "cannot create folder \(directory) for the master key: \(error.localizedDescription)")
            }
        }
        let key = MasterKey.generate()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw Failure(description: "cannot create master key file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let text = Array(key.fileText.utf8)
        let written = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == text.count, fsync(fd) == 0 else {
            unlink(path)
            throw Failure(description: "cannot write master key file \(path): \(String(cString: strerror(errno)))")
        }
        return key
    }

    static func decodeHex(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count / 2)
        var iterator = text.utf8.makeIterator()
        while let high = iterator.next() {
            guard let low = iterator.next(), let h = nibble(high), let l = nibble(low) else { return nil }
            bytes.append(h << 4 | l)
        }
        return bytes
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
