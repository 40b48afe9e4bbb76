//go:build linux && cgo

package wire

/*
#cgo CFLAGS: -O2 -Wall
#include "cloop_linux.h"
*/
import "C"

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/kvproxy/kvproxy/internal/rawnet"
)

// eventLoop relays plain-TCP passthrough sessions on one C thread with its
// own epoll set (cloop_linux.c), the way PgBouncer does: one blocking
// epoll_wait, then a read and a write per message, and nothing else.
//
// It is C because the Go runtime charges every wake-up of a goroutine
// relay for its scheduler: the netpoller's own wait, the park and unpark,
// a spinning thread and the monitor. With both cores busy that cost a
// fifth of the CPU per select-only transaction, about what separated the
// goroutine loops from PgBouncer (see README, Performance). cgo was
// already required (pg_query_go).
//
// The sockets leave Go's netpoller while the thread owns them (the
// descriptors are duplicated and the Go connections closed), or every
// readiness edge would also wake the runtime's poller. When the session
// comes back they become Go connections again.
//
// The thread does only the steady state. Anything unusual (EOF, a
// malformed frame, shutdown, an error) hands the session back to its
// goroutine, which carries on with the goroutine relay and its error
// handling. With a Rerouter, the thread logs what the Rerouter's
// bookkeeping needs (relayTrack) for the goroutine to replay, and hands the
// session back at an idle point after the Rerouter announced a change
// (RerouteNotifier); the goroutine asks Reroute and re-adds the session if
// it says no.
type eventLoop struct {
	p *C.cl_loop
	// logs holds buffers of loopLogSize that a tracked session's
	// goroutine drains the thread's event log into. A buffer is needed
	// only while a log is replayed, and a session of one transaction would
	// otherwise allocate (and the GC clear and scan) 64 KiB for one drain.
	logs sync.Pool

	mu      sync.Mutex
	stopped bool
	users   int // sessions that may still send commands
	// spare holds the eventfds of sessions handed back for good, for new
	// sessions: making one cost several system calls and a netpoller
	// registration per client. The thread signals a session's eventfd
	// only for a hand-back that its goroutine then waits for, so one
	// handed back for good is not signalled again. A count left unread
	// (see next) wakes the next session's goroutine once; it finds its
	// session still on the thread and waits again.
	spare []notifier
}

// notifier is an eventfd that the thread signals and a session's goroutine
// waits on.
type notifier struct {
	f  *os.File // in the netpoller
	fd int
}

// maxSpareNotifiers bounds a loop's spare eventfds (file descriptors kept
// open after a burst of clients).
const maxSpareNotifiers = 256

// loopSess is a session while the thread owns its sockets.
type loopSess struct {
	l      *eventLoop
	p      *C.cl_sess
	notify notifier
	left   chan struct{} // closed when the session is back on its goroutine
	track  bool          // the thread keeps an event log
}

// loopResult is what the goroutine needs to resume the relay.
type loopResult struct {
	toUp, toClient     []byte // parsed but not yet written
	fromClient, fromUp []byte // read but not yet parsed
	needClient, needUp int    // rest of a frame in progress, per source
	// reroute: the Rerouter asked for re-routing at an idle point; the
	// client's next message is the first of fromClient.
	reroute bool
	// terminate: the client sent Terminate (the first message of
	// fromClient) at an idle point, and the upstream connection may be kept.
	terminate bool
}

var (
	errNotTCP      = errors.New("wire: not a plain TCP connection")
	errNoEventLoop = errors.New("wire: the relay loop has stopped")
)

const (
	loopBufSize = 64 << 10
	// Room for any message the thread follows whole; only what is written
	// of it is ever touched.
	loopLogSize = loopBufSize + C.CL_LOG_HDR
)

func newEventLoop(max int, coalesce time.Duration) (*eventLoop, error) {
	m := uint64(math.MaxUint32)
	if max > 0 && uint64(max) < m {
		m = uint64(max)
	}
	var errno C.int
	p := C.cl_loop_new(C.uint32_t(m), C.int64_t(coalesce), &errno)
	if p == nil {
		return nil, os.NewSyscallError("relay loop", syscall.Errno(errno))
	}
	l := &eventLoop{p: p}
	l.logs.New = func() any {
		b := make([]byte, loopLogSize)
		return &b
	}
	return l, nil
}

// acquire counts a session that may send commands; false once stopped.
func (l *eventLoop) acquire() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.users++
	return true
}

