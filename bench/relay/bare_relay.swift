// A bare byte relay for the benchmark's yardstick: one thread, level-triggered epoll, one
// upstream connection per client opened at accept, every read written straight to the other
// side. No framing, no authentication (the client logs in to PostgreSQL through it), no pool.
// What relaying costs with nothing else: bench/run.py compares Rolegate and pgbouncer with it.
//
// Usage: bare-relay <listen port> <upstream port>   (both on 127.0.0.1)
import Glibc

func loopbackAddress(_ port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
}

func withSocketAddress<T>(_ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var address = loopbackAddress(port)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

func fail(_ what: String) -> Never {
    fputs("bare-relay: \(what): \(String(cString: strerror(errno)))\n", stderr)
    exit(1)
}

func setOption(_ fd: Int32, _ level: Int32, _ name: Int32) {
    var one: Int32 = 1
    _ = setsockopt(fd, level, name, &one, socklen_t(MemoryLayout<Int32>.size))
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let listenPort = UInt16(arguments[1]), let upstreamPort = UInt16(arguments[2]) else {
    fputs("usage: bare-relay <listen port> <upstream port>\n", stderr)
    exit(2)
}

// A peer that went away is a failed write (EPIPE) that closes the pair, not a signal that ends the relay.
signal(SIGPIPE, SIG_IGN)
let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
setOption(listener, SOL_SOCKET, SO_REUSEADDR)
guard withSocketAddress(listenPort, { bind(listener, $0, $1) }) == 0 else { fail("bind") }
guard listen(listener, 1024) == 0 else { fail("listen") }
_ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK)
let poller = epoll_create1(0)

func watch(_ fd: Int32) {
    var event = epoll_event()
    event.events = EPOLLIN.rawValue
    event.data.fd = fd
    guard epoll_ctl(poller, EPOLL_CTL_ADD, fd, &event) == 0 else { fail("epoll_ctl") }
}

/// The other end of each relayed socket, by descriptor; -1 when none.
var peer = [Int32](repeating: -1, count: 1 << 16)
func closePair(_ fd: Int32) {
    let other = peer[Int(fd)]
    close(fd)
    peer[Int(fd)] = -1
    if other >= 0 {
        close(other)
        peer[Int(other)] = -1
    }
}

func acceptClients() {
    while true {
        let client = accept(listener, nil, nil)
        if client < 0 { return }
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard server >= 0, Int(max(client, server)) < peer.count,
            withSocketAddress(upstreamPort, { connect(server, $0, $1) }) == 0
        else {
            close(client)
            if server >= 0 { close(server) }
            continue
        }
        for fd in [client, server] {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY)
        }
        peer[Int(client)] = server
        peer[Int(server)] = client
        watch(client)
        watch(server)
    }
}

/// Writes all of `count` bytes, waiting for room when the other side is slow.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Bool {
    var sent = 0
    while sent < count {
        let written = write(fd, bytes + sent, count - sent)
        if written > 0 {
            sent += written
        } else if written < 0, errno == EAGAIN || errno == EINTR {
            var waiting = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&waiting, 1, 1000)
        } else {
            return false
        }
    }
    return true
}

let bufferSize = 64 * 1024
let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 16)
let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: 64)
watch(listener)
print("bare-relay: 127.0.0.1:\(listenPort) -> 127.0.0.1:\(upstreamPort)")
fflush(stdout)
while true {
    let ready = epoll_wait(poller, events, 64, -1)
    if ready < 0 {
        if errno == EINTR { continue }
        fail("epoll_wait")
    }
    for index in 0..<Int(ready) {
        let fd = events[index].data.fd
        if fd == listener {
            acceptClients()
            continue
        }
        let other = peer[Int(fd)]
        if other < 0 { continue }
        let count = read(fd, buffer, bufferSize)
        if count > 0 {
            if !writeAll(other, buffer, count) { closePair(fd) }
        } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
            closePair(fd)
        }
    }
}
