//go:build linux && cgo

#define _GNU_SOURCE
#include "cloop_linux.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CL_EVENTS 128
#define CL_READABLE (EPOLLIN | EPOLLRDHUP)

// The message types a client may send after startup, but for 'p' (a
// password message in the middle of a session), which the goroutine relay
// rejects.
static const uint8_t frontend[256] = {
	['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['H'] = 1, ['P'] = 1,
	['Q'] = 1, ['S'] = 1, ['X'] = 1, ['c'] = 1, ['d'] = 1, ['f'] = 1,
};

struct cl_dir {
	uint8_t *buf;
	uint32_t head, parsed, end; // written up to head, headers parsed up to parsed
	uint32_t need;              // body bytes of the current message still to pass
	int paused;                 // the destination is full: reads of the source wait
};

struct cl_sess {
	int cfd, ufd, notify;
	uint32_t cap;
	struct cl_dir c2u, u2c;
	int32_t outstanding; // Query, Sync and FunctionCall sent minus ReadyForQuery
	uint8_t up_tx;       // the upstream's last transaction status
	uint8_t terminating; // Terminate went upstream
	uint8_t ext;         // extended messages since the last Sync (tracked only)
	uint8_t track;
	uint8_t keep; // hand the session back at a Terminate while idle (upstream pooling)
	uint64_t seen; // reroute generation the session was last checked at
	uint64_t win;  // the last activity window it had events in (coalescing)
	_Atomic int reason;
	int registered;
	struct cl_sess *prev, *next; // registered sessions, for stop

	pthread_mutex_t lmu;
	uint8_t *log;
	uint32_t log_len, log_cap;
	int log_asked;
};

struct cl_cmd {
	cl_sess *s;
	int op;
};

struct cl_loop {
	int epfd, wake;
	uint32_t max;
	_Atomic uint64_t gen;
	pthread_t th;
	int started;
	cl_sess *live;

	// Coalescing (see run): sessions with events in the current window of
	// about a millisecond, and in the one before.
	int64_t coalesce_ns;
	uint64_t win;
	int active, prev_active;
	_Atomic uint64_t pauses;

	pthread_mutex_t mu;
	struct cl_cmd *q;
	int qlen, qcap;
	int stop_req, exited;
};

static uint32_t be32(const uint8_t *p) {
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// signal_fd adds one to an eventfd's counter.
static void signal_fd(int fd) {
	uint64_t one = 1;
	ssize_t r;
	do {
		r = write(fd, &one, sizeof one);
	} while (r < 0 && errno == EINTR);
}

static void notify(cl_sess *s) { signal_fd(s->notify); }

static uint64_t tag(cl_sess *s, int up) { return (uint64_t)(uintptr_t)s | (uint64_t)up; }

static void finish(cl_loop *l, cl_sess *s, int reason) {
	if (!s->registered) {
		return;
	}
	s->registered = 0;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, s->cfd, NULL);
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, s->ufd, NULL);
	if (s->prev) {
		s->prev->next = s->next;
	} else {
		l->live = s->next;
	}
	if (s->next) {
		s->next->prev = s->prev;
	}
	s->prev = s->next = NULL;
	atomic_store_explicit(&s->reason, reason, memory_order_release);
	notify(s);
}

static void interest(cl_loop *l, cl_sess *s) {
	if (!s->registered) {
		return;
	}
	struct epoll_event c = {0}, u = {0};
	if (!s->c2u.paused) {
		c.events |= CL_READABLE;
	} else {
		u.events |= EPOLLOUT;
	}
	if (!s->u2c.paused) {
		u.events |= CL_READABLE;
	} else {
		c.events |= EPOLLOUT;
	}
	c.data.u64 = tag(s, 0);
	u.data.u64 = tag(s, 1);
	epoll_ctl(l->epfd, EPOLL_CTL_MOD, s->cfd, &c);
	epoll_ctl(l->epfd, EPOLL_CTL_MOD, s->ufd, &u);
}