func (l *eventLoop) release() {
	l.mu.Lock()
	l.users--
	free := l.stopped && l.users == 0
	l.mu.Unlock()
	if free {
		C.cl_loop_free(l.p)
	}
}

// stop hands every session back and ends the thread; the C loop is freed
// when the last session has let go of it.
func (l *eventLoop) stop() {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	spare := l.spare
	l.spare = nil
	l.mu.Unlock()
	for _, n := range spare {
		n.f.Close()
	}
	C.cl_loop_stop(l.p)
	l.mu.Lock()
	free := l.users == 0
	l.mu.Unlock()
	if free {
		C.cl_loop_free(l.p)
	}
}

// pauses counts the thread's coalescing pauses.
func (l *eventLoop) pauses() uint64 { return uint64(C.cl_loop_pauses(l.p)) }

// bump tells tracked sessions to check with the Rerouter at their next
// idle point.
func (l *eventLoop) bump() { C.cl_loop_bump(l.p) }

// dupFD returns a copy of a TCP connection's descriptor.
func dupFD(c net.Conn) (int, bool) {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *rawnet.Conn:
		sc = c.TCPConn
	case *rawnet.FDConn: // a session the thread handed back earlier
		sc = c
	default:
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	cerr := rc.Control(func(f uintptr) { fd, err = dupCloexec(int(f)) })
	if cerr != nil || err != nil {
		return 0, false
	}
	return fd, true
}

func dupCloexec(fd int) (int, error) {
	for {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(r), nil
	}
}

// relay runs s on the thread until it is handed back for good. ok is false
// when the loop cannot take the session (not plain TCP, loop stopped,
// session ending); s is then as it was.
func (l *eventLoop) relay(s *Session) (loopResult, bool) {
	if s.cw.Buffered() > 0 || s.up.w.Buffered() > 0 || s.cr.Buffered() > loopBufSize || s.up.r.Buffered() > loopBufSize {
		return loopResult{}, false
	}
	if !l.acquire() {
		return loopResult{}, false
	}
	defer l.release()
	gen := uint64(C.cl_loop_gen(l.p))
	if s.track != nil {
		// The generation may have moved before the session got here.
		yes, err := s.relayReroute()
		if err != nil {
			return loopResult{}, false // the goroutine relay asks again and reports it
		}
		if yes {
			return loopResult{reroute: true}, true
		}
	}
	ls, err := l.adopt(s, gen)
	if err != nil {
		s.srv.log.Debug("relay loop cannot take the session", "err", err)
		return loopResult{}, false
	}
	s.mu.Lock()
	if s.shuttingDown || s.closed || C.cl_send(l.p, ls.p, C.CL_OP_ADD) != 0 {
		s.mu.Unlock()
		C.cl_sess_free(ls.p) // never ran: s's connections and buffers are intact
		l.putNotifier(ls.notify)
		return loopResult{}, false
	}
	// The bytes the goroutine readers had buffered are the thread's now,
	// and the Go connections leave the netpoller (the thread has copies).
	_, _ = s.cr.Discard(s.cr.Buffered())
	_, _ = s.up.r.Discard(s.up.r.Buffered())
	caddr := [2]net.Addr{s.conn.LocalAddr(), s.conn.RemoteAddr()}
	uaddr := [2]net.Addr{s.up.conn.LocalAddr(), s.up.conn.RemoteAddr()}
	s.conn.Close()
	s.up.conn.Close()
	s.loopSess = ls
	s.mu.Unlock()

	res := l.wait(s, ls)
	r := snapshot(ls.p, &res)
	s.outstanding.Store(int32(r.outstanding))
	s.upTx.Store(uint32(r.up_tx))
	if r.terminating != 0 {
		s.terminating.Store(true)
	}
	s.relayExt = r.ext != 0

	res.terminate = res.terminate && res.quiet()

	// The thread is done with the sockets: the Go connections take them,
	// but for the socket of a client that has said goodbye.
	cfd, ufd := int(C.cl_sess_cfd(ls.p)), int(C.cl_sess_ufd(ls.p))
	C.cl_sess_disown(ls.p)
	var cconn net.Conn
	var err1 error
	if res.terminate {
		syscall.Close(cfd)
		cconn = s.conn // closed when the thread took the session
	} else {
		cconn, err1 = fdConn(cfd, caddr)
	}
	uconn, err2 := fdConn(ufd, uaddr)
	s.mu.Lock()
	if err1 == nil && err2 == nil {
		s.conn, s.up.conn = cconn, uconn
	} else {
		// Out of descriptors: the session ends on its closed connections.
		s.srv.log.Warn("relay loop could not hand a session back", "err", errors.Join(err1, err2))
		for _, c := range []net.Conn{cconn, uconn} {
			if c != nil {
				c.Close()
			}
		}
	}
	s.cr.Reset(s.conn)
	s.cw.Reset(s.conn)
	s.up.r.Reset(s.up.conn)
	s.up.w.Reset(s.up.conn)
	s.loopSess = nil
	close(ls.left)
	s.mu.Unlock()
	ls.free(l)
	return res, true
}

