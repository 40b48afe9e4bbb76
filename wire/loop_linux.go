//go:build linux

package wire

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/kvproxy/kvproxy/internal/rawnet"
)

// eventLoop relays plain-TCP passthrough sessions in one goroutine with its
// own epoll set, the way PgBouncer does: one read per readiness event (Go's
// netpoller needs an extra read that fails with EAGAIN before every wait)
// and no goroutine hand-offs.
//
// The loop never blocks in epoll_wait itself. A thread blocked in a system
// call keeps its P; with every P held that way, the runtime's sysmon takes
// the P back every time and, never idle, polls every 20 µs: one nanosleep
// per relayed message, a third more CPU per transaction than PgBouncer.
// Instead the epoll set's own descriptor sits in Go's netpoller, and the
// loop drains it with non-blocking waits and parks like any goroutine. Its
// waits, reads and writes are raw system calls (see internal/rawnet).
//
// It only does the steady state: anything
// unusual (EOF, a malformed frame, shutdown, an error) ejects the session
// back to its goroutine, which carries on with the goroutine relay and its
// error handling.
type eventLoop struct {
	epfd    int
	ep      *os.File // epfd in Go's netpoller; owns and closes it
	wakeR   int
	wakeW   int
	mu      sync.Mutex
	cmds    []loopCmd
	done    chan struct{}
	byFD    map[int32]*loopSess
	max     int
	stopped bool
	// filled: a read in this batch filled its buffer, so its socket may
	// still hold data that no new event will announce.
	filled bool
}

type loopCmd struct {
	add   *loopSess
	eject *Session
	ack   chan struct{}
	stop  bool
}

type loopDir struct {
	buf               []byte
	head, parsed, end int
	need              int // body bytes of the current frame still to pass
	paused            bool
}

type loopSess struct {
	s        *Session
	cfd, ufd int
	c2u, u2c loopDir
	result   chan loopResult
	reroute  bool
}

// loopResult is what the goroutine needs to resume the relay.
type loopResult struct {
	toUp, toClient     []byte // parsed but not yet written
	fromClient, fromUp []byte // read but not yet parsed
	needClient, needUp int    // rest of a frame in progress, per source
	// reroute: the Rerouter asked for re-routing at an idle point; the
	// client's next message is the first of fromClient.
	reroute bool
	err     error
}

const loopBufSize = 64 << 10

func newEventLoop(max int) (*eventLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	l := &eventLoop{epfd: epfd, wakeR: p[0], wakeW: p[1], done: make(chan struct{}), byFD: map[int32]*loopSess{}, max: max}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}); err != nil {
		l.closeFDs()
		return nil, err
	}
	// Non-blocking, so that os.NewFile registers it with the netpoller.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		l.closeFDs()
		return nil, err
	}
	l.ep = os.NewFile(uintptr(epfd), "relay-epoll")
	rc, err := l.ep.SyscallConn()
	if err != nil {
		l.closeFDs()
		return nil, err
	}
	go l.run(rc)
	return l, nil
}

func (l *eventLoop) closeFDs() {
	if l.ep != nil {
		l.ep.Close()
	} else {
		syscall.Close(l.epfd)
	}
	syscall.Close(l.wakeR)
	syscall.Close(l.wakeW)
}

func (l *eventLoop) send(c loopCmd) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.cmds = append(l.cmds, c)
	if c.stop {
		l.stopped = true
	}
	l.mu.Unlock()
	_, _ = syscall.Write(l.wakeW, []byte{0})
	return true
}

func (l *eventLoop) stop() {
	if l.send(loopCmd{stop: true}) {
		<-l.done
	}
}

