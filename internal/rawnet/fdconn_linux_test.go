package rawnet

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

// fdPair returns a client connection made with FromFD from a copy of a
// dialed socket's descriptor (the dialed connection closed), and the
// server's end.
func fdPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	c, s := pair(t)
	fd := dupOf(t, c)
	local, remote := c.LocalAddr(), c.RemoteAddr()
	c.Close()
	fc, err := FromFD(fd, local, remote)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	return fc, s
}

func dupOf(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = syscall.Dup(int(f)) }); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	return fd
}

func TestFDConnRoundTrip(t *testing.T) {
	c, s := fdPair(t)
	testRoundTrip(t, c, s)
}

func TestFDConnDeadlineAndClose(t *testing.T) {
	c, _ := fdPair(t)
	testDeadlineAndClose(t, c)
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
	}
}

func TestFDConnReset(t *testing.T) {
	c, s := fdPair(t)
	testReset(t, c, s)
}

func TestFDConnKeepsAddressesAndDescriptor(t *testing.T) {
	c, s := fdPair(t)
	if c.RemoteAddr().String() != s.LocalAddr().String() || c.LocalAddr().String() != s.RemoteAddr().String() {
		t.Fatalf("addresses %v -> %v, server sees %v -> %v", c.LocalAddr(), c.RemoteAddr(), s.RemoteAddr(), s.LocalAddr())
	}
	// The pool's liveness check peeks through SyscallConn.
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var typ int
	var gerr error
	if err := rc.Control(func(fd uintptr) { typ, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE) }); err != nil || gerr != nil || typ != syscall.SOCK_STREAM {
		t.Fatalf("SO_TYPE through SyscallConn = %d, %v, %v", typ, err, gerr)
	}
}

func TestFromFDRefusesABlockingDescriptorAndClosesIt(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := syscall.Dup(int(r.Fd())) // Fd leaves r blocking
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := FromFD(fd, nil, nil); err == nil {
		t.Fatal("FromFD took a blocking descriptor")
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0); errno != syscall.EBADF {
		t.Fatalf("descriptor %d still open after a refused FromFD (errno %v)", fd, errno)
	}
}
