package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// upPool keeps the upstream connections of sessions that ended cleanly, so
// that the next session with the same startup parameters skips a backend's
// start (a fork, authentication and cold caches in PostgreSQL) and the
// previous one's exit. This is PgBouncer's session pooling: a backend
// serves one client at a time, and DISCARD ALL clears what a client left
// behind (settings, prepared statements, temporary tables, LISTEN, advisory
// locks) before the next one gets it.
//
// Only connections that were idle when their client said Terminate are
// kept; anything unusual closes them instead.
type upPool struct {
	size    int
	idle    time.Duration
	closeUp func(*upstreamConn) // closes a connection the pool lets go of (Server.closeUp)
	onIdle  func(delta int)     // as connections enter (+1) and leave (-1) it

	mu     sync.Mutex
	conns  map[string][]pooledUp // by startup parameters; the newest last
	n      int
	closed bool
	timer  *time.Timer
}

type pooledUp struct {
	up    *upstreamConn
	since time.Time
}

func newUpPool(size int, idle time.Duration, closeUp func(*upstreamConn), onIdle func(int)) *upPool {
	return &upPool{size: size, idle: idle, closeUp: closeUp, onIdle: onIdle, conns: map[string][]pooledUp{}}
}

// poolKey is the identity of an upstream connection: the parameters its
// startup packet carried, which DISCARD ALL resets the session to.
func poolKey(params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		switch k {
		case "user", "database", "replication":
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(params[k])
		b.WriteByte(0)
	}
	return b.String()
}

// get returns a live idle connection for key, or nil. Connections found
// dead (the server closed them, or sent something unasked) or too old are
// closed.
func (p *upPool) get(key string) *upstreamConn {
	now := time.Now()
	for {
		p.mu.Lock()
		l := p.conns[key]
		if len(l) == 0 {
			p.mu.Unlock()
			return nil
		}
		c := l[len(l)-1]
		p.conns[key] = l[:len(l)-1]
		if len(l) == 1 {
			delete(p.conns, key)
		}
		p.n--
		p.mu.Unlock()
		p.onIdle(-1)
		if now.Sub(c.since) < p.idle && idleAlive(c.up) {
			return c.up
		}
		p.closeUp(c.up)
	}
}

// idleAlive reports whether an idle upstream connection is still open and
// has nothing to say: an idle backend sends nothing unless it is ending
// (FATAL after a restart or pg_terminate_backend, then EOF).
//
// It peeks at the socket without blocking (a read with a deadline in the
// past never reaches the socket). Under TLS, any byte is a record the
// backend sent, which an idle one does not.
func idleAlive(up *upstreamConn) bool {
	if up.r.Buffered() > 0 || up.closed.Load() {
		return false
	}
	c := up.conn
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	cerr := rc.Control(func(fd uintptr) {
		var b [1]byte
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EINTR {
				continue
			}
			alive = err == syscall.EAGAIN
			return
		}
	})
	return cerr == nil && alive
}

// put keeps up for key; false when the pool is full or closed (the caller
// closes up).
func (p *upPool) put(key string, up *upstreamConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.n >= p.size {
		return false
	}
	p.conns[key] = append(p.conns[key], pooledUp{up: up, since: time.Now()})
	p.n++
	p.onIdle(1)
	if p.timer == nil {
		p.timer = time.AfterFunc(p.idle, p.sweep)
	}
	return true
}

// sweep closes connections idle for longer than p.idle. It runs on a timer
// while the pool holds any, not on a goroutine of its own.
func (p *upPool) sweep() {
	now := time.Now()
	var old []*upstreamConn
	p.mu.Lock()
	var next time.Duration
	for k, l := range p.conns {
		keep := l[:0]
		for _, c := range l {
			if age := now.Sub(c.since); age >= p.idle {
				old = append(old, c.up)
			} else {
				keep = append(keep, c)
				if left := p.idle - age; next == 0 || left < next {
					next = left
				}
			}
		}
		if len(keep) == 0 {
			delete(p.conns, k)
		} else {
			p.conns[k] = keep
		}
	}
	p.n -= len(old)
	if p.n > 0 && !p.closed {
		p.timer = time.AfterFunc(next, p.sweep)
	} else {
		p.timer = nil
	}
	p.mu.Unlock()
	for _, up := range old {
		p.onIdle(-1)
		p.closeUp(up)
	}
}

// close closes every idle connection and keeps no more.
func (p *upPool) close() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	conns := p.conns
	p.conns = map[string][]pooledUp{}
	p.n = 0
	p.mu.Unlock()
	for _, l := range conns {
		for _, c := range l {
			p.onIdle(-1)
			p.closeUp(c.up)
		}
	}
}

func (p *upPool) idleCount() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// terminate ends an upstream connection politely (Terminate, then close);
// false if it was closed already.
func (u *upstreamConn) terminate() bool {
	if !u.closed.CompareAndSwap(false, true) {
		return false
	}
	_ = u.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = u.conn.Write([]byte{'X', 0, 0, 0, 4})
	u.conn.Close()
	return true
}

// discardMsg is Sync (ending any extended-protocol exchange the client left
// open, errors included) and then the simple query DISCARD ALL.
var discardMsg = func() []byte {
	q := "DISCARD ALL\x00"
	b := []byte{'S', 0, 0, 0, 4, 'Q', 0, 0, 0, byte(4 + len(q))}
	return append(b, q...)
}()

// reset readies an idle upstream connection for another client: it runs
// DISCARD ALL, after a Sync when the client may have left an
// extended-protocol exchange open (sync), and reads up to the last
// ReadyForQuery. Any error, a transaction status other than idle, or bytes
// after it mean the connection is not reused. DISCARD ALL takes every
// setting back to its session default, so what the connection reported at
// its start (u.initial) holds again.
func (u *upstreamConn) reset(timeout time.Duration, sync bool) error {
	_ = u.conn.SetDeadline(time.Now().Add(timeout))
	defer u.conn.SetDeadline(time.Time{})
	if u.w.Buffered() > 0 {
		return errors.New("unsent bytes")
	}
	msg, want := discardMsg, 2
	if !sync {
		msg, want = discardMsg[5:], 1
	}
	if _, err := u.conn.Write(msg); err != nil {
		return err
	}
	ready, discarded := 0, false
	for ready < want {
		typ, n, err := readHeader(u.r, 1<<20)
		if err != nil {
			return err
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(u.r, body); err != nil {
			return err
		}
		switch typ {
		case 'Z':
			ready++
			if len(body) != 1 || body[0] != 'I' {
				return fmt.Errorf("transaction status %q after reset", body)
			}
		case 'C':
			discarded = bytes.Equal(body, []byte("DISCARD ALL\x00"))
		case 'S':
			// A reported setting going back to its session default.
		case 'E':
			return errors.New("error during reset")
		case 'N', 'A':
			// Notices, and notifications queued before UNLISTEN: the
			// client they were for is gone.
		default:
			return fmt.Errorf("unexpected message %q during reset", typ)
		}
	}
	if !discarded {
		return errors.New("DISCARD ALL did not complete")
	}
	if u.r.Buffered() > 0 {
		return errors.New("bytes after reset")
	}
	return nil
}
