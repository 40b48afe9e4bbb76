//go:build linux && cgo

package wire

/*
#include "cloop_linux.h"
*/
import "C"

// Why the thread handed sockets back, for FuzzRelayLoop.
const (
	loopReasonIO    = C.CL_IO
	loopReasonFrame = C.CL_FRAME
)

// rawRelay is what relayRaw saw: the thread's result, why it handed the
// sockets back, and its event log.
type rawRelay struct {
	res    loopResult
	reason int
	log    []byte
}

// relayRaw relays between two sockets that are not a session's until the
// thread hands them back for good, re-adding them after a full log. It
// takes cfd and ufd. It is the C framer's harness for FuzzRelayLoop (test
// files cannot use cgo); nothing else calls it.
func (l *eventLoop) relayRaw(cfd, ufd int, track bool) (rawRelay, error) {
	ls, err := newLoopSess(l, cfd, ufd, track)
	if err != nil {
		return rawRelay{}, err
	}
	C.cl_sess_state(ls.p, 0, 'I', 0, 0, C.cl_loop_gen(l.p))
	if C.cl_send(l.p, ls.p, C.CL_OP_ADD) != 0 {
		C.cl_sess_free(ls.p)
		l.putNotifier(ls.notify)
		return rawRelay{}, errNoEventLoop
	}
	var out rawRelay
	for {
		reason := ls.next(l, func(log []byte) { out.log = append(out.log, log...) })
		if reason == C.CL_RUNNING || reason == C.CL_LOG && C.cl_send(l.p, ls.p, C.CL_OP_ADD) == 0 {
			continue
		}
		out.reason = int(reason)
		break
	}
	snapshot(ls.p, &out.res)
	ls.free(l)
	return out, nil
}
