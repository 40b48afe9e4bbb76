package wire

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// frontendTypes marks the message types a client may send after startup.
var frontendTypes = func() (t [256]bool) {
	for _, c := range []byte{'B', 'C', 'D', 'E', 'F', 'H', 'P', 'Q', 'S', 'X', 'c', 'd', 'f', 'p'} {
		t[c] = true
	}
	return t
}()

// readHeader reads a message's type and body length, checking the length
// against max before anything is allocated.
func readHeader(r *bufio.Reader, max int) (byte, int, error) {
	hdr, err := r.Peek(5)
	if err != nil {
		if len(hdr) > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	typ := hdr[0]
	l := int32(binary.BigEndian.Uint32(hdr[1:5]))
	if _, err := r.Discard(5); err != nil {
		return 0, 0, err
	}
	if l < 4 {
		return typ, 0, fmt.Errorf("%w: invalid message length %d", ErrBadMessage, l)
	}
	n := int(l) - 4
	if max > 0 && n > max {
		return typ, 0, fmt.Errorf("%w: %d bytes (limit %d)", ErrMessageTooBig, n, max)
	}
	return typ, n, nil
}

// readBody reads n bytes into buf (grown if needed) and returns the slice.
func readBody(r *bufio.Reader, buf []byte, n int) ([]byte, error) {
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	return buf, nil
}

// relayMessage copies one message whose header was read from r to w,
// without copying through an intermediate buffer when it fits in r's.
func relayMessage(w *bufio.Writer, r *bufio.Reader, typ byte, n int) error {
	return relayMessageRetry(w, r, typ, n, nil)
}

// relayMessageRetry is relayMessage that goes on reading after a read
// error for which retry returns true.
func relayMessageRetry(w *bufio.Writer, r *bufio.Reader, typ byte, n int, retry func(error) bool) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(n+4))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	for n > 0 {
		chunk := n
		if b := r.Buffered(); b == 0 {
			if _, err := r.Peek(1); err != nil {
				if retry != nil && retry(err) {
					continue
				}
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			continue
		} else if chunk > b {
			chunk = b
		}
		p, _ := r.Peek(chunk)
		if _, err := w.Write(p); err != nil {
			return err
		}
		if _, err := r.Discard(chunk); err != nil {
			return err
		}
		n -= chunk
	}
	return nil
}

// messageBuffered reports whether a whole next message is already in r.
func messageBuffered(r *bufio.Reader) bool {
	b := r.Buffered()
	if b < 5 {
		return false
	}
	hdr, _ := r.Peek(5)
	return b >= 1+int(binary.BigEndian.Uint32(hdr[1:5]))
}
