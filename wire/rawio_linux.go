//go:build linux

package wire

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a TCP connection with raw system calls and parks
// in Go's netpoller only when the socket would block, as net.Conn does.
//
// Why: the runtime's bookkeeping around an ordinary system call wakes a
// sleeping sysmon, which then polls every 20 µs for at least a millisecond.
// A proxy session makes a few system calls per statement and idles in
// between, so sysmon never rested: a quarter of a dual-write proxy's CPU
// went to its wake-ups. Reads and writes on a non-blocking socket never
// block, so they need none of it. Deadlines and Close still work: the
// waits are the connection's own.
type rawIO struct {
	c  *net.TCPConn
	rc syscall.RawConn
}

// fastIO is what a session's buffered reader and writer use for c.
func fastIO(c net.Conn) io.ReadWriter {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawIO{c: tc, rc: rc}
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno error
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = rawRead(int(fd), p)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err // deadline or closed, as net.Conn reports them
	case errno != nil:
		return 0, r.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) Write(p []byte) (int, error) {
	done := 0
	var errno error
	err := r.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, e := rawWrite(int(fd), p[done:])
			switch e {
			case nil:
				done += n
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return done, err
	}
	if errno != nil {
		return done, r.opError("write", errno)
	}
	return done, nil
}

func (r *rawIO) opError(op string, errno error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// rawRead, rawWrite and rawEpollWait are system calls on non-blocking
// descriptors, without the runtime's entersyscall (see rawIO).
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawEpollWait polls without waiting. epoll_pwait with no signal mask is
// epoll_wait, and exists on every Linux architecture.
func rawEpollWait(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
