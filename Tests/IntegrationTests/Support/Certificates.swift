import PostgresCluster

/// A self-signed certificate for `localhost` and 127.0.0.1, valid a day: `directory/name.crt`
/// and its key `directory/name.key` (paths returned in that order).
@discardableResult
func selfSignedCertificate(in directory: String, name: String) throws -> (certificate: String, key: String) {
    let (certificate, key) = ("\(directory)/\(name).crt", "\(directory)/\(name).key")
    try Subprocess.check(
        "openssl",
        [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", certificate,
        ])
    return (certificate, key)
}
