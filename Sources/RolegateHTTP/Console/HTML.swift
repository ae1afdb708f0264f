import RolegateCore

/// Markup for the console's pages. Interpolating a `String` escapes it, interpolating `HTML`
/// inserts it as it is, and a literal is the page's own markup: so a value from outside (a
/// name, a note, a reason, SQL) cannot become markup unless someone wraps it in
/// ``init(trusted:)`` on purpose. What a template language's `{{value}}` gives, checked by the
/// compiler (a misspelt field does not render as nothing).
struct HTML: Sendable, Equatable, ExpressibleByStringInterpolation, CustomStringConvertible {
    private(set) var text: String

    /// Markup this code made itself (never text from outside).
    init(trusted text: String) {
        self.text = text
    }

    init(stringLiteral value: String) {
        text = value
    }

    init(stringInterpolation: StringInterpolation) {
        text = stringInterpolation.text
    }

    var description: String { text }

    struct StringInterpolation: StringInterpolationProtocol {
        var text = ""

        init(literalCapacity: Int, interpolationCount: Int) {
            text.reserveCapacity(literalCapacity + interpolationCount * 16)
        }

        mutating func appendLiteral(_ literal: String) {
            text += literal
        }

        /// Text: escaped.
        mutating func appendInterpolation(_ value: String) {
            text += HTMLText.escape(value)
        }

        /// Markup: as it is.
        mutating func appendInterpolation(_ value: HTML) {
            text += value.text
        }

        mutating func appendInterpolation(_ value: Int) {
            text += String(value)
        }

        mutating func appendInterpolation(_ value: Int64) {
            text += String(value)
        }
    }

    static func + (a: HTML, b: HTML) -> HTML {
        HTML(trusted: a.text + b.text)
    }

    static func += (a: inout HTML, b: HTML) {
        a.text += b.text
    }

    var isEmpty: Bool { text.isEmpty }
}

extension Sequence where Element == HTML {
    func joined(separator: HTML = "") -> HTML {
        HTML(trusted: map(\.text).joined(separator: separator.text))
    }
}
