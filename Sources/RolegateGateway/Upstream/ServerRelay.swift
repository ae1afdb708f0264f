package import NIOCore
package import PostgresWire

/// The relay phase of a server connection, server to client: which of the server's bytes go to
/// the session now and what they say about the connection. Pure: the upstream handler gives it
/// what the server sent and performs the ``Step`` it returns.
///
/// What it reads on the way (without copying a message): each ReadyForQuery's transaction
/// status (and it pays one answer off the ``RequestLedger``), a FATAL or PANIC error (the server
/// ends the session itself: nothing of the gateway's is added after it), and whether an answer
/// ends a statement the audit follows. A large message that cannot carry any of those (a huge
/// DataRow, CopyData) passes through as its bytes arrive.
package struct ServerRelay {
    /// What to do with the front of the server's buffer, in order: ``continued`` bytes of a large
    /// message passing through, then ``complete`` whole messages, then the first ``startedBytes``
    /// of a large message that starts here. Whatever follows stays buffered.
    package struct Step: Equatable {
        package var continued = 0
        package var complete = 0
        package var startedBytes = 0
        /// The last ReadyForQuery's transaction status among the complete messages.
        package var status: UInt8?
        /// A FATAL or PANIC error among them.
        package var fatal: ErrorFields?
        /// One of them ends a statement (only looked for when `observing`).
        package var endsStatements = false
    }

    package init() {}

    package private(set) var streaming = WireStreaming()

    /// In the middle of a large message: what follows it cannot be framed by anyone else.
    package var insideMessage: Bool { streaming.remaining > 0 }

    /// Decides what happens to `buffer` (the server's unprocessed bytes). `observing`: the
    /// session follows statements for the audit. Throws when the server's framing is broken.
    package mutating func serverBytes(
        _ buffer: ByteBuffer, observing: Bool, ledger: inout RequestLedger
    ) throws(FramingError) -> Step {
        var step = Step()
        var rest = buffer
        if streaming.remaining > 0 {
            step.continued = streaming.take(rest.readableBytes)
            rest.moveReaderIndex(forwardBy: step.continued)
            if rest.readableBytes == 0 { return step }
        }
        step.complete = try WireFraming.scanMessages(rest) { type, body, length in
            switch type {
            case UInt8(ascii: "Z") where length == 1:
                step.status = rest.getInteger(at: body, as: UInt8.self)
                ledger.ready()
            case UInt8(ascii: "E"):
                if let fields = ErrorFields(body: rest.getSlice(at: body, length: length)!),
                    fields.severity == "FATAL" || fields.severity == "PANIC"
                {
                    step.fatal = fields
                }
            default: break
            }
            if observing, !step.endsStatements { step.endsStatements = StatementTracker.endsStatement(type) }
            return true
        }
        rest.moveReaderIndex(forwardBy: step.complete)
        // What ends a statement, a transaction status or an error is small and read whole.
        if let head = WireStreaming.head(of: rest), !StatementTracker.endsStatement(head.type),
            head.type != UInt8(ascii: "E")
        {
            streaming.begin(messageBytes: head.totalLength)
            step.startedBytes = streaming.take(rest.readableBytes)
        }
        return step
    }
}
