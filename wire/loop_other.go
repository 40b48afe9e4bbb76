//go:build !linux

package wire

// eventLoop is Linux-only; elsewhere every session uses the goroutine relay.
type eventLoop struct{}

type loopResult struct {
	toUp, toClient     []byte
	fromClient, fromUp []byte
	needClient, needUp int
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