func rawFD(c net.Conn) (int, bool) {
	var tc *net.TCPConn
	switch c := c.(type) {
	case *net.TCPConn:
		tc = c
	case *rawnet.Conn:
		tc = c.TCPConn
	default:
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if rc.Control(func(f uintptr) { fd = int(f) }) != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// relay runs s in the loop until it is ejected. ok is false when the loop
// cannot take the session (not plain TCP, loop stopped).
func (l *eventLoop) relay(s *Session) (loopResult, bool) {
	cfd, ok1 := rawFD(s.conn)
	ufd, ok2 := rawFD(s.up.conn)
	if !ok1 || !ok2 {
		return loopResult{}, false
	}
	ls := &loopSess{s: s, cfd: cfd, ufd: ufd, result: make(chan loopResult, 1),
		c2u: loopDir{buf: make([]byte, loopBufSize)}, u2c: loopDir{buf: make([]byte, loopBufSize)}}
	// Bytes already buffered by the goroutine readers go first.
	if n := s.cr.Buffered(); n > 0 {
		b, _ := s.cr.Peek(n)
		ls.c2u.end = copy(ls.c2u.buf, b)
		_, _ = s.cr.Discard(ls.c2u.end)
	}
	if n := s.up.r.Buffered(); n > 0 {
		b, _ := s.up.r.Peek(n)
		ls.u2c.end = copy(ls.u2c.buf, b)
		_, _ = s.up.r.Discard(ls.u2c.end)
	}
	s.mu.Lock()
	if s.shuttingDown || s.closed {
		s.mu.Unlock()
		return loopResult{}, false
	}
	s.inLoop = l
	s.mu.Unlock()
	if !l.send(loopCmd{add: ls}) {
		s.mu.Lock()
		s.inLoop = nil
		s.mu.Unlock()
		return loopResult{}, false
	}
	res := <-ls.result
	s.mu.Lock()
	s.inLoop = nil
	s.mu.Unlock()
	return res, true
}

// eject asks the loop to hand s back and waits until it has.
func (l *eventLoop) eject(s *Session) {
	ack := make(chan struct{})
	if l.send(loopCmd{eject: s, ack: ack}) {
		<-ack
	}
}

func (l *eventLoop) run(rc syscall.RawConn) {
	defer close(l.done)
	defer l.closeFDs()
	defer l.drainCommands()
	events := make([]syscall.EpollEvent, 128)
	stop := false
	var failure error
	// Read calls the function until it returns true and parks the
	// goroutine on the epoll descriptor's readiness whenever it returns
	// false. The netpoller reports edges: the loop may park only when
	// nothing it has seen is still pending, so that any later event is a
	// new edge. That holds after a wait that found nothing, and after a
	// batch that did not fill the event list in which every read came back
	// short and no peer had closed (the socket was empty; what arrives later
	// wakes the set again; epoll_ctl does the same for re-armed interest).
	// Skipping the empty wait saves a system call per wake-up.
	err := rc.Read(func(uintptr) bool {
		for {
			l.filled = false
			n, err := rawnet.EpollPoll(l.epfd, events)
			if err != nil {
				if errors.Is(err, syscall.EINTR) {
					continue
				}
				failure = err
				return true
			}
			if n == 0 {
				return false
			}
			if l.dispatch(events[:n]) {
				stop = true
				return true
			}
			if n < len(events) && !l.filled {
				return false
			}
		}
	})
	if stop {
		return
	}
	if failure == nil {
		failure = err
	}
	if failure == nil {
		failure = ErrServerClosed
	}
	for _, ls := range l.byFD {
		l.finish(ls, failure)
	}
}

// dispatch handles one batch of events; true means stop.
func (l *eventLoop) dispatch(events []syscall.EpollEvent) bool {
	var wake [64]byte
	for _, ev := range events {
		fd := ev.Fd
		if int(fd) == l.wakeR {
			for {
				if m, _ := rawnet.Read(l.wakeR, wake[:]); m <= 0 {
					break
				}
			}
			if l.commands() {
				return true
			}
			continue
		}
		if ls := l.byFD[fd]; ls != nil {
			l.event(ls, int(fd), ev.Events)
		}
	}
	return false
}

// drainCommands answers commands that arrive after the loop ended, so no
// session waits for it forever.
func (l *eventLoop) drainCommands() {
	l.mu.Lock()
	l.stopped = true
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, c := range cmds {
		if c.add != nil {
			c.add.result <- c.add.snapshot(ErrServerClosed)
		}
		if c.ack != nil {
			close(c.ack)
		}
	}
}

// commands runs queued commands; true means stop.
func (l *eventLoop) commands() bool {
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, c := range cmds {
		switch {
		case c.stop:
			seen := map[*loopSess]bool{}
			for _, ls := range l.byFD {
				if !seen[ls] {
					seen[ls] = true
					l.finish(ls, nil)
				}
			}
			return true
		case c.add != nil:
			ls := c.add
			l.byFD[int32(ls.cfd)] = ls
			l.byFD[int32(ls.ufd)] = ls
			e1 := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, ls.cfd, &syscall.EpollEvent{Events: readable, Fd: int32(ls.cfd)})
			e2 := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, ls.ufd, &syscall.EpollEvent{Events: readable, Fd: int32(ls.ufd)})
			if e1 != nil || e2 != nil {
				l.finish(ls, nil)
				continue
			}
			// Data handed over from the goroutine readers.
			l.pump(ls, &ls.c2u, ls.ufd, true)
			l.pump(ls, &ls.u2c, ls.cfd, false)
		case c.eject != nil:
			for _, ls := range l.byFD {
				if ls.s == c.eject {
					l.finish(ls, nil)
					break
				}
			}
			close(c.ack)
		}
	}
	return false
}

