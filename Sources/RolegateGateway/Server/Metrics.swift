import NIOConcurrencyHelpers
import Synchronization

/// One counter series, for hot paths: look it up once (e.g. per session), then add with one
/// atomic operation instead of a labelled lookup per event.
public final class Counter: Sendable {
    let value = Atomic<Int>(0)

    public func add(_ amount: Int = 1) {
        value.add(amount, ordering: .relaxed)
    }
}

/// One latency histogram series, for hot paths: look it up once, then observe under its
/// own lock instead of a labelled lookup per event.
public final class Histogram: Sendable {
    struct Values {
        var buckets = Array(repeating: 0, count: Metrics.latencyBuckets.count)
        var count = 0
        var sum = 0.0
    }

    let values = Mutex(Values())

    public func observe(seconds: Double) {
        values.withLock { v in
            for (index, bound) in Metrics.latencyBuckets.enumerated() where seconds <= bound { v.buckets[index] += 1 }
            v.count += 1
            v.sum += seconds
        }
    }
}

/// Counters and histograms for `/metrics`, rendered in Prometheus' text format. Cheap to
/// update from any thread (one lock, no allocation for an existing series).
public final class Metrics: Sendable {
    struct Series: Hashable {
        var name: String
        var labels: [String]  // "key=\"value\"" pairs, sorted
    }

    private struct State {
        var counters: [Series: Double] = [:]
        var atomicCounters: [Series: Counter] = [:]
        var histograms: [Series: Histogram] = [:]
    }

    public static let latencyBuckets: [Double] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private let state = NIOLockedValueBox(State())
    private let help: [String: String]

    public init(help: [String: String] = Metrics.defaultHelp) {
        self.help = help
    }

    static func series(_ name: String, _ labels: [String: String]) -> Series {
        Series(
            name: name,
            labels: labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(escape($0.value))\"" })
    }

    private static func escape(_ value: String) -> String {
        // Label values are almost always plain: check the bytes before building anything.
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == 10 }) else {
            return value
        }
        return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    /// The counter of this series, created on first use.
    public func counter(_ name: String, _ labels: [String: String] = [:]) -> Counter {
        let series = Self.series(name, labels)
        return state.withLockedValue { s in
            if let existing = s.atomicCounters[series] { return existing }
            let counter = Counter()
            s.atomicCounters[series] = counter
            return counter
        }
    }

    /// The histogram of this series, created on first use.
    public func histogram(_ name: String, _ labels: [String: String] = [:]) -> Histogram {
        let series = Self.series(name, labels)
        return state.withLockedValue { s in
            if let existing = s.histograms[series] { return existing }
            let histogram = Histogram()
            s.histograms[series] = histogram
            return histogram
        }
    }

    public func increment(_ name: String, _ labels: [String: String] = [:], by amount: Double = 1) {
        let series = Self.series(name, labels)
        state.withLockedValue { $0.counters[series, default: 0] += amount }
    }

    public func observe(_ name: String, _ labels: [String: String] = [:], seconds: Double) {
        histogram(name, labels).observe(seconds: seconds)
    }

    /// The text exposition: counters and histograms kept here, then `gauges` (name, labels, value).
    public func render(gauges: [(String, [String: String], Double)]) -> String {
        var snapshot = state.withLockedValue { $0 }
        for (series, counter) in snapshot.atomicCounters {
            snapshot.counters[series, default: 0] += Double(counter.value.load(ordering: .relaxed))
        }
        var out = ""
        var described: Set<String> = []
        func header(_ name: String, _ type: String) {
            guard described.insert(name).inserted else { return }
            out += "# HELP \(name) \(help[name] ?? name)\n# TYPE \(name) \(type)\n"
        }
        func line(_ name: String, _ labels: [String], _ value: Double) {
            let text = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
            out += labels.isEmpty ? "\(name) \(text)\n" : "\(name){\(labels.joined(separator: ","))} \(text)\n"
        }
        for (series, value) in snapshot.counters.sorted(by: { "\($0.key)" < "\($1.key)" }) {
            header(series.name, "counter")
            line(series.name, series.labels, value)
        }
        for (series, histogram) in snapshot.histograms.sorted(by: { "\($0.key)" < "\($1.key)" }) {
            let values = histogram.values.withLock { $0 }
            header(series.name, "histogram")
            for (index, bound) in Self.latencyBuckets.enumerated() {
                line(series.name + "_bucket", series.labels + ["le=\"\(bound)\""], Double(values.buckets[index]))
            }
            line(series.name + "_bucket", series.labels + ["le=\"+Inf\""], Double(values.count))
            line(series.name + "_sum", series.labels, values.sum)
            line(series.name + "_count", series.labels, Double(values.count))
        }
        for (name, labels, value) in gauges {
            header(name, "gauge")
            line(name, Self.series(name, labels).labels, value)
        }
        return out
    }

    public static let defaultHelp: [String: String] = [
        "rolegate_connections_total": "Client connections accepted by the wire gateway.",
        "rolegate_connections_refused_total": "Client connections refused before authentication, by reason.",
        "rolegate_auth_failures_total": "Refused logins on the wire and HTTP, by SQLSTATE or HTTP code.",
        "rolegate_sessions_total": "Wire sessions started, by service.",
        "rolegate_sessions_ended_total": "Wire sessions ended by the gateway, by reason.",
        "rolegate_statements_total": "Statements run, by service and channel (wire needs statement audit on).",
        "rolegate_statement_errors_total": "Statements that failed, by service and channel.",
        "rolegate_pool_waits_total": "Sessions that waited for a server connection at their role's cap.",
        "rolegate_http_requests_total": "HTTP requests, by route and status.",
        "rolegate_http_request_duration_seconds": "HTTP request latency, by route.",
        "rolegate_client_connections": "Open client connections.",
        "rolegate_sessions": "Live wire sessions, by service.",
        "rolegate_server_connections": "Open server connections, by role (in use and idle).",
        "rolegate_pool_waiting_sessions": "Sessions waiting now for a server connection at their role's cap.",
        "rolegate_audit_queue_depth": "Audit events waiting to be written.",
        "rolegate_audit_events_dropped_total": "Audit events refused or dropped because the queue was full.",
        "rolegate_audit_events_written_total": "Audit events written to the store.",
    ]
}
