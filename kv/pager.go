package kv

import "context"

// PageFunc fetches the next page of a scan. done says that no page follows
// it; a page may be empty only when done is true.
type PageFunc func(ctx context.Context) (page []Entry, done bool, err error)

// Pager is the EntriesIterator of a paged scan: a driver says how to fetch
// the next page, and the Pager walks the pages, stopping at the end, on an
// error, when ctx ends or when the store is closed. Every page must be a
// fresh slice, since callers may keep Entry pointers of earlier pages.
type Pager struct {
	ctx    context.Context
	closed func() bool
	fetch  PageFunc
	page   []Entry
	pos    int
	entry  *Entry
	err    error
	done   bool
	shut   bool
}

// NewPager returns an iterator over the pages fetch returns. closed reports
// whether the store was closed; it may be nil.
func NewPager(ctx context.Context, closed func() bool, fetch PageFunc) *Pager {
	return &Pager{ctx: ctx, closed: closed, fetch: fetch}
}

// Next advances to the next entry.
func (p *Pager) Next() bool {
	if p.shut || p.err != nil {
		return false
	}
	if p.closed != nil && p.closed() {
		p.err = ErrClosed
		return false
	}
	if err := p.ctx.Err(); err != nil {
		p.err = err
		return false
	}
	if p.pos >= len(p.page) {
		if p.done {
			p.entry = nil
			return false
		}
		p.page, p.done, p.err = p.fetch(p.ctx)
		p.pos = 0
		if p.err != nil || len(p.page) == 0 {
			p.entry = nil
			return false
		}
	}
	p.entry = &p.page[p.pos]
	p.pos++
	return true
}

// Entry is the current entry, nil before the first Next and after the last.
func (p *Pager) Entry() *Entry { return p.entry }

// Err is why the walk stopped, nil at its end.
func (p *Pager) Err() error { return p.err }

// Close ends the walk; it is idempotent.
func (p *Pager) Close() { p.shut, p.page, p.entry = true, nil, nil }
