package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// runRelayLoop relays on the server's event loop when the session
// qualifies (plain TCP, no idle-in-transaction timeout), then continues, or
// starts, with the goroutine relay.
func (s *Session) runRelayLoop() error {
	cfg := &s.srv.cfg
	if cfg.NoEventLoop || s.tls || cfg.IdleInTransactionTimeout > 0 {
		return s.runRelay()
	}
	l := s.srv.eventLoop(s.pid)
	if l == nil {
		return s.runRelay()
	}
	res, ok := l.relay(s)
	if ok {
		s.pendingUp, s.pendingCl = res.toUp, res.toClient
		s.needC, s.needU = res.needClient, res.needUp
		if len(res.fromClient) > 0 {
			s.cr.Reset(io.MultiReader(bytes.NewReader(res.fromClient), s.conn))
		}
		if len(res.fromUp) > 0 {
			s.up.r.Reset(io.MultiReader(bytes.NewReader(res.fromUp), s.up.conn))
		}
	}
	return s.runRelay()
}

// runRelay is the passthrough fast path: one goroutine per direction, each
// copying whole messages between buffered connections with no decoding
// beyond the 5-byte header, and flushing only when its input has nothing
// more buffered.
func (s *Session) runRelay() error {
	upErr := make(chan error, 1)
	go func() { upErr <- s.relayUpstream() }()
	err := s.relayClient()
	// From here on an upstream read error is expected, not news for the client.
	s.terminating.Store(true)
	if errors.Is(err, errTerminated) || errors.Is(err, errShutdown) {
		// Upstream ends its side after Terminate; wait for the last bytes.
		_ = s.up.conn.SetReadDeadline(time.Now().Add(fatalWriteWait))
	} else {
		s.up.conn.Close()
	}
	uerr := <-upErr
	if err == nil || errors.Is(err, errTerminated) {
		return err
	}
	if uerr != nil && errors.Is(err, net.ErrClosed) {
		// The upstream side failed first and closed the client connection.
		return uerr
	}
	return err
}

// relayClient copies client messages upstream until Terminate, an error,
// or shutdown.
func (s *Session) relayClient() error {
	r, w, max := s.cr, s.up.w, s.srv.cfg.MaxMessageSize
	if len(s.pendingUp) > 0 {
		if _, err := w.Write(s.pendingUp); err != nil {
			return s.upstreamFailed(err)
		}
	}
	if s.needC > 0 {
		if _, err := io.CopyN(w, r, int64(s.needC)); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	for {
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return s.upstreamFailed(err)
			}
			if err := s.waitClient(); err != nil {
				if errors.Is(err, errShutdown) {
					s.terminating.Store(true)
					_, _ = w.Write([]byte{'X', 0, 0, 0, 4})
					_ = w.Flush()
				}
				return err
			}
		}
		typ, n, err := readHeader(r, max)
		if err != nil {
			return err
		}
		if !frontendTypes[typ] || typ == 'p' {
			return fmt.Errorf("%w: invalid frontend message type %d", ErrBadMessage, typ)
		}
		if typ == 'Q' && n < r.Size() {
			// The only body the relay checks: PostgreSQL reports an
			// unterminated query string but keeps the connection.
			body, err := r.Peek(n)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			if n == 0 || body[n-1] != 0 {
				return fmt.Errorf("%w: invalid string in message", ErrBadMessage)
			}
		}
		switch typ {
		case 'Q', 'S', 'F':
			s.outstanding.Add(1)
		case 'X':
			s.terminating.Store(true)
		}
		if err := relayMessage(w, r, typ, n); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || r.Buffered() == 0 && isReadErr(err) {
				return err
			}
			return s.upstreamFailed(err)
		}
		if typ == 'X' {
			_ = w.Flush()
			return errTerminated
		}
		if (typ == 'S' || typ == 'Q' || typ == 'H') && !messageBuffered(r) {
			if err := w.Flush(); err != nil {
				return s.upstreamFailed(err)
			}
		}
	}
}

func isReadErr(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

func (s *Session) upstreamFailed(err error) error {
	return fatalf(CodeConnectionFailure, "upstream connection failed: %v", err)
}

// relayUpstream copies upstream messages to the client, tracking the
// transaction status from ReadyForQuery.
func (s *Session) relayUpstream() error {
	r, w := s.up.r, s.cw
	if len(s.pendingCl) > 0 {
		if _, err := w.Write(s.pendingCl); err != nil {
			s.up.conn.Close()
			return err
		}
	}
	if s.needU > 0 {
		if _, err := io.CopyN(w, r, int64(s.needU)); err != nil {
			s.conn.Close()
			return err
		}
	}
	for {
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				s.up.conn.Close()
				return err
			}
		}
		typ, n, err := readHeader(r, 0)
		if err != nil {
			if s.terminating.Load() {
				_ = w.Flush()
				return nil
			}
			// The client is told, then the client side is unblocked.
			s.sendFatal(s.upstreamFailed(err))
			s.conn.Close()
			return err
		}
		if typ == 'Z' && n == 1 {
			st, err := r.Peek(1)
			if err != nil {
				s.conn.Close()
				return err
			}
			s.upTx.Store(uint32(st[0]))
			if s.outstanding.Add(-1) < 0 {
				s.outstanding.Store(0)
			}
		}
		if err := relayMessage(w, r, typ, n); err != nil {
			s.conn.Close()
			s.up.conn.Close()
			return err
		}
		if typ == 'Z' {
			if r.Buffered() == 0 {
				if err := w.Flush(); err != nil {
					s.up.conn.Close()
					return err
				}
			}
			s.wake(byte(s.upTx.Load()))
		}
	}
}
