// The relay event loop's C half: a thread with its own epoll set that
// relays plain-TCP passthrough sessions between client and upstream sockets
// it owns, parsing only message headers. See cloop_linux.go for why it is C.
#ifndef KVPROXY_WIRE_CLOOP_H
#define KVPROXY_WIRE_CLOOP_H

#include <stdint.h>

// Why the loop handed a session back (cl_result.reason).
enum {
	CL_RUNNING = 0,
	CL_EJECTED = 1, // Go asked for it (cl_send CL_OP_EJECT)
	CL_IO = 2,      // EOF, hang-up, a socket error or a full buffer
	CL_FRAME = 3,   // a message the goroutine relay handles (or rejects)
	CL_REROUTE = 4, // an idle point after the reroute generation moved
	CL_LOG = 5,     // the event log is full; drain it and re-add
	CL_STOPPED = 6, // the loop ended
	// The client sent Terminate while the session was idle and keeps its
	// upstream connection (cl_sess_keep); the Terminate is the first of the
	// bytes read from the client and not passed on.
	CL_TERMINATE = 7,
};

// Commands for cl_send.
enum {
	CL_OP_ADD = 1,
	CL_OP_EJECT = 2,
	CL_OP_FREE = 3,
};

// Event log entries (tracked sessions only): kind, message type, body
// length (little endian), body. Client messages are logged with their body
// where the Rerouter's tracking needs it; upstream 'S' is a ParameterStatus.
enum {
	CL_LOG_CLIENT = 'c',
	CL_LOG_UPSTREAM = 'u',
	CL_LOG_HDR = 6,
};

typedef struct cl_loop cl_loop;
typedef struct cl_sess cl_sess;

typedef struct {
	int reason;
	const uint8_t *c2u, *u2c;
	uint32_t c2u_head, c2u_parsed, c2u_end, c2u_need;
	uint32_t u2c_head, u2c_parsed, u2c_end, u2c_need;
	int32_t outstanding;
	uint8_t up_tx, terminating, ext;
} cl_result;

// cl_loop_new starts a loop thread. max is the largest client message
// body the loop passes; coalesce_ns is the pause before a wait when many
// sessions are busy (<= 0: none; see run); err receives errno on failure.
cl_loop *cl_loop_new(uint32_t max, int64_t coalesce_ns, int *err);
// cl_loop_stop hands every session back (CL_STOPPED) and joins the thread.
void cl_loop_stop(cl_loop *l);
void cl_loop_free(cl_loop *l);
// cl_loop_bump moves the reroute generation: every tracked session is
// handed back (CL_REROUTE) at its next idle point.
void cl_loop_bump(cl_loop *l);
uint64_t cl_loop_gen(cl_loop *l);
// cl_loop_pauses counts the coalescing pauses so far.
uint64_t cl_loop_pauses(cl_loop *l);

// cl_sess_new takes ownership of cfd and ufd (non-blocking sockets); the
// loop signals notify, an eventfd that stays the caller's, whenever it
// hands the session back or wants its log drained. NULL on failure (errno
// in *err).
cl_sess *cl_sess_new(int cfd, int ufd, int notify, uint32_t bufsize, uint32_t logcap, int track, int *err);
// cl_sess_free closes the sockets (unless disowned).
void cl_sess_free(cl_sess *s);
int cl_sess_cfd(cl_sess *s);
int cl_sess_ufd(cl_sess *s);
// cl_sess_disown gives the session's descriptors to the caller: free no
// longer closes them.
void cl_sess_disown(cl_sess *s);
// cl_sess_fill appends bytes already read to a direction's buffer (dir 0:
// client to upstream, 1: upstream to client); -1 if they do not fit.
int cl_sess_fill(cl_sess *s, int dir, const void *p, uint32_t n);
void cl_sess_state(cl_sess *s, int32_t outstanding, uint8_t up_tx, uint8_t ext, uint8_t terminating, uint64_t seen);
void cl_sess_set_seen(cl_sess *s, uint64_t seen);
// cl_sess_keep makes the loop hand the session back (CL_FRAME) before a
// Terminate that arrives while it is idle, instead of relaying it.
void cl_sess_keep(cl_sess *s, int keep);
// cl_sess_reason is CL_RUNNING while the loop owns the session.
int cl_sess_reason(cl_sess *s);
void cl_sess_result(cl_sess *s, cl_result *r);
// cl_sess_take_log moves up to cap bytes of whole log entries to dst.
uint32_t cl_sess_take_log(cl_sess *s, uint8_t *dst, uint32_t cap);

// cl_send queues a command; -1 when the loop has exited (the caller then
// frees the session itself), -2 when out of memory.
int cl_send(cl_loop *l, cl_sess *s, int op);
// cl_send_lazy queues a command that can wait (CL_OP_FREE) without waking
// the thread, which runs it at its next wake-up; a few such commands are
// kept waiting at most (a freed session's buffers are not small).
int cl_send_lazy(cl_loop *l, cl_sess *s, int op);

#endif
