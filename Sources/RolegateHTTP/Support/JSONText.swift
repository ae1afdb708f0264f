import Foundation

/// Renders `value` as a JSON document.
func jsonText(_ value: Any) -> String {
    let data =
        (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])) ?? Data()
    return String(decoding: data, as: UTF8.self)
}
