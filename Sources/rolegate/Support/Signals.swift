import Dispatch
import Foundation

/// Waits for SIGINT or SIGTERM (or, with `parentExit`, for the parent process to go away:
/// `rolegate demo` runs `serve` as a child that must not outlive it).
func waitForSignal(parentExit: Bool = false) async {
    let parent = getppid()
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let queue = DispatchQueue(label: "rolegate.signals")
        let once = OnceFlag()
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                if once.claim() { continuation.resume() }
            }
            source.resume()
            sources.append(source)
        }
        if parentExit {
            let timer = DispatchSource.makeTimerSource(queue: queue)
            timer.schedule(deadline: .now() + .milliseconds(500), repeating: .milliseconds(500))
            timer.setEventHandler {
                if getppid() != parent, once.claim() { continuation.resume() }
            }
            timer.resume()
            TimerSources.keep(timer)
        }
        SignalSources.keep(sources)
    }
}

/// Keeps the signal sources alive while the process waits.
enum SignalSources {
    nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []
    static func keep(_ new: [any DispatchSourceSignal]) { sources = new }
}

enum TimerSources {
    nonisolated(unsafe) static var timer: (any DispatchSourceTimer)?
    static func keep(_ new: any DispatchSourceTimer) { timer = new }
}

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false
    func claim() -> Bool {
        lock.withLock {
            defer { claimed = true }
            return !claimed
        }
    }
}
