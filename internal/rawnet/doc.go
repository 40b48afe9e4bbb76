// Package rawnet reads and writes TCP connections with raw system calls.
//
// A Go program's ordinary system calls go through the runtime's
// bookkeeping, which also wakes its monitor thread (sysmon) when that
// sleeps; the monitor then polls every 20 µs for at least a millisecond. A
// proxy does a few small reads and writes per statement and idles in
// between, so the monitor never rested: it took a quarter of a dual-write
// proxy's CPU. Reads and writes of a non-blocking socket never block, so
// they need none of that bookkeeping. Conn does them as raw system calls
// and waits in Go's netpoller, as net.Conn does, only when the socket
// would block, so deadlines and Close behave as before, and its errors
// name the operation ("read", "write") as net.Conn's do.
//
// FDConn is the same over a bare descriptor: what a program that hands
// sockets to a thread of its own (the relay loop in wire) gets back,
// without the dozen system calls net.FileConn makes to rebuild a
// connection.
//
// It owns nothing else: no protocol, no buffering. On systems other than
// Linux, Wrap returns the connection unchanged.
package rawnet
