import Foundation
import RolegateCore

/// PostgreSQL's text form of a value → the JSON value the data API returns: JSON types where
/// they are lossless, strings otherwise.
enum ResultValues {
    static let names: [UInt32: String] = [
        16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 23: "int4", 25: "text", 26: "oid",
        114: "json", 142: "xml", 700: "float4", 701: "float8", 790: "money", 1042: "bpchar", 1043: "varchar",
        1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz", 1186: "interval", 1266: "timetz",
        1560: "bit", 1562: "varbit", 1700: "numeric", 2950: "uuid", 3802: "jsonb", 869: "inet", 650: "cidr",
        829: "macaddr", 1000: "_bool", 1005: "_int2", 1007: "_int4", 1016: "_int8", 1009: "_text", 1015: "_varchar",
        1021: "_float4", 1022: "_float8", 1231: "_numeric", 2951: "_uuid", 3807: "_jsonb", 199: "_json",
        1115: "_timestamp", 1185: "_timestamptz", 1182: "_date",
    ]

    static func typeName(_ oid: UInt32) -> String { names[oid] ?? "oid:\(oid)" }

    /// Writes one value: JSON numbers and booleans where they are lossless (integers beyond
    /// 2^53 stay strings), `json`/`jsonb` embedded as PostgreSQL wrote them (it validated them;
    /// numbers keep every digit), bytea as base64, timestamps as ISO 8601, the rest as text.
    static func write(_ text: String?, type oid: UInt32, to out: inout JSONWriter) {
        guard let text else { return out.null() }
        switch oid {
        case 16:
            out.bool(text == "t")
        case 21, 23, 26:
            if let value = Int64(text) { out.number(value) } else { out.string(text) }
        case 20:
            if let value = Int64(text), abs(value) <= 9_007_199_254_740_992 {
                out.number(value)
            } else {
                out.string(text)
            }
        case 700, 701:
            // NaN and Infinity have no JSON number.
            if let value = Double(text), value.isFinite { out.number(value) } else { out.string(text) }
        case 114, 3802:
            out.rawJSON(text)
        case 17:
            guard text.hasPrefix("\\x"), let bytes = Data(hex: text.dropFirst(2)) else { return out.string(text) }
            out.string(bytes.base64EncodedString())
        case 1114, 1184:
            // The gateway asks for DateStyle ISO and TimeZone UTC: "2026-11-29 03:10:00.5+00".
            var iso = text.replacingOccurrences(of: " ", with: "T")
            if oid == 1184, let sign = iso.lastIndex(where: { $0 == "+" || $0 == "-" }),
                iso.distance(from: sign, to: iso.endIndex) == 3
            {
                iso += ":00"
            }
            out.string(iso)
        default:
            out.string(text)
        }
    }
}

extension Data {
    init?(hex: Substring) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.count / 2)
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) ?? hex.endIndex
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes)
    }
}
