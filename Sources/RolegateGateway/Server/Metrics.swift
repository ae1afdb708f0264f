import CoreMetrics
import NIOConcurrencyHelpers
public import Prometheus

/// One counter series, for hot paths: look it up once (e.g. per session), then add with one
/// atomic operation (swift-metrics' counter, backed by swift-prometheus) instead of a labelled
/// lookup per event.
public final class Counter: Sendable {
    let handler: CoreMetrics.Counter

    init(_ handler: CoreMetrics.Counter) { self.handler = handler }

    public func add(_ amount: Int = 1) {
        handler.increment(by: amount)
    }
}

/// One latency histogram series (a swift-metrics recorder that aggregates, which the Prometheus
/// backend keeps as a histogram with ``Metrics/latencyBuckets``), for hot paths: look it up once.
public final class Histogram: Sendable {
    let handler: CoreMetrics.Recorder

    init(_ handler: CoreMetrics.Recorder) { self.handler = handler }

    public func observe(seconds: Double) {
        handler.record(seconds)
    }
}

/// Counters, histograms and gauges for `/metrics`, through swift-metrics with the
/// swift-prometheus backend: one registry per gateway (not the process-wide bootstrap, so that
/// several gateways in one process, as in tests, count apart). Series handles are kept once made,
/// so a hot path pays one lock and no allocation for an existing series.
public final class Metrics: Sendable {
    struct Series: Hashable {
        var name: String
        var labels: [String: String]
    }

    private struct State {
        var counters: [Series: Counter] = [:]
        var histograms: [Series: Histogram] = [:]
        /// The gauges the last scrape set, to drop those it no longer reports.
        var gauges: [Series: Prometheus.Gauge] = [:]
    }

    public static let latencyBuckets: [Double] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// The registry `/metrics` renders (open to other libraries' metrics through ``factory``).
    public let registry = PrometheusCollectorRegistry()
    /// A swift-metrics factory writing into ``registry``.
    public let factory: PrometheusMetricsFactory
    private let state = NIOLockedValueBox(State())

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultValueHistogramBuckets = Self.latencyBuckets
        self.factory = factory
    }

    /// Label pairs in a stable order (by name), as the text format shows them.
    private static func dimensions(_ labels: [String: String]) -> [(String, String)] {
        labels.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The counter of this series, created on first use.
    public func counter(_ name: String, _ labels: [String: String] = [:]) -> Counter {
        let series = Series(name: name, labels: labels)
        return state.withLockedValue { s in
            if let existing = s.counters[series] { return existing }
            let counter = Counter(
                CoreMetrics.Counter(label: name, dimensions: Self.dimensions(labels), factory: factory))
            s.counters[series] = counter
            return counter
        }
    }

    /// The histogram of this series, created on first use.
    public func histogram(_ name: String, _ labels: [String: String] = [:]) -> Histogram {
        let series = Series(name: name, labels: labels)
        return state.withLockedValue { s in
            if let existing = s.histograms[series] { return existing }
            let histogram = Histogram(
                CoreMetrics.Recorder(
                    label: name, dimensions: Self.dimensions(labels), aggregate: true, factory: factory))
            s.histograms[series] = histogram
            return histogram
        }
    }

    public func increment(_ name: String, _ labels: [String: String] = [:], by amount: Int = 1) {
        counter(name, labels).add(amount)
    }

    public func observe(_ name: String, _ labels: [String: String] = [:], seconds: Double) {
        histogram(name, labels).observe(seconds: seconds)
    }

    /// The text exposition, after setting `gauges` (name, labels, value) for this scrape; a gauge
    /// series the previous scrape reported and this one does not is dropped.
    public func render(gauges: [(String, [String: String], Double)]) -> String {
        state.withLockedValue { s in
            var current: [Series: Prometheus.Gauge] = [:]
            for (name, labels, value) in gauges {
                let series = Series(name: name, labels: labels)
                let gauge =
                    s.gauges[series]
                    ?? registry.makeGauge(
                        descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: Self.help(name)),
                        labels: Self.dimensions(labels))
                gauge.set(value)
                current[series] = gauge
            }
            for (series, gauge) in s.gauges where current[series] == nil { registry.unregisterGauge(gauge) }
            s.gauges = current
        }
        return registry.emitToString()
    }

    static func help(_ name: String) -> String { defaultHelp[name] ?? name }

    public static let defaultHelp: [String: String] = [
        "rolegate_client_connections": "Open client connections.",
        "rolegate_sessions": "Live wire sessions, by service.",
        "rolegate_server_connections": "Open server connections, by role (in use and idle).",
        "rolegate_pool_waiting_sessions": "Sessions waiting now for a server connection at their role's cap.",
        "rolegate_audit_queue_depth": "Audit events waiting to be written.",
        "rolegate_audit_events_dropped_total": "Audit events refused or dropped because the queue was full.",
        "rolegate_audit_events_written_total": "Audit events written to the store.",
        "rolegate_instance_info": "This instance's id and cancel tag.",
    ]
}
