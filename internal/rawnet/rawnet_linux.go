//go:build linux

package rawnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Conn is a TCP connection whose Read and Write are raw system calls.
// Every other method is the connection's own.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
}

// Wrap returns c with raw reads and writes when it is a TCP connection,
// else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &Conn{TCPConn: tc, rc: rc}
}

// WrapDial wraps the connections a dial function returns (it fits
// pgconn.Config.DialFunc).
func WrapDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return Wrap(c), nil
	}
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err, errno := read(c.rc, p)
	switch {
	case err != nil:
		return 0, netOp(err, "read") // deadline or closed
	case errno != nil:
		return 0, c.opError("read", errno)
	}
	return n, nil
}

func (c *Conn) Write(p []byte) (int, error) {
	n, err, errno := write(c.rc, p)
	if err != nil {
		return n, netOp(err, "write")
	}
	if errno != nil {
		return n, c.opError("write", errno)
	}
	return n, nil
}

// read reads p from rc's socket; err is rc's (a deadline, a closed
// descriptor), errno the system call's, and a read of 0 bytes is io.EOF.
func read(rc syscall.RawConn, p []byte) (n int, err, errno error) {
	if len(p) == 0 {
		return 0, nil, nil
	}
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, errno = rawIO(syscall.SYS_READ, int(fd), p)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err, nil
	case errno != nil:
		return 0, nil, errno
	case n == 0:
		return 0, io.EOF, nil
	}
	return n, nil, nil
}

// write writes all of p to rc's socket, as read reports errors.
func write(rc syscall.RawConn, p []byte) (done int, err, errno error) {
	err = rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, e := rawIO(syscall.SYS_WRITE, int(fd), p[done:])
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
	return done, err, errno
}

// netOp names a raw connection's error as net.Conn does: a RawConn
// reports a deadline or a closed connection as "raw-read" or "raw-write",
// where callers (and net.Conn) expect "read" and "write".
func netOp(err error, op string) error {
	var oe *net.OpError
	if errors.As(err, &oe) && strings.HasPrefix(oe.Op, "raw-") {
		c := *oe
		c.Op = op
		return &c
	}
	return err
}

func (c *Conn) opError(op string, errno error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// FDConn is a connected TCP socket made a connection from its bare
// descriptor, with raw reads and writes as Conn's. It is what net.FileConn
// makes, for a fraction of the system calls: net.FileConn duplicates the
// descriptor, asks the kernel for the socket's type and both addresses and
// sets its options again (no delay, keep-alive), about a dozen calls a
// connection. A proxy that hands a socket between its own event loop and
// Go at the end of every client session paid that each time.
type FDConn struct {
	f             *os.File
	rc            syscall.RawConn
	local, remote net.Addr
	closed        atomic.Bool
}

// FromFD makes a connection of fd, a connected non-blocking TCP socket with
// the given addresses. It takes fd: Close closes it, and so does FromFD
// when it fails. A blocking descriptor is refused, since Go's netpoller
// could not wait for it and a read would hold a thread with no deadline.
func FromFD(fd int, local, remote net.Addr) (*FDConn, error) {
	f := os.NewFile(uintptr(fd), "tcp")
	if f == nil {
		return nil, fmt.Errorf("rawnet: invalid descriptor %d", fd)
	}
	if err := f.SetDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("rawnet: descriptor %d is not a non-blocking socket: %w", fd, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &FDConn{f: f, rc: rc, local: local, remote: remote}, nil
}

func (c *FDConn) Read(p []byte) (int, error) {
	n, err, errno := read(c.rc, p)
	switch {
	case err == io.EOF:
		return 0, io.EOF
	case err != nil:
		return 0, c.opError("read", c.fileErr(err))
	case errno != nil:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	}
	return n, nil
}

func (c *FDConn) Write(p []byte) (int, error) {
	n, err, errno := write(c.rc, p)
	if err != nil {
		return n, c.opError("write", c.fileErr(err))
	}
	if errno != nil {
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// fileErr reports a read or write on a closed descriptor as net.ErrClosed,
// as net.Conn does (an os.File's raw connection says "use of closed file").
func (c *FDConn) fileErr(err error) error {
	if c.closed.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
		return net.ErrClosed
	}
	return err
}

func (c *FDConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// Close closes the descriptor; a Read or Write waiting on it returns
// net.ErrClosed.
func (c *FDConn) Close() error {
	if c.closed.Swap(true) {
		return c.opError("close", net.ErrClosed)
	}
	return c.f.Close()
}

func (c *FDConn) LocalAddr() net.Addr                { return c.local }
func (c *FDConn) RemoteAddr() net.Addr               { return c.remote }
func (c *FDConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *FDConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *FDConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// SyscallConn gives the descriptor, as a net.TCPConn's does.
func (c *FDConn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// rawIO is read(2) or write(2) without the runtime's system-call
// bookkeeping; it returns -1 and the errno on failure.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
