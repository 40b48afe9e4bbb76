//go:build linux && cgo

package wire

import (
	"bytes"
	"encoding/binary"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

const fuzzLoopMax = 1 << 16

// FuzzRelayLoop feeds the C relay thread arbitrary bytes from both sides,
// with and without the Rerouter's tracking, and checks what the goroutine
// relay relies on when it takes over: every byte is either delivered, handed
// back in the result, or still unread in its socket, in order; it stops only
// at a frame the goroutine relay must see or at EOF; and its event log lists
// exactly the messages it relayed that the tracking follows.
func FuzzRelayLoop(f *testing.F) {
	q := encodeAll(&pgproto3.Query{String: "SELECT 1"})
	f.Add(q, []byte{'Z', 0, 0, 0, 5, 'I'}, true, false)
	f.Add(encodeAll(&pgproto3.Parse{Name: "s", Query: "SELECT $1"}, &pgproto3.Bind{PreparedStatement: "s"}, &pgproto3.Execute{},
		&pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{}, &pgproto3.Query{String: "DEALLOCATE s"}, &pgproto3.Terminate{}),
		[]byte{'1', 0, 0, 0, 4, '2', 0, 0, 0, 4, '3', 0, 0, 0, 4, 'Z', 0, 0, 0, 5, 'T', 'S', 0, 0, 0, 8, 'a', 0, 'b', 0}, true, false)
	f.Add(append(q, 'p', 0, 0, 0, 4), []byte{'E', 0, 0, 0, 4}, false, false)
	f.Add([]byte{'Q', 0, 0, 0, 6, 'x', 'y'}, []byte{'D', 0, 0, 0, 3}, true, false)
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{'d', 0, 0, 0, 5, 0}, 100), false, false)
	f.Add(bytes.Repeat(q, 3000), []byte{}, true, false)
	f.Add([]byte{4, 3, 1, 2, 3, 7, 0x13, 'a', 'b', 0, 6, 1, 5, 0, 8, 0}, []byte{12, 1, 'I', 8, 4, 'a', 0, 'b', 0, 0, 0, 2, 0}, true, true)
	l, err := newEventLoop(fuzzLoopMax, 0)
	if err != nil {
		f.Fatal(err)
	}
	defer l.stop()
	f.Fuzz(func(t *testing.T, fromClient, fromUp []byte, track, framed bool) {
		if framed {
			// Random bytes rarely make valid frames, and the fuzzer sees no
			// coverage of C code: build message streams from them instead.
			fromClient, fromUp = frames(fromClient, "BCDEFHPQSXcdfp"), frames(fromUp, "123CDEIKNSTZn")
		}
		c, cLoop := socketPair(t)
		u, uLoop := socketPair(t)
		// The peers write their side's bytes and collect what the thread
		// relays to them.
		atUp, atClient := make(chan []byte, 1), make(chan []byte, 1)
		go func() { atUp <- drive(u, fromUp) }()
		go func() { atClient <- drive(c, fromClient) }()
		out, err := l.relayRaw(dup(t, cLoop), dup(t, uLoop), track)
		if err != nil {
			t.Fatal(err)
		}
		// The thread has let go: what it did not read is still in the
		// sockets, behind what it sent.
		syscall.Shutdown(cLoop, syscall.SHUT_WR)
		syscall.Shutdown(uLoop, syscall.SHUT_WR)
		restClient, restUp := readAll(t, cLoop), readAll(t, uLoop)
		up, client := <-atUp, <-atClient
		res := out.res
		if got := concat(up, res.toUp, res.fromClient, restClient); !bytes.Equal(got, fromClient) {
			t.Fatalf("client bytes: got %q (relayed %q, toUp %q, fromClient %q, unread %q), want %q",
				short(got), short(up), short(res.toUp), short(res.fromClient), short(restClient), short(fromClient))
		}
		if got := concat(client, res.toClient, res.fromUp, restUp); !bytes.Equal(got, fromUp) {
			t.Fatalf("upstream bytes: got %q (relayed %q, toClient %q, fromUp %q, unread %q), want %q",
				short(got), short(client), short(res.toClient), short(res.fromUp), short(restUp), short(fromUp))
		}
		switch out.reason {
		case loopReasonIO:
		case loopReasonFrame:
			if !frameStops(res.fromClient, true, track) && !frameStops(res.fromUp, false, track) {
				t.Fatalf("handed back for a frame, but neither %q nor %q starts with one the goroutine relay must see", short(res.fromClient), short(res.fromUp))
			}
		default:
			t.Fatalf("handed back for reason %d", out.reason)
		}
		if !track {
			if len(out.log) != 0 {
				t.Fatalf("untracked session logged %q", short(out.log))
			}
			return
		}
		wantC, wantU := followed(concat(up, res.toUp), true), followed(concat(client, res.toClient), false)
		gotC, gotU := logged(t, out.log)
		if gotC != wantC || gotU != wantU {
			t.Fatalf("log has client %q upstream %q, want %q and %q", gotC, gotU, wantC, wantU)
		}
	})
}

func socketPair(t *testing.T) (peer, loop int) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

func dup(t *testing.T, fd int) int {
	d, err := dupCloexec(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(d, true); err != nil {
		t.Fatal(err)
	}
	return d
}

// drive writes data to fd, ends its side, and returns all it reads back.
func drive(fd int, data []byte) []byte {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(data) > 0 {
			n, err := syscall.Write(fd, data)
			if err != nil {
				return
			}
			data = data[n:]
		}
		syscall.Shutdown(fd, syscall.SHUT_WR)
	}()
	var got []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		got = append(got, buf[:n]...)
	}
	<-done
	return got
}