// quiet reports whether the thread left nothing in flight but the client's
// Terminate.
func (r loopResult) quiet() bool {
	return len(r.toUp) == 0 && len(r.toClient) == 0 && len(r.fromUp) == 0 &&
		r.needClient == 0 && r.needUp == 0 && bytes.Equal(r.fromClient, []byte{'X', 0, 0, 0, 4})
}

// snapshot copies what the thread left in flight into res.
func snapshot(p *C.cl_sess, res *loopResult) C.cl_result {
	var r C.cl_result
	C.cl_sess_result(p, &r)
	cp := func(b *C.uint8_t, from, to C.uint32_t) []byte {
		if to <= from {
			return nil
		}
		return C.GoBytes(unsafe.Add(unsafe.Pointer(b), from), C.int(to-from))
	}
	res.toUp = cp(r.c2u, r.c2u_head, r.c2u_parsed)
	res.fromClient = cp(r.c2u, r.c2u_parsed, r.c2u_end)
	res.needClient = int(r.c2u_need)
	res.toClient = cp(r.u2c, r.u2c_head, r.u2c_parsed)
	res.fromUp = cp(r.u2c, r.u2c_parsed, r.u2c_end)
	res.needUp = int(r.u2c_need)
	return r
}

// wait follows the session on the thread until it is handed back for
// good: it replays the event log as the thread asks, and re-adds the
// session after a full log or a Reroute that said no.
func (l *eventLoop) wait(s *Session, ls *loopSess) loopResult {
	var res loopResult
	for {
		reason := ls.next(l, s.replayLog)
		again := false
		switch reason {
		case C.CL_RUNNING:
			continue // it asked for the log to be drained
		case C.CL_LOG:
			again = true
		case C.CL_TERMINATE:
			res.terminate = true
		case C.CL_REROUTE:
			g := uint64(C.cl_loop_gen(l.p))
			yes, err := s.relayReroute()
			if err == nil && !yes {
				C.cl_sess_set_seen(ls.p, C.uint64_t(g))
				again = true
			}
			res.reroute = yes
		}
		if again {
			s.mu.Lock()
			ok := !s.shuttingDown && !s.closed && C.cl_send(l.p, ls.p, C.CL_OP_ADD) == 0
			s.mu.Unlock()
			if ok {
				continue
			}
		}
		return res
	}
}

// next waits for the thread's next signal, applies the event log taken
// meanwhile with replay (which must not keep the slice), and returns why the
// thread handed the session back (CL_RUNNING when it only asked for its log
// to be drained).
func (ls *loopSess) next(l *eventLoop, replay func([]byte)) C.int {
	var ev [8]byte
	if _, err := ls.notify.f.Read(ev[:]); err != nil {
		// Cannot happen to an eventfd; take the session back.
		C.cl_send(l.p, ls.p, C.CL_OP_EJECT)
		for C.cl_sess_reason(ls.p) == C.CL_RUNNING {
			time.Sleep(time.Millisecond)
		}
	}
	reason := C.cl_sess_reason(ls.p)
	if !ls.track {
		return reason
	}
	bp := l.logs.Get().(*[]byte)
	b := *bp
	n := C.cl_sess_take_log(ls.p, (*C.uint8_t)(unsafe.Pointer(&b[0])), C.uint32_t(len(b)))
	replay(b[:n])
	l.logs.Put(bp)
	return reason
}

// newLoopSess makes a C session of two descriptors, which it takes.
func newLoopSess(l *eventLoop, cfd, ufd int, track bool) (*loopSess, error) {
	n, err := l.notifier()
	if err != nil {
		syscall.Close(cfd)
		syscall.Close(ufd)
		return nil, err
	}
	t := 0
	if track {
		t = 1
	}
	var errno C.int
	p := C.cl_sess_new(C.int(cfd), C.int(ufd), C.int(n.fd), loopBufSize, loopLogSize, C.int(t), &errno)
	if p == nil {
		syscall.Close(cfd)
		syscall.Close(ufd)
		l.putNotifier(n)
		return nil, os.NewSyscallError("relay session", syscall.Errno(errno))
	}
	return &loopSess{l: l, p: p, left: make(chan struct{}), notify: n, track: track}, nil
}

