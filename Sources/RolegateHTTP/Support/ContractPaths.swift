import Yams

/// The paths and methods `openapi.yaml` lists, read from the document itself: a request for a
/// listed path with a method it does not list is 405 with an `Allow` header (not 404), as the
/// contract's own tester expects.
enum ContractPaths {
    /// Path templates (`/admin/v1/tokens/{id}/revoke`) split into segments, with their methods.
    private static let table: [(segments: [Substring], methods: Set<String>)] = {
        guard let document = try? Yams.load(yaml: OpenAPIDocument.yaml) as? [String: Any],
            let paths = document["paths"] as? [String: Any]
        else { preconditionFailure("openapi.yaml has no paths") }
        let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
        return paths.map { path, item in
            let listed = ((item as? [String: Any])?.keys).map {
                Set($0.filter(methods.contains).map { $0.uppercased() })
            }
            return (path.split(separator: "/", omittingEmptySubsequences: false), listed ?? [])
        }
    }()

    /// The fields of each operation's JSON request body, in the document's order (for messages
    /// that say what a body may hold).
    static let bodyFields: [String: [String]] = {
        guard let root = try? Yams.compose(yaml: OpenAPIDocument.yaml), let paths = root["paths"]?.mapping,
            let schemas = root["components"]?["schemas"]
        else { return [:] }
        var fields: [String: [String]] = [:]
        for (_, item) in paths {
            for (_, operation) in item.mapping ?? [:] {
                guard let id = operation["operationId"]?.string,
                    var schema = operation["requestBody"]?["content"]?["application/json"]?["schema"]
                else { continue }
                if let reference = schema["$ref"]?.string, let name = reference.split(separator: "/").last {
                    schema = schemas[String(name)] ?? schema
                }
                fields[id] = schema["properties"]?.mapping?.keys.compactMap(\.string) ?? []
            }
        }
        return fields
    }()

    /// The methods the document lists for `path`, or nil when it lists no such path.
    static func methods(of path: String) -> Set<String>? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for entry in table where entry.segments.count == segments.count {
            let matches = zip(entry.segments, segments).allSatisfy { template, segment in
                template.hasPrefix("{") ? !segment.isEmpty : template == segment
            }
            if matches { return entry.methods }
        }
        return nil
    }
}
