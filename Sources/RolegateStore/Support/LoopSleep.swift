public import NIOCore
import NIOPosix

/// Timed waits for the long-running loops (the audit writer's group commit, the token
/// verifier's poll, the session sweeper, peer heartbeats) on an event loop's timer.
///
/// `Task.sleep` arms a libdispatch timer even when NIO's event loops run the tasks (as in
/// `serve`): each wake-up goes from the loop through libdispatch's timer thread and a worker
/// thread back to a loop. Under `pgbench -C` that was ~6% of the gateway's CPU (perf); an
/// event loop's timer is part of the `epoll_wait` the loop makes anyway.
///
/// Here, in the lowest target with NIO that the audit, token and gateway targets all use.
public enum LoopSleep {
    /// Suspends the calling task for `duration` on `loop`'s timer (by default one of NIO's
    /// singleton loops, the gateway's own in `serve`). Returns early, without throwing, when
    /// the task is cancelled: callers check `Task.isCancelled` as they did after `try? await Task.sleep`.
    public static func sleep(for duration: Duration, on loop: (any EventLoop)? = nil) async {
        let loop = loop ?? MultiThreadedEventLoopGroup.singleton.any()
        let scheduled = loop.scheduleTask(in: TimeAmount(duration)) {}
        await withTaskCancellationHandler {
            _ = try? await scheduled.futureResult.get()
        } onCancel: {
            scheduled.cancel()
        }
    }
}