// notifier returns a spare eventfd or a new one.
func (l *eventLoop) notifier() (notifier, error) {
	l.mu.Lock()
	if k := len(l.spare); k > 0 {
		n := l.spare[k-1]
		l.spare = l.spare[:k-1]
		l.mu.Unlock()
		return n, nil
	}
	l.mu.Unlock()
	// EFD_CLOEXEC and EFD_NONBLOCK are O_CLOEXEC and O_NONBLOCK.
	r, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		return notifier{}, os.NewSyscallError("eventfd", errno)
	}
	return notifier{f: os.NewFile(r, "relay-notify"), fd: int(r)}, nil
}

// putNotifier keeps a session's eventfd for another session, once the
// thread will not signal it for this one.
func (l *eventLoop) putNotifier(n notifier) {
	l.mu.Lock()
	if !l.stopped && len(l.spare) < maxSpareNotifiers {
		l.spare = append(l.spare, n)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	n.f.Close()
}

// free releases the C session once the thread has handed it back: on the
// thread, which may still hold its pointer in the batch of events it is
// working through, or here once the thread is gone.
func (ls *loopSess) free(l *eventLoop) {
	l.putNotifier(ls.notify)
	// Freeing can wait for the thread's next wake-up: waking it for this
	// alone cost a context switch a client.
	if C.cl_send_lazy(l.p, ls.p, C.CL_OP_FREE) != 0 {
		C.cl_sess_free(ls.p)
	}
}

// adopt makes a C session of copies of s's descriptors and of the bytes
// its goroutine readers have buffered (which stay there until the thread
// has the session).
func (l *eventLoop) adopt(s *Session, gen uint64) (*loopSess, error) {
	cfd, ok1 := dupFD(s.conn)
	ufd, ok2 := dupFD(s.up.conn)
	if !ok1 || !ok2 {
		if ok1 {
			syscall.Close(cfd)
		}
		if ok2 {
			syscall.Close(ufd)
		}
		return nil, errNotTCP
	}
	ls, err := newLoopSess(l, cfd, ufd, s.track != nil)
	if err != nil {
		return nil, err
	}
	p := ls.p
	fill := func(dir C.int, r *bufio.Reader) {
		if n := r.Buffered(); n > 0 {
			b, _ := r.Peek(n)
			C.cl_sess_fill(p, dir, unsafe.Pointer(&b[0]), C.uint32_t(n))
		}
	}
	fill(0, s.cr)
	fill(1, s.up.r)
	ext := 0
	if s.relayExt {
		ext = 1
	}
	term := 0
	if s.terminating.Load() {
		term = 1
	}
	C.cl_sess_state(p, C.int32_t(s.outstanding.Load()), C.uint8_t(s.upTx.Load()), C.uint8_t(ext), C.uint8_t(term), C.uint64_t(gen))
	if s.srv.pool != nil {
		C.cl_sess_keep(p, 1)
	}
	return ls, nil
}

// fdConn makes a Go connection of fd, which it takes, with the local and
// remote addresses the socket had as a Go connection before.
func fdConn(fd int, addr [2]net.Addr) (net.Conn, error) {
	c, err := rawnet.FromFD(fd, addr[0], addr[1])
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ejectLocked asks the thread to hand the session back (the session's mu
// is held, so that no re-add of it can overtake the request); its
// goroutine closes ls.left once it has the session.
func (ls *loopSess) ejectLocked() { C.cl_send(ls.l.p, ls.p, C.CL_OP_EJECT) }

// replayLog applies the thread's event log to the Rerouter's bookkeeping,
// in the order the thread relayed the messages.
func (s *Session) replayLog(b []byte) {
	for len(b) >= C.CL_LOG_HDR {
		kind, typ := b[0], b[1]
		n := int(binary.LittleEndian.Uint32(b[2:6]))
		body := b[C.CL_LOG_HDR : C.CL_LOG_HDR+n]
		b = b[C.CL_LOG_HDR+n:]
		switch {
		case kind == C.CL_LOG_CLIENT:
			if n == 0 {
				body = nil
			}
			s.relayNote(typ, body)
		case typ == 'S':
			s.track.param(body)
		default:
			s.track.upstream(typ)
		}
	}
}
