/// What a client has asked of a server connection that the server has not yet finished: one
/// ReadyForQuery is owed for every Query, Sync and FunctionCall sent, and an extended-protocol
/// batch (Parse, Bind, Describe, Execute, Close, Flush) is open until its Sync. A connection is
/// idle, and may serve another client after a reset, only when nothing is owed and no batch is
/// open. Pure; the relay tells it what passes each way.
///
/// During COPY FROM STDIN the server ignores a Sync (its ReadyForQuery never comes): the ledger
/// then never reads idle again, so such a connection is closed rather than reused, the safe way
/// to be wrong.
public struct RequestLedger: Sendable, Equatable {
    /// ReadyForQuery messages the server owes.
    public private(set) var owed = 0
    /// Extended-protocol messages were sent since the last Sync.
    public private(set) var batchOpen = false

    public init() {}

    /// Nothing owed and no batch open.
    public var idle: Bool { owed == 0 && !batchOpen }

    /// A message of this type went to the server.
    public mutating func sent(_ type: UInt8) {
        switch type {
        case UInt8(ascii: "Q"), UInt8(ascii: "F"):
            owed += 1
        case UInt8(ascii: "S"):
            owed += 1
            batchOpen = false
        case UInt8(ascii: "P"), UInt8(ascii: "B"), UInt8(ascii: "D"), UInt8(ascii: "E"), UInt8(ascii: "C"),
            UInt8(ascii: "H"):
            batchOpen = true
        default:
            break  // CopyData, CopyDone, CopyFail, Terminate: no answer of their own
        }
    }

    /// `count` requests the caller composed itself went out whole (each answered by one ReadyForQuery).
    public mutating func sentRequests(_ count: Int) {
        owed += count
    }

    /// The server sent ReadyForQuery.
    public mutating func ready() {
        owed = max(0, owed - 1)
    }
}
