package migrate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Progress shows how far a backfill or verify is. A nil *Progress shows
// nothing.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	log      *slog.Logger
	what     string
	every    time.Duration
	start    time.Time
	last     time.Time
	lastDone int64
	rate     float64
}

// NewProgress returns a progress display for what ("backfill", "verify").
// On a terminal (tty) it redraws one bar line on w with rows, rate and ETA;
// otherwise it logs a line every interval.
func NewProgress(what string, w io.Writer, tty bool, log *slog.Logger, interval time.Duration) *Progress {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	if tty {
		interval = 200 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	now := time.Now()
	return &Progress{w: w, tty: tty, log: log, what: what, every: interval, start: now, last: now}
}

// Update reports done of total rows (total 0: unknown) while in stage.
// It returns the current rate in rows per second.
func (p *Progress) Update(stage string, done, total int64) float64 {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	dt := now.Sub(p.last)
	if dt < p.every {
		return p.rate
	}
	inst := float64(done-p.lastDone) / dt.Seconds()
	if p.rate == 0 {
		p.rate = inst
	} else {
		p.rate = 0.7*p.rate + 0.3*inst
	}
	p.last, p.lastDone = now, done
	p.show(stage, done, total, false)
	return p.rate
}

// Done draws the final state.
func (p *Progress) Done(stage string, done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if el := time.Since(p.start).Seconds(); el > 0 {
		p.rate = float64(done) / el
	}
	p.show(stage, done, total, true)
}

func (p *Progress) show(stage string, done, total int64, final bool) {
	eta := "?"
	if total > 0 && p.rate > 0 && done <= total {
		eta = (time.Duration(float64(total-done)/p.rate) * time.Second / time.Second).Round(time.Second).String()
	}
	if !p.tty {
		p.log.Info(p.what+" progress", "stage", stage, "rows", done, "total", total,
			"rows_per_second", int64(p.rate), "eta", eta, "done", final)
		return
	}
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %d/%d rows %.0f rows/s ETA %s %-24s%s",
		p.what, bar, frac*100, done, total, p.rate, eta, stage, end)
}

// throttle keeps a copy under a row rate and backs off while the upstream
// PostgreSQL is slow, so a backfill never becomes the load that hurts the
// live service.
type throttle struct {
	maxRate float64 // rows per second; 0: unlimited
	start   time.Time
	rows    int64
	// baseline is a slowly rising minimum of the per-row read latency of
	// each kind of page: what the upstream takes when it is not loaded.
	// Per kind, because a page of staged entries costs more than a page of
	// repositories.
	baseline map[string]time.Duration
	delay    time.Duration
	log      *slog.Logger
}

// slowFactor is how much slower than its baseline a page read must be
// before the copy backs off; the floor keeps sub-millisecond noise out.
const (
	slowFactor = 4
	slowFloor  = 20 * time.Millisecond
	maxDelay   = 2 * time.Second
)

func newThrottle(maxRate float64, log *slog.Logger) *throttle {
	return &throttle{maxRate: maxRate, start: time.Now(), log: log, baseline: map[string]time.Duration{}}
}

// wait is called after each page of rows of kind whose upstream read took
// latency (0: not measured).
func (t *throttle) wait(ctx context.Context, kind string, rows int, latency time.Duration) error {
	t.rows += int64(rows)
	if latency > 0 && rows > 0 {
		per := latency / time.Duration(rows)
		base, ok := t.baseline[kind]
		switch {
		case !ok || per < base:
			t.baseline[kind] = per
		default:
			// Rise 2% a page, so that a lasting change of the data (not
			// of the load) becomes the new normal within a few hundred
			// pages.
			t.baseline[kind] = base + base/50 + 1
		}
		if ok && latency > slowFloor && per > slowFactor*base {
			// Wait as long as the slow read took: while the upstream is
			// slow the copy reads at most half of the time.
			t.delay = min(latency, maxDelay)
			if t.log != nil {
				t.log.Warn("upstream slow, backing off", "kind", kind, "page_latency", latency, "per_row", per, "baseline_per_row", base, "delay", t.delay)
			}
		} else {
			t.delay = 0
		}
	}
	d := t.delay
	if t.maxRate > 0 {
		due := time.Duration(float64(t.rows) / t.maxRate * float64(time.Second))
		if ahead := due - time.Since(t.start); ahead > d {
			d = ahead
		}
	}
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
