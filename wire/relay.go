package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
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
	if cfg.NoEventLoop || s.tls || cfg.IdleInTransactionTimeout > 0 || s.track != nil && !s.srv.rerouteNotified {
		return s.runRelay()
	}
	l := s.srv.eventLoop(s.pid)
	if l == nil {
		return s.runRelay()
	}
	res, ok := l.relay(s)
	if ok && res.terminate {
		// The client said goodbye at an idle point with nothing in
		// flight: the upstream connection goes to the pool (finish), with
		// no goroutine relay to start and stop for one message.
		s.keepUp = true
		return errTerminated
	}
	if ok {
		if len(res.fromClient) > 0 {
			s.cr.Reset(io.MultiReader(bytes.NewReader(res.fromClient), s.conn))
		}
		if len(res.fromUp) > 0 {
			s.up.r.Reset(io.MultiReader(bytes.NewReader(res.fromUp), s.up.conn))
		}
		if res.reroute {
			return s.leaveLoop(res)
		}
		s.pendingUp, s.pendingCl = res.toUp, res.toClient
		s.needC, s.needU = res.needClient, res.needUp
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
	if errors.Is(err, errLeaveRelay) {
		return s.stopRelayUpstream(upErr)
	}
	if errors.Is(err, errKeepUpstream) {
		// The upstream reader returns at a message boundary; the
		// connection goes to the pool (finish) if it did so cleanly.
		s.keepUp = errors.Is(s.stopRelayUpstream(upErr), errLeaveRelay)
		if !s.keepUp {
			s.up.conn.Close()
		}
		return errTerminated
	}
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

// stopRelayUpstream stops the upstream reader of a relay being left for the
// routed path: a read deadline in the past interrupts its wait, it finishes
// the message in hand and returns at a message boundary. Bytes it read
// ahead stay in the session's buffered readers.
func (s *Session) stopRelayUpstream(upErr chan error) error {
	if err := s.up.w.Flush(); err != nil {
		s.up.conn.Close()
		<-upErr
		return s.upstreamFailed(err)
	}
	s.leaving.Store(true)
	_ = s.up.conn.SetReadDeadline(time.Now())
	uerr := <-upErr
	s.leaving.Store(false)
	_ = s.up.conn.SetReadDeadline(time.Time{})
	if !errors.Is(uerr, errLeaveRelay) {
		if uerr == nil {
			uerr = io.EOF
		}
		return uerr
	}
	return errLeaveRelay
}

// relayClient copies client messages upstream until Terminate, an error,
// or shutdown. With a Rerouter it also follows prepared statements and,
// at an idle point, returns errLeaveRelay before the next message when the
// Rerouter asks for re-routing.
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
		if s.track != nil && s.relayIdle() {
			if t, err := r.Peek(1); err == nil && t[0] != 'X' {
				yes, err := s.relayReroute()
				if err != nil {
					return err
				}
				if yes {
					return errLeaveRelay
				}
			}
		}
		typ, n, err := readHeader(r, max)
		if err != nil {
			return err
		}
		if !frontendTypes[typ] || typ == 'p' {
			return fmt.Errorf("%w: invalid frontend message type %d", ErrBadMessage, typ)
		}
		if s.track != nil {
			if typ == 'P' || typ == 'C' {
				if err := s.relayTracked(w, r, typ, n); err != nil {
					if errors.Is(err, io.ErrUnexpectedEOF) || isReadErr(err) {
						return err
					}
					return s.upstreamFailed(err)
				}
				continue
			}
			if typ != 'Q' || n >= r.Size() {
				s.relayNote(typ, nil)
			}
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
			if s.track != nil {
				s.relayNote(typ, body)
			}
		}
		if typ == 'X' && s.srv.pool != nil && s.outstanding.Load() == 0 && byte(s.upTx.Load()) == 'I' {
			if _, err := r.Discard(n); err != nil {
				return err
			}
			return errKeepUpstream
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
	var lost *upLostError
	if errors.As(err, &lost) {
		return lost
	}
	if s.upOptional.Load() {
		// Routed and opted in: the session survives (recoverLost).
		return newUpLost(err)
	}
	return fatalf(CodeConnectionFailure, "upstream connection failed: %v", err)
}

// relayTracked relays a Parse or Close whose body the relay follows.
func (s *Session) relayTracked(w *bufio.Writer, r *bufio.Reader, typ byte, n int) error {
	if n <= r.Size() {
		body, err := r.Peek(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		s.relayNote(typ, body)
		return relayMessage(w, r, typ, n)
	}
	body, err := readBody(r, nil, n)
	if err != nil {
		return err
	}
	s.relayNote(typ, body)
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(n+4))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err = w.Write(body)
	return err
}

// relayUpstream copies upstream messages to the client, tracking the
// transaction status from ReadyForQuery (and, with a Rerouter, the
// responses that settle prepared statements).
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
		if r.Buffered() == 0 || s.leaving.Load() {
			if err := w.Flush(); err != nil {
				s.up.conn.Close()
				return err
			}
			if s.leaving.Load() {
				return errLeaveRelay
			}
		}
		typ, n, err := readHeader(r, 0)
		if err != nil && s.upRetry(err) {
			if err := w.Flush(); err != nil {
				s.up.conn.Close()
				return err
			}
			return errLeaveRelay
		}
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
		if s.track != nil {
			switch typ {
			case '1', '3', 'E', 'Z':
				// Before outstanding drops at 'Z': at an idle point the
				// statements are settled.
				s.track.upstream(typ)
			case 'S':
				if n <= r.Size() {
					body, err := r.Peek(n)
					for err != nil && s.upRetry(err) {
						body, err = r.Peek(n)
					}
					if err == nil {
						s.track.param(body)
					}
				}
			}
		}
		if typ == 'Z' && n == 1 {
			st, err := r.Peek(1)
			for err != nil && s.upRetry(err) {
				st, err = r.Peek(1)
			}
			if err != nil {
				s.conn.Close()
				return err
			}
			s.upTx.Store(uint32(st[0]))
			if s.outstanding.Add(-1) < 0 {
				s.outstanding.Store(0)
			}
		}
		if err := relayMessageRetry(w, r, typ, n, s.upRetry); err != nil {
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