// flush writes the parsed bytes of d to dst, pausing reads of d's source
// while dst cannot take more.
static void flush(cl_loop *l, cl_sess *s, struct cl_dir *d, int dst) {
	while (d->head < d->parsed) {
		ssize_t n = send(dst, d->buf + d->head, d->parsed - d->head, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!d->paused) {
				d->paused = 1;
				interest(l, s);
			}
			return;
		}
		if (n <= 0) {
			finish(l, s, CL_IO);
			return;
		}
		d->head += (uint32_t)n;
	}
	if (d->paused) {
		d->paused = 0;
		interest(l, s);
	}
}

static int idle(cl_sess *s) { return !s->ext && s->outstanding == 0 && s->up_tx == 'I'; }

// looks_like_deallocate mirrors looksLikeDeallocate in reroute.go.
static int looks_like_deallocate(const uint8_t *b, uint32_t n) {
	static const char kw[] = "deallocate";
	uint32_t i = 0;
	while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) {
		i++;
	}
	if (n - i < sizeof kw - 1) {
		return 0;
	}
	for (uint32_t j = 0; j < sizeof kw - 1; j++) {
		if ((b[i + j] | 0x20) != kw[j]) {
			return 0;
		}
	}
	return 1;
}

// log_put appends an entry. It returns CL_LOG when the log is full (the
// caller hands the session back before the message, which is logged again
// once the log is drained), CL_FRAME when the entry could never fit.
static int log_put(cl_sess *s, uint8_t kind, uint8_t typ, const uint8_t *body, uint32_t n) {
	if ((uint64_t)CL_LOG_HDR + n > s->log_cap) {
		return CL_FRAME;
	}
	pthread_mutex_lock(&s->lmu);
	if (s->log_len + CL_LOG_HDR + n > s->log_cap) {
		pthread_mutex_unlock(&s->lmu);
		return CL_LOG;
	}
	uint8_t *p = s->log + s->log_len;
	p[0] = kind;
	p[1] = typ;
	p[2] = (uint8_t)n;
	p[3] = (uint8_t)(n >> 8);
	p[4] = (uint8_t)(n >> 16);
	p[5] = (uint8_t)(n >> 24);
	if (n) {
		memcpy(p + CL_LOG_HDR, body, n);
	}
	s->log_len += CL_LOG_HDR + n;
	int ask = !s->log_asked && s->log_len >= s->log_cap / 2;
	if (ask) {
		s->log_asked = 1;
	}
	pthread_mutex_unlock(&s->lmu);
	if (ask) {
		notify(s); // the session's goroutine drains the log meanwhile
	}
	return CL_RUNNING;
}