func (l *eventLoop) finish(ls *loopSess, err error) {
	if _, ok := l.byFD[int32(ls.cfd)]; !ok {
		return
	}
	delete(l.byFD, int32(ls.cfd))
	delete(l.byFD, int32(ls.ufd))
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, ls.cfd, nil)
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, ls.ufd, nil)
	ls.result <- ls.snapshot(err)
}

// snapshot is the relay state the session's goroutine resumes from.
func (ls *loopSess) snapshot(err error) loopResult {
	cp := func(b []byte) []byte { return append([]byte(nil), b...) }
	return loopResult{
		toUp: cp(ls.c2u.buf[ls.c2u.head:ls.c2u.parsed]), fromClient: cp(ls.c2u.buf[ls.c2u.parsed:ls.c2u.end]), needClient: ls.c2u.need,
		toClient: cp(ls.u2c.buf[ls.u2c.head:ls.u2c.parsed]), fromUp: cp(ls.u2c.buf[ls.u2c.parsed:ls.u2c.end]), needUp: ls.u2c.need,
		reroute: ls.reroute, err: err,
	}
}

// readable is the read interest. EPOLLRDHUP tells the loop that a peer's
// FIN waits behind the data a short read returned (see run).
const readable = syscall.EPOLLIN | syscall.EPOLLRDHUP

func (l *eventLoop) event(ls *loopSess, fd int, ev uint32) {
	if ev&(syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		// Reported whatever the interest, so a paused direction would spin
		// on it; the goroutine relay reads what is left and reports it.
		l.finish(ls, nil)
		return
	}
	if ev&syscall.EPOLLRDHUP != 0 {
		l.filled = true
	}
	if fd == ls.cfd {
		if ev&syscall.EPOLLOUT != 0 && ls.u2c.paused {
			l.flushDir(ls, &ls.u2c, ls.cfd, ls.ufd)
		}
		if ev&syscall.EPOLLIN != 0 && !ls.c2u.paused {
			l.readDir(ls, &ls.c2u, ls.cfd, ls.ufd, true)
		}
		return
	}
	if ev&syscall.EPOLLOUT != 0 && ls.c2u.paused {
		l.flushDir(ls, &ls.c2u, ls.ufd, ls.cfd)
	}
	if ev&syscall.EPOLLIN != 0 && !ls.u2c.paused {
		l.readDir(ls, &ls.u2c, ls.ufd, ls.cfd, false)
	}
}

func (l *eventLoop) interest(ls *loopSess) {
	if _, ok := l.byFD[int32(ls.cfd)]; !ok {
		return
	}
	var c, u uint32
	if !ls.c2u.paused {
		c |= readable
	} else {
		u |= syscall.EPOLLOUT
	}
	if !ls.u2c.paused {
		u |= readable
	} else {
		c |= syscall.EPOLLOUT
	}
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, ls.cfd, &syscall.EpollEvent{Events: c, Fd: int32(ls.cfd)})
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, ls.ufd, &syscall.EpollEvent{Events: u, Fd: int32(ls.ufd)})
}