// readN reads n bytes from fd, or what there is before EOF or an error.
func readN(fd, n int) []byte {
	got := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(got) < n {
		k, err := syscall.Read(fd, buf[:n-len(got)])
		if err == syscall.EINTR {
			continue
		}
		if k <= 0 || err != nil {
			break
		}
		got = append(got, buf[:k]...)
	}
	return got
}

func readAll(t *testing.T, fd int) []byte {
	if err := syscall.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if n <= 0 || err != nil {
			return got
		}
		got = append(got, buf[:n]...)
	}
}

func short(b []byte) []byte {
	if len(b) > 200 {
		return append(b[:200:200], "..."...)
	}
	return b
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// frames turns b into messages: a type picked from types, a body of up to
// 15 bytes (NUL-terminated when the length byte's bit 4 is set).
func frames(b []byte, types string) []byte {
	var out []byte
	for len(b) >= 2 {
		typ, n, end0 := types[int(b[0])%len(types)], int(b[1]&15), b[1]&16 != 0
		b = b[2:]
		body := make([]byte, n)
		copy(body, b)
		b = b[min(n, len(b)):]
		if end0 && n > 0 {
			body[n-1] = 0
		}
		out = append(out, typ, 0, 0, 0, byte(n+4))
		out = append(out, body...)
	}
	return out
}

// frameStops reports whether b starts with a header at which the thread
// hands the session back: what the goroutine relay rejects or follows
// itself (relay.go).
func frameStops(b []byte, fromClient, track bool) bool {
	if len(b) < 5 {
		return false
	}
	typ, ln := b[0], int32(binary.BigEndian.Uint32(b[1:]))
	if ln < 4 {
		return true
	}
	if !fromClient {
		return false
	}
	body := int(ln) - 4
	if !frontendTypes[typ] || typ == 'p' || body > fuzzLoopMax {
		return true
	}
	whole := len(b) >= 5+body
	if typ == 'Q' && whole && (body == 0 || b[4+body] != 0) {
		return true
	}
	return track && (typ == 'P' || typ == 'C') && 5+body > loopBufSize
}

// followed lists the types of the messages whose headers b holds that the
// tracking follows, in order.
func followed(b []byte, fromClient bool) string {
	var types []byte
	for len(b) >= 5 {
		typ, body := b[0], int(binary.BigEndian.Uint32(b[1:]))-4
		switch {
		case fromClient && bytes.IndexByte([]byte("PCQSF"), typ) >= 0:
			types = append(types, typ)
		case !fromClient && (typ == '1' || typ == '3' || typ == 'E' || typ == 'Z' && body == 1 || typ == 'S' && 5+body <= loopBufSize):
			types = append(types, typ)
		}
		if len(b) < 5+body {
			break
		}
		b = b[5+body:]
	}
	return string(types)
}

func logged(t *testing.T, log []byte) (client, up string) {
	for len(log) > 0 {
		if len(log) < 6 {
			t.Fatalf("truncated log entry %q", log)
		}
		n := int(binary.LittleEndian.Uint32(log[2:]))
		if len(log) < 6+n {
			t.Fatalf("log entry body cut: %q", log)
		}
		switch log[0] {
		case 'c':
			client += string(log[1])
		case 'u':
			up += string(log[1])
		default:
			t.Fatalf("log entry kind %q", log[0])
		}
		log = log[6+n:]
	}
	return client, up
}

// TestLoopReusesEventfds checks that a session's eventfd goes to the next
// session, that a count an earlier session left unread does not end the
// next session early, and that stopping the loop closes the spare ones.
func TestLoopReusesEventfds(t *testing.T) {
	l, err := newEventLoop(fuzzLoopMax, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	n, err := l.notifier()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Write(n.fd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	l.putNotifier(n)

	fromClient := encodeAll(&pgproto3.Query{String: "SELECT 1"})
	fromUp := []byte{'Z', 0, 0, 0, 5, 'I'}
	c, cLoop := socketPair(t)
	u, uLoop := socketPair(t)
	// The client sends its query, reads the answer and ends its side; the
	// upstream answers once it has the query.
	atUp, atClient := make(chan []byte, 1), make(chan []byte, 1)
	go func() {
		got := readN(u, len(fromClient))
		syscall.Write(u, fromUp)
		atUp <- got
	}()
	go func() {
		syscall.Write(c, fromClient)
		got := readN(c, len(fromUp))
		syscall.Shutdown(c, syscall.SHUT_WR)
		atClient <- got
	}()
	out, err := l.relayRaw(dup(t, cLoop), dup(t, uLoop), true)
	if err != nil {
		t.Fatal(err)
	}
	if up, client := <-atUp, <-atClient; !bytes.Equal(up, fromClient) || !bytes.Equal(client, fromUp) {
		t.Fatalf("relayed %q upstream and %q to the client, want %q and %q", up, client, fromClient, fromUp)
	}
	if out.reason != loopReasonIO {
		t.Fatalf("handed back for reason %d, want EOF (%d)", out.reason, loopReasonIO)
	}

	m, err := l.notifier()
	if err != nil {
		t.Fatal(err)
	}
	if m.f != n.f {
		t.Fatalf("the session's eventfd (%d) was not kept for the next one, which got %d", n.fd, m.fd)
	}
	l.putNotifier(m)
	l.stop()
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(n.fd), syscall.F_GETFD, 0); errno != syscall.EBADF {
		t.Fatalf("spare eventfd %d still open after stop (errno %v)", n.fd, errno)
	}
}
