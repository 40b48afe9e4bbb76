//go:build !linux || !cgo

package wire

import (
	"errors"
	"time"
)

var errNoEventLoop = errors.New("wire: no event loop on this platform")

// eventLoop needs Linux and cgo; elsewhere every session uses the
// goroutine relay.
type eventLoop struct{}

type loopSess struct{ left chan struct{} }

func (*loopSess) ejectLocked() {}

type loopResult struct {
	toUp, toClient     []byte
	fromClient, fromUp []byte
	needClient, needUp int
	reroute, terminate bool
}

func newEventLoop(int, time.Duration) (*eventLoop, error) { return nil, errNoEventLoop }
func (*eventLoop) relay(*Session) (loopResult, bool)      { return loopResult{}, false }
func (*eventLoop) eject(*Session)                         {}
func (*eventLoop) ejectLocked(*Session) chan struct{}     { return nil }
func (*eventLoop) stop()                                  {}
func (*eventLoop) bump()                                  {}