func (l *eventLoop) readDir(ls *loopSess, d *loopDir, src, dst int, fromClient bool) {
	if d.head == d.end {
		d.head, d.parsed, d.end = 0, 0, 0
	} else if d.end == len(d.buf) && d.head > 0 {
		copy(d.buf, d.buf[d.head:d.end])
		d.end -= d.head
		d.parsed -= d.head
		d.head = 0
	}
	if d.end == len(d.buf) {
		// Full and nothing parsed to send: a header that does not fit
		// cannot happen (5 bytes); let the goroutine path sort it out.
		l.finish(ls, nil)
		return
	}
	n, err := rawnet.Read(src, d.buf[d.end:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return
	}
	if n <= 0 {
		// EOF or error: the goroutine path reports it properly.
		l.finish(ls, nil)
		return
	}
	if n == len(d.buf)-d.end {
		l.filled = true
	}
	d.end += n
	l.pump(ls, d, dst, fromClient)
}

// loopReroute calls the Rerouter on the loop's thread, where a panic would
// take down every session of the loop.
func loopReroute(s *Session) (yes, panicked bool) {
	defer func() {
		if recover() != nil {
			yes, panicked = false, true
		}
	}()
	return s.rr.Reroute(s), false
}

// pump parses what can be parsed and writes it to dst.
func (l *eventLoop) pump(ls *loopSess, d *loopDir, dst int, fromClient bool) {
	s := ls.s
	eject := false
	for d.parsed < d.end {
		if d.need > 0 {
			k := min(d.need, d.end-d.parsed)
			d.parsed += k
			d.need -= k
			continue
		}
		if d.end-d.parsed < 5 {
			break
		}
		typ := d.buf[d.parsed]
		ln := int32(binary.BigEndian.Uint32(d.buf[d.parsed+1:]))
		if ln < 4 || fromClient && (!frontendTypes[typ] || typ == 'p' || int(ln-4) > l.max) {
			eject = true
			break
		}
		body := int(ln) - 4
		if fromClient && s.track != nil && typ != 'X' {
			if s.relayIdle() {
				yes, panicked := loopReroute(s)
				if yes || panicked {
					// Leave before this message; the goroutine takes over
					// (after a panic it calls Reroute again, where a panic
					// ends only its own session).
					ls.reroute = yes
					eject = true
					break
				}
			}
			if (typ == 'P' || typ == 'C' || typ == 'Q') && d.end-d.parsed < 5+body {
				// Followed bodies are read whole; one bigger than the
				// buffer goes to the goroutine relay (a Query is followed
				// only for DEALLOCATE, never that big).
				if 5+body <= len(d.buf) {
					break
				}
				if typ != 'Q' {
					eject = true
					break
				}
			}
		}
		if fromClient {
			switch typ {
			case 'Q':
				if d.end-d.parsed >= 5+body && (body == 0 || d.buf[d.parsed+4+body] != 0) {
					eject = true
				}
				s.outstanding.Add(1)
			case 'S', 'F':
				s.outstanding.Add(1)
			case 'X':
				s.terminating.Store(true)
			}
			if eject {
				s.outstanding.Add(-1)
				break
			}
			if s.track != nil {
				var b []byte
				if d.end-d.parsed >= 5+body {
					b = d.buf[d.parsed+5 : d.parsed+5+body]
				}
				s.relayNote(typ, b)
			}
		} else if typ == 'Z' && body == 1 {
			if d.end-d.parsed < 6 {
				break
			}
			if s.track != nil {
				s.track.upstream(typ)
			}
			st := d.buf[d.parsed+5]
			s.upTx.Store(uint32(st))
			if s.outstanding.Add(-1) < 0 {
				s.outstanding.Store(0)
			}
			s.mu.Lock()
			shut := s.shuttingDown
			s.mu.Unlock()
			if shut && st == 'I' && s.outstanding.Load() == 0 {
				d.parsed += 6
				eject = true
				break
			}
		} else if (typ == '1' || typ == '3' || typ == 'E') && s.track != nil {
			s.track.upstream(typ)
		} else if typ == 'S' && s.track != nil {
			if d.end-d.parsed < 5+body && 5+body <= len(d.buf) {
				break // the whole ParameterStatus first
			}
			if d.end-d.parsed >= 5+body {
				s.track.param(d.buf[d.parsed+5 : d.parsed+5+body])
			}
		}
		d.parsed += 5
		d.need = body
	}
	l.flushDir(ls, d, dst, -1)
	if eject {
		l.finish(ls, nil)
	}
}

// flushDir writes parsed bytes of d to dst, pausing reads of d's source
// while dst cannot take more.
func (l *eventLoop) flushDir(ls *loopSess, d *loopDir, dst, _ int) {
	for d.head < d.parsed {
		n, err := rawnet.Write(dst, d.buf[d.head:d.parsed])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			if !d.paused {
				d.paused = true
				l.interest(ls)
			}
			return
		}
		if err != nil || n <= 0 {
			l.finish(ls, nil)
			return
		}
		d.head += n
	}
	if d.paused {
		d.paused = false
		l.interest(ls)
	}
}