// pump parses what can be parsed in d, does the bookkeeping the goroutine
// relay does (relay.go), and writes the parsed bytes to dst. It mirrors the
// goroutine relay's checks so that a session behaves the same on either.
static void pump(cl_loop *l, cl_sess *s, struct cl_dir *d, int dst, int from_client) {
	int eject = CL_RUNNING;
	while (d->parsed < d->end) {
		if (d->need > 0) {
			uint32_t k = d->end - d->parsed;
			if (k > d->need) {
				k = d->need;
			}
			d->parsed += k;
			d->need -= k;
			continue;
		}
		uint32_t avail = d->end - d->parsed;
		if (avail < 5) {
			break;
		}
		const uint8_t *m = d->buf + d->parsed;
		uint8_t typ = m[0];
		int32_t ln = (int32_t)be32(m + 1);
		if (ln < 4 || (from_client && (!frontend[typ] || (uint32_t)(ln - 4) > l->max))) {
			eject = CL_FRAME;
			break;
		}
		uint32_t body = (uint32_t)ln - 4;
		int whole = (uint64_t)avail >= 5 + (uint64_t)body;
		int fits = 5 + (uint64_t)body <= s->cap;
		if (from_client) {
			if (typ == 'X' && s->keep && s->outstanding == 0 && s->up_tx == 'I') {
				// The upstream connection is kept for another client
				// instead of being passed the Terminate.
				eject = CL_TERMINATE;
				break;
			}
			if (s->track && typ != 'X') {
				if (idle(s) && s->seen != atomic_load_explicit(&l->gen, memory_order_acquire)) {
					eject = CL_REROUTE;
					break;
				}
				if ((typ == 'P' || typ == 'C' || typ == 'Q') && !whole) {
					// Followed bodies are read whole; one bigger than the
					// buffer goes to the goroutine relay (a Query is
					// followed only for DEALLOCATE, never that big).
					if (fits) {
						break;
					}
					if (typ != 'Q') {
						eject = CL_FRAME;
						break;
					}
				}
			}
			if (typ == 'Q' && whole && (body == 0 || m[4 + body] != 0)) {
				eject = CL_FRAME; // PostgreSQL keeps the connection; the goroutine relay says why
				break;
			}
			if (s->track) {
				const uint8_t *b = NULL;
				uint32_t bn = 0;
				switch (typ) {
				case 'P':
				case 'C':
					b = m + 5, bn = body;
					break;
				case 'Q':
					if (whole && looks_like_deallocate(m + 5, body)) {
						b = m + 5, bn = body;
					}
					break;
				}
				if (typ == 'P' || typ == 'C' || typ == 'Q' || typ == 'S' || typ == 'F') {
					eject = log_put(s, CL_LOG_CLIENT, typ, b, bn);
					if (eject != CL_RUNNING) {
						break;
					}
				}
				switch (typ) {
				case 'P':
				case 'C':
				case 'B':
				case 'D':
				case 'E':
				case 'H':
					s->ext = 1;
					break;
				case 'S':
					s->ext = 0;
					break;
				}
			}
			switch (typ) {
			case 'Q':
			case 'S':
			case 'F':
				s->outstanding++;
				break;
			case 'X':
				s->terminating = 1;
				break;
			}
		} else if (typ == 'Z' && body == 1) {
			if (avail < 6) {
				break;
			}
			if (s->track && (eject = log_put(s, CL_LOG_UPSTREAM, typ, NULL, 0)) != CL_RUNNING) {
				break;
			}
			s->up_tx = m[5];
			if (--s->outstanding < 0) {
				s->outstanding = 0;
			}
		} else if ((typ == '1' || typ == '3' || typ == 'E') && s->track) {
			if ((eject = log_put(s, CL_LOG_UPSTREAM, typ, NULL, 0)) != CL_RUNNING) {
				break;
			}
		} else if (typ == 'S' && s->track) {
			if (!whole && fits) {
				break; // the whole ParameterStatus first
			}
			if (whole && (eject = log_put(s, CL_LOG_UPSTREAM, typ, m + 5, body)) != CL_RUNNING) {
				break;
			}
		}
		d->parsed += 5;
		d->need = body;
	}
	flush(l, s, d, dst);
	if (eject != CL_RUNNING) {
		finish(l, s, eject);
	}
}

static void read_dir(cl_loop *l, cl_sess *s, struct cl_dir *d, int src, int dst, int from_client) {
	if (d->head == d->end) {
		d->head = d->parsed = d->end = 0;
	} else if (d->end == s->cap && d->head > 0) {
		memmove(d->buf, d->buf + d->head, d->end - d->head);
		d->end -= d->head;
		d->parsed -= d->head;
		d->head = 0;
	}
	if (d->end == s->cap) {
		// Full with nothing parsed to send: cannot happen for the messages
		// the loop follows (see pump); the goroutine relay sorts it out.
		finish(l, s, CL_IO);
		return;
	}
	ssize_t n = recv(src, d->buf + d->end, s->cap - d->end, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		return;
	}
	if (n <= 0) {
		// EOF or an error: the goroutine relay reads it again and reports it.
		finish(l, s, CL_IO);
		return;
	}
	d->end += (uint32_t)n;
	pump(l, s, d, dst, from_client);
}

static void event(cl_loop *l, cl_sess *s, int up, uint32_t ev) {
	if (ev & (EPOLLHUP | EPOLLERR)) {
		// Reported whatever the interest, so a paused direction would spin
		// on it; the goroutine relay reads what is left and reports it.
		finish(l, s, CL_IO);
		return;
	}
	struct cl_dir *out = up ? &s->c2u : &s->u2c; // written to this socket
	struct cl_dir *in = up ? &s->u2c : &s->c2u;  // read from it
	int fd = up ? s->ufd : s->cfd, peer = up ? s->cfd : s->ufd;
	if ((ev & EPOLLOUT) && out->paused) {
		flush(l, s, out, fd);
	}
	if (s->registered && (ev & CL_READABLE) && !in->paused) {
		read_dir(l, s, in, fd, peer, !up);
	}
}

