package rawnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server's end.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	var d net.Dialer
	c, err := WrapDial(d.DialContext)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestWrapIsRawOnLinux(t *testing.T) {
	c, _ := pair(t)
	_, raw := c.(*Conn)
	if raw != (runtime.GOOS == "linux") {
		t.Fatalf("Wrap gave %T on %s", c, runtime.GOOS)
	}
	// Not TCP: unchanged.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a non-TCP connection")
	}
}

func TestRoundTripLargerThanSocketBuffers(t *testing.T) {
	c, s := pair(t)
	testRoundTrip(t, c, s)
}

// testRoundTrip writes more than the kernel buffers hold through c and reads
// it back from s, then the other way until s closes.
func testRoundTrip(t *testing.T, c, s net.Conn) {
	t.Helper()
	// 8 MiB does not fit in the kernel's buffers, so Write must wait for
	// the reader (EAGAIN, then the netpoller) and resume where it was.
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		b := make([]byte, len(want))
		n, _ := io.ReadFull(s, b)
		got <- b[:n]
	}()
	n, err := c.Write(want)
	if err != nil || n != len(want) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("server read %d bytes, not what was written", len(b))
	}
	// And the other way, through Read, until EOF.
	go func() {
		s.Write(want[:1<<20])
		s.Close()
	}()
	b, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(b, want[:1<<20]) {
		t.Fatalf("ReadAll = %d bytes, %v", len(b), err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestDeadlineAndClose(t *testing.T) {
	c, _ := pair(t)
	testDeadlineAndClose(t, c)
}

// testDeadlineAndClose checks that a read past its deadline is a net.Error
// timeout and that Close ends a waiting read with net.ErrClosed.
func testDeadlineAndClose(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past deadline: %v is not a net.Error timeout", err)
	}
	// The relay tells client from upstream failures by the operation.
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read past deadline: %v, want a *net.OpError for read", err)
	}
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on closed conn: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

func TestResetIsAnOpError(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw reads are Linux-only")
	}
	c, s := pair(t)
	testReset(t, c, s)
}

// testReset checks that a read after the peer reset the connection is a
// *net.OpError that wraps ECONNRESET.
func testReset(t *testing.T, c, s net.Conn) {
	t.Helper()
	// SO_LINGER 0 makes Close send a RST.
	s.(*net.TCPConn).SetLinger(0)
	s.Close()
	time.Sleep(20 * time.Millisecond)
	_, err := c.Read(make([]byte, 10))
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("Read after RST: %v (%T), want a *net.OpError for read", err, err)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after RST: %v, want ECONNRESET", err)
	}
}
