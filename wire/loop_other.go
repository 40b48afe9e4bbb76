//go:build !linux

package wire

import "errors"

var errNoEventLoop = errors.New("wire: no event loop on this platform")

// eventLoop is Linux-only; elsewhere every session uses the goroutine relay.
type eventLoop struct{}

type loopResult struct {
	toUp, toClient     []byte
	fromClient, fromUp []byte
	needClient, needUp int
	reroute            bool
	err                error
}

func newEventLoop(int) (*eventLoop, error)           { return nil, errNoEventLoop }
func (*eventLoop) relay(*Session) (loopResult, bool) { return loopResult{}, false }
func (*eventLoop) eject(*Session)                    {}
func (*eventLoop) send(loopCmd) bool                 { return false }
func (*eventLoop) stop()                             {}

type loopCmd struct {
	eject *Session
	ack   chan struct{}
}