static void add(cl_loop *l, cl_sess *s) {
	struct epoll_event c = {.events = CL_READABLE, .data.u64 = tag(s, 0)};
	struct epoll_event u = {.events = CL_READABLE, .data.u64 = tag(s, 1)};
	s->c2u.paused = s->u2c.paused = 0;
	atomic_store_explicit(&s->reason, CL_RUNNING, memory_order_relaxed);
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s->cfd, &c) < 0) {
		atomic_store_explicit(&s->reason, CL_IO, memory_order_release);
		notify(s);
		return;
	}
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s->ufd, &u) < 0) {
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, s->cfd, NULL);
		atomic_store_explicit(&s->reason, CL_IO, memory_order_release);
		notify(s);
		return;
	}
	s->registered = 1;
	s->prev = NULL;
	s->next = l->live;
	if (l->live) {
		l->live->prev = s;
	}
	l->live = s;
	// Bytes handed over (or left by an earlier stay) go first.
	pump(l, s, &s->c2u, s->ufd, 1);
	if (s->registered) {
		pump(l, s, &s->u2c, s->cfd, 0);
	}
}

// take_commands returns the queued commands; on stop, an empty queue marks
// the loop exited under the same lock, so no command is lost.
static struct cl_cmd *take_commands(cl_loop *l, int *n, int *stop) {
	pthread_mutex_lock(&l->mu);
	struct cl_cmd *q = l->q;
	*n = l->qlen;
	*stop = l->stop_req;
	l->q = NULL;
	l->qlen = l->qcap = 0;
	pthread_mutex_unlock(&l->mu);
	return q;
}

static void run_commands(cl_loop *l, struct cl_cmd *q, int n, int stopping) {
	for (int i = 0; i < n; i++) {
		cl_sess *s = q[i].s;
		switch (q[i].op) {
		case CL_OP_ADD:
			if (stopping) {
				atomic_store_explicit(&s->reason, CL_STOPPED, memory_order_release);
				notify(s);
			} else {
				add(l, s);
			}
			break;
		case CL_OP_EJECT:
			finish(l, s, CL_EJECTED);
			break;
		case CL_OP_FREE:
			cl_sess_free(s);
			break;
		}
	}
	free(q);
}

// Coalescing. With many sessions busy at once, waking for every one or two
// readiness events costs a context switch each, and the thread then
// competes for the CPU with the database and the clients it is waiting for.
// When at least CL_COALESCE_SESSIONS sessions had events within the last
// window and the last wait returned fewer than CL_COALESCE_EVENTS events,
// the thread sleeps coalesce_ns before waiting again, so that the next wait
// returns a batch. Sessions busy alone or in a small group (the latency
// case) never see the pause; under that load it is a small part of a
// statement's time in the queue of the database anyway.
#define CL_COALESCE_SESSIONS 16
#define CL_COALESCE_EVENTS 4
#define CL_WINDOW_SHIFT 20 // about a millisecond of CLOCK_MONOTONIC

static uint64_t window_now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) >> CL_WINDOW_SHIFT;
}

