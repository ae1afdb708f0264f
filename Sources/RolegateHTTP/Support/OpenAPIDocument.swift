/// `openapi.yaml` (beside this target's sources), embedded at build time and served at `/openapi.yaml`.
enum OpenAPIDocument {
    static let yaml = String(decoding: PackageResources.openapi_yaml, as: UTF8.self)
}
