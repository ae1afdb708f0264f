// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "rolegate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "rolegate", targets: ["rolegate"]),
        .library(name: "RolegateCore", targets: ["RolegateCore"]),
        .library(name: "RolegateProvision", targets: ["RolegateProvision"]),
        .library(name: "RolegateStore", targets: ["RolegateStore"]),
        .library(name: "RolegateTokens", targets: ["RolegateTokens"]),
        .library(name: "PostgresCluster", targets: ["PostgresCluster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk.git", from: "0.12.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-openapi-runtime.git", from: "1.13.4"),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird.git", from: "2.1.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
    ],
    targets: [
        // Pure domain: policy model, YAML loading and validation, durations,
        // identifiers and SQL quoting, credential derivation. No I/O beyond reading files.
        .target(
            name: "RolegateCore",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        // Workload and people identity: identity tokens (JWTs) from the policy's trusted OpenID
        // issuers, checked with jwt-kit against their published keys (cached per issuer).
        .target(
            name: "RolegateIdentity",
            dependencies: ["RolegateCore", "RolegateTokens", .product(name: "JWTKit", package: "jwt-kit")],
            swiftSettings: strict
        ),
        // Opening PostgreSQL connections from policy URLs, and describing their errors.
        .target(
            name: "RolegatePostgres",
            dependencies: [
                "RolegateCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        // Roles as code: catalog inspection, diff to ordered SQL, apply.
        .target(
            name: "RolegateProvision",
            dependencies: [
                "RolegateCore",
                "RolegatePostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // PostgreSQL protocol v3: framing, typed messages, SCRAM-SHA-256 server and client
        // state machines. Pure: no I/O.
        .target(
            name: "PostgresWire",
            dependencies: [
                "RolegateCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Everything Rolegate keeps: tokens, the change feed, schema version. SQLite by
        // default, PostgreSQL for several gateway instances; one contract for both.
        .target(
            name: "RolegateStore",
            dependencies: [
                "RolegateCore",
                "RolegatePostgres",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Token lifecycle (issue, rotate, revoke under the policy's rules) and the
        // TokenVerifier the gateway and HTTP API check every token with.
        .target(
            name: "RolegateTokens",
            dependencies: ["RolegateCore", "RolegateStore"],
            swiftSettings: strict
        ),
        // The audit writer: a bounded queue, group commits into the store's hash chains.
        .target(
            name: "RolegateAudit",
            dependencies: [
                "RolegateCore", "RolegateStore", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The PostgreSQL wire gateway and nothing else: the listener, the client session machine
        // (login, admission, relay), the upstream login and relay machines, upstream pools,
        // revocation and cancel routing, statement tracking for the audit. Its `package` API lends
        // pooled server connections to the HTTP data API and its machines to the fuzz target
        // and benchmarks.
        .target(
            name: "RolegateGateway",
            dependencies: [
                "RolegateCore",
                "PostgresWire",
                "RolegateStore",
                "RolegateTokens",
                "RolegateAudit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // The HTTP API's contract: types and server stubs generated from
        // Sources/RolegateHTTP/openapi.yaml by swift-openapi-generator (scripts/generate-openapi.sh;
        // generated once and committed, so builds need no generator).
        .target(
            name: "RolegateHTTPContract",
            dependencies: [.product(name: "OpenAPIRuntime", package: "swift-openapi-runtime")],
            // The generator writes imports for Swift 6.4's diagnostics; on 6.3 they warn that
            // some go unused. Generated code is not edited by hand, so its warnings are silenced.
            swiftSettings: strict + [.unsafeFlags(["-suppress-warnings"])]
        ),
        // The HTTP API (data, admin, operations) on Hummingbird 2: the data API's fast path and
        // query runner (statements over the gateway's pooled server connections), and the
        // contract's generated routes.
        .target(
            name: "RolegateHTTP",
            dependencies: [
                "RolegateCore", "RolegateStore", "RolegateTokens", "RolegateGateway", "RolegateAudit",
                "RolegateIdentity",
                "RolegateProvision", "PostgresWire", "RolegateHTTPContract",
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            resources: [.embedInCode("openapi.yaml")],
            swiftSettings: strict
        ),
        // A throwaway PostgreSQL cluster (initdb + pg_ctl), shared by the tests and the demo.
        .target(
            name: "PostgresCluster",
            dependencies: [],
            swiftSettings: strict
        ),
        // Helpers shared by the test targets, and the `.ownThreads` trait their suites run on.
        .target(
            name: "RolegateTestSupport",
            dependencies: ["RolegateTokens"],
            swiftSettings: strict
        ),
        // Token verifications per second, for bench/run.py.
        .executableTarget(
            name: "VerifyBench",
            dependencies: ["RolegateCore", "RolegateStore", "RolegateTokens"],
            swiftSettings: strict
        ),
        // Statement audit's cost per statement, for bench/run.py: the gateway's statement
        // tracker and event building, then the store's group commits.
        .executableTarget(
            name: "AuditBench",
            dependencies: [
                "RolegateAudit", "RolegateGateway", "RolegateStore", "RolegateCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The wire fuzz target: the session, relay and upstream login machines and the
        // statement tracker fed arbitrary bytes. libFuzzer under fuzz/run.sh, a corpus replay otherwise.
        .executableTarget(
            name: "WireFuzz",
            dependencies: [
                "RolegateCore", "RolegateGateway", "PostgresWire", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "rolegate",
            dependencies: [
                "RolegateCore",
                "RolegateProvision",
                "RolegateStore",
                "RolegateTokens",
                "RolegateGateway",
                "RolegateAudit",
                "RolegateHTTP",
                "RolegateIdentity",
                "PostgresCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RolegateIdentityTests",
            dependencies: [
                "RolegateTestSupport", "RolegateIdentity", "RolegateCore", .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RolegateCoreTests",
            dependencies: ["RolegateTestSupport", "RolegateCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RolegateHTTPTests",
            dependencies: [
                "RolegateTestSupport",
                "RolegateHTTP", "RolegateGateway", "RolegateCore", "PostgresWire", "RolegateHTTPContract",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RolegateProvisionTests",
            dependencies: ["RolegateTestSupport", "RolegateProvision", "RolegateCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "PostgresWireTests",
            dependencies: [
                "RolegateTestSupport", "PostgresWire", "RolegateCore", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RolegateStoreTests",
            dependencies: [
                "RolegateStore", "RolegateTokens", "RolegateCore", "RolegateAudit", "PostgresCluster",
                "RolegateTestSupport",
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RolegateGatewayTests",
            dependencies: [
                "RolegateGateway", "PostgresWire", "RolegateCore", "RolegateTokens", "PostgresCluster",
                "RolegateTestSupport",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "RolegateCore",
                "RolegateProvision",
                "RolegateStore",
                "RolegateTokens",
                "RolegateTestSupport",
                "RolegateGateway",
                "PostgresCluster",
                "rolegate",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            exclude: ["Clients"],
            swiftSettings: strict
        ),
    ]
)