static void *run(void *arg) {
	cl_loop *l = arg;
	struct epoll_event ev[CL_EVENTS];
	int last = CL_EVENTS;
	for (;;) {
		if (l->coalesce_ns > 0 && last < CL_COALESCE_EVENTS &&
		    (l->prev_active >= CL_COALESCE_SESSIONS || l->active >= CL_COALESCE_SESSIONS)) {
			struct timespec ts = {l->coalesce_ns / 1000000000, l->coalesce_ns % 1000000000};
			nanosleep(&ts, NULL);
			atomic_fetch_add_explicit(&l->pauses, 1, memory_order_relaxed);
		}
		int n = epoll_wait(l->epfd, ev, CL_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			break;
		}
		last = n;
		uint64_t w = 0;
		if (l->coalesce_ns > 0) {
			w = window_now();
			if (w != l->win) {
				l->prev_active = w == l->win + 1 ? l->active : 0;
				l->active = 0;
				l->win = w;
			}
		}
		int woken = 0;
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == 0) {
				woken = 1;
				continue;
			}
			cl_sess *s = (cl_sess *)(uintptr_t)(ev[i].data.u64 & ~(uint64_t)1);
			if (s->win != w) {
				s->win = w;
				l->active++;
			}
			// Sessions handed back earlier in this batch are skipped;
			// none is freed before the batch ends (commands run after it).
			if (s->registered) {
				event(l, s, (int)(ev[i].data.u64 & 1), ev[i].events);
			}
		}
		if (woken) {
			uint64_t v;
			while (read(l->wake, &v, sizeof v) > 0) {
			}
			int cn, stop;
			struct cl_cmd *q = take_commands(l, &cn, &stop);
			run_commands(l, q, cn, 0);
			if (stop) {
				break;
			}
		}
	}
	while (l->live) {
		finish(l, l->live, CL_STOPPED);
	}
	for (;;) {
		int cn, stop;
		pthread_mutex_lock(&l->mu);
		if (l->qlen == 0) {
			l->exited = 1;
			pthread_mutex_unlock(&l->mu);
			break;
		}
		pthread_mutex_unlock(&l->mu);
		struct cl_cmd *q = take_commands(l, &cn, &stop);
		run_commands(l, q, cn, 1);
	}
	return NULL;
}

cl_loop *cl_loop_new(uint32_t max, int64_t coalesce_ns, int *err) {
	cl_loop *l = calloc(1, sizeof *l);
	if (!l) {
		*err = ENOMEM;
		return NULL;
	}
	l->max = max;
	l->coalesce_ns = coalesce_ns;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->epfd < 0 || l->wake < 0) {
		*err = errno;
		goto fail;
	}
	struct epoll_event w = {.events = EPOLLIN, .data.u64 = 0};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake, &w) < 0) {
		*err = errno;
		goto fail;
	}
	pthread_mutex_init(&l->mu, NULL);
	// The thread takes no signals: a handler of the Go runtime's would run
	// on a thread it does not know, and SIGPIPE is avoided with
	// MSG_NOSIGNAL.
	pthread_attr_t attr;
	sigset_t all;
	sigfillset(&all);
	pthread_attr_init(&attr);
	pthread_attr_setsigmask_np(&attr, &all);
	int rc = pthread_create(&l->th, &attr, run, l);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		*err = rc;
		pthread_mutex_destroy(&l->mu);
		goto fail;
	}
	l->started = 1;
	return l;
fail:
	if (l->epfd >= 0) {
		close(l->epfd);
	}
	if (l->wake >= 0) {
		close(l->wake);
	}
	free(l);
	return NULL;
}

static void wake(cl_loop *l) { signal_fd(l->wake); }

// Lazy commands (cl_send_lazy) wait for the thread's next wake-up, up to
// this many queued.
#define CL_LAZY_MAX 32

static int enqueue(cl_loop *l, cl_sess *s, int op, int lazy) {
	pthread_mutex_lock(&l->mu);
	if (l->exited) {
		pthread_mutex_unlock(&l->mu);
		return -1;
	}
	if (l->qlen == l->qcap) {
		int nc = l->qcap ? 2 * l->qcap : 16;
		struct cl_cmd *q = realloc(l->q, (size_t)nc * sizeof *q);
		if (!q) {
			pthread_mutex_unlock(&l->mu);
			return -2;
		}
		l->q = q;
		l->qcap = nc;
	}
	l->q[l->qlen++] = (struct cl_cmd){.s = s, .op = op};
	int now = !lazy || l->qlen >= CL_LAZY_MAX;
	pthread_mutex_unlock(&l->mu);
	if (now) {
		wake(l);
	}
	return 0;
}

int cl_send(cl_loop *l, cl_sess *s, int op) { return enqueue(l, s, op, 0); }

int cl_send_lazy(cl_loop *l, cl_sess *s, int op) { return enqueue(l, s, op, 1); }

void cl_loop_stop(cl_loop *l) {
	pthread_mutex_lock(&l->mu);
	l->stop_req = 1;
	pthread_mutex_unlock(&l->mu);
	wake(l);
	if (l->started) {
		pthread_join(l->th, NULL);
		l->started = 0;
	}
}

