//go:build linux && cgo

package wire

/*
#include "cloop_linux.h"
*/
import "C"

import (
	"os"
	"syscall"
	"unsafe"
)

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
	t := 0
	if track {
		t = 1
	}
	var errno C.int
	p := C.cl_sess_new(C.int(cfd), C.int(ufd), loopBufSize, loopLogSize, C.int(t), &errno)
	if p == nil {
		return rawRelay{}, syscall.Errno(errno)
	}
	nfd, err := dupCloexec(int(C.cl_sess_notify_fd(p)))
	if err != nil {
		C.cl_sess_free(p)
		return rawRelay{}, err
	}
	_ = syscall.SetNonblock(nfd, true)
	notify := os.NewFile(uintptr(nfd), "relay-notify")
	defer notify.Close()
	C.cl_sess_state(p, 0, 'I', 0, 0, C.cl_loop_gen(l.p))
	if C.cl_send(l.p, p, C.CL_OP_ADD) != 0 {
		C.cl_sess_free(p)
		return rawRelay{}, errNoEventLoop
	}
	var out rawRelay
	buf := make([]byte, loopLogSize)
	var ev [8]byte
	for {
		if _, err := notify.Read(ev[:]); err != nil {
			return rawRelay{}, err // leaks the session; a harness failure
		}
		reason := int(C.cl_sess_reason(p))
		if track {
			n := C.cl_sess_take_log(p, (*C.uint8_t)(unsafe.Pointer(&buf[0])), C.uint32_t(len(buf)))
			out.log = append(out.log, buf[:n]...)
		}
		if reason == C.CL_RUNNING {
			continue
		}
		if reason == C.CL_LOG && C.cl_send(l.p, p, C.CL_OP_ADD) == 0 {
			continue
		}
		out.reason = reason
		break
	}
	snapshot(p, &out.res)
	if C.cl_send(l.p, p, C.CL_OP_FREE) != 0 {
		C.cl_sess_free(p)
	}
	return out, nil
}