void cl_loop_free(cl_loop *l) {
	cl_loop_stop(l);
	close(l->epfd);
	close(l->wake);
	free(l->q);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

void cl_loop_bump(cl_loop *l) { atomic_fetch_add_explicit(&l->gen, 1, memory_order_acq_rel); }

uint64_t cl_loop_gen(cl_loop *l) { return atomic_load_explicit(&l->gen, memory_order_acquire); }

uint64_t cl_loop_pauses(cl_loop *l) { return atomic_load_explicit(&l->pauses, memory_order_relaxed); }

cl_sess *cl_sess_new(int cfd, int ufd, int notify, uint32_t bufsize, uint32_t logcap, int track, int *err) {
	cl_sess *s = calloc(1, sizeof *s);
	if (!s) {
		*err = ENOMEM;
		return NULL;
	}
	s->cfd = cfd;
	s->ufd = ufd;
	s->cap = bufsize;
	s->track = (uint8_t)(track != 0);
	s->log_cap = logcap;
	s->up_tx = 'I';
	s->notify = notify;
	s->c2u.buf = malloc(bufsize);
	s->u2c.buf = malloc(bufsize);
	s->log = s->track ? malloc(logcap) : NULL;
	if (!s->c2u.buf || !s->u2c.buf || (s->track && !s->log)) {
		*err = ENOMEM;
		free(s->c2u.buf);
		free(s->u2c.buf);
		free(s->log);
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->lmu, NULL);
	return s;
}

void cl_sess_free(cl_sess *s) {
	if (s->cfd >= 0) {
		close(s->cfd);
	}
	if (s->ufd >= 0) {
		close(s->ufd);
	}
	pthread_mutex_destroy(&s->lmu);
	free(s->c2u.buf);
	free(s->u2c.buf);
	free(s->log);
	free(s);
}

int cl_sess_cfd(cl_sess *s) { return s->cfd; }

int cl_sess_ufd(cl_sess *s) { return s->ufd; }

void cl_sess_disown(cl_sess *s) { s->cfd = s->ufd = -1; }

int cl_sess_fill(cl_sess *s, int dir, const void *p, uint32_t n) {
	struct cl_dir *d = dir ? &s->u2c : &s->c2u;
	if (n > s->cap - d->end) {
		return -1;
	}
	memcpy(d->buf + d->end, p, n);
	d->end += n;
	return 0;
}

void cl_sess_state(cl_sess *s, int32_t outstanding, uint8_t up_tx, uint8_t ext, uint8_t terminating, uint64_t seen) {
	s->outstanding = outstanding;
	s->up_tx = up_tx;
	s->ext = ext;
	s->terminating = terminating;
	s->seen = seen;
}

void cl_sess_set_seen(cl_sess *s, uint64_t seen) { s->seen = seen; }

void cl_sess_keep(cl_sess *s, int keep) { s->keep = (uint8_t)(keep != 0); }

int cl_sess_reason(cl_sess *s) { return atomic_load_explicit(&s->reason, memory_order_acquire); }

void cl_sess_result(cl_sess *s, cl_result *r) {
	r->reason = atomic_load_explicit(&s->reason, memory_order_acquire);
	r->c2u = s->c2u.buf;
	r->c2u_head = s->c2u.head;
	r->c2u_parsed = s->c2u.parsed;
	r->c2u_end = s->c2u.end;
	r->c2u_need = s->c2u.need;
	r->u2c = s->u2c.buf;
	r->u2c_head = s->u2c.head;
	r->u2c_parsed = s->u2c.parsed;
	r->u2c_end = s->u2c.end;
	r->u2c_need = s->u2c.need;
	r->outstanding = s->outstanding;
	r->up_tx = s->up_tx;
	r->terminating = s->terminating;
	r->ext = s->ext;
}

uint32_t cl_sess_take_log(cl_sess *s, uint8_t *dst, uint32_t cap) {
	pthread_mutex_lock(&s->lmu);
	uint32_t n = s->log_len;
	if (n > cap) {
		n = 0; // never: the caller's buffer is log_cap long
	} else {
		memcpy(dst, s->log, n);
		s->log_len = 0;
		s->log_asked = 0;
	}
	pthread_mutex_unlock(&s->lmu);
	return n;
}
