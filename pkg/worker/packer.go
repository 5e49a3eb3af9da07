package worker

import (
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/pack"
)

// batch is a set of events whose items become one pack.
type batch struct {
	class  string
	items  []pack.Item
	events []*heldMsg
	// packID is set when the batch re-runs an existing intent; the rebuilt pack must match it.
	packID string
	// hold puts every object of the pack under legal hold (suspicious activity). Held items are
	// packed apart from the class's ordinary items, so an ordinary pack is never held.
	hold bool
}

// packer gathers one class's items until the pack is big enough, has enough items or is old
// enough, then hands the batch to a committer.
type packer struct {
	w     *Worker
	class string
	hold  bool

	mu    sync.Mutex
	cur   *batch
	bytes int
	timer *time.Timer
}

func newPacker(w *Worker, class string) *packer { return &packer{w: w, class: class} }

// add places all items of one event into the current batch, so an event's items share a pack.
func (p *packer) add(h *heldMsg, items []pack.Item) {
	p.mu.Lock()
	if p.cur == nil {
		p.cur = &batch{class: p.class, hold: p.hold}
		p.bytes = 0
		gen := p.cur
		p.timer = time.AfterFunc(p.w.cfg.PackMaxDelay, func() { p.flushIf(gen) })
	}
	p.cur.items = append(p.cur.items, items...)
	p.cur.events = append(p.cur.events, h)
	for _, it := range items {
		p.bytes += len(it.Sealed)
	}
	var full *batch
	if p.bytes >= p.w.cfg.PackMaxBytes || len(p.cur.items) >= p.w.cfg.PackMaxItems {
		full = p.take()
	}
	p.mu.Unlock()
	if full != nil {
		p.w.send(full)
	}
}

// take detaches the current batch; p.mu must be held.
func (p *packer) take() *batch {
	b := p.cur
	p.cur = nil
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	return b
}

// flushIf sends batch gen if it is still the current one (its age limit was reached).
func (p *packer) flushIf(gen *batch) {
	p.mu.Lock()
	if p.cur != gen {
		p.mu.Unlock()
		return
	}
	b := p.take()
	p.mu.Unlock()
	p.w.send(b)
}

// flush sends the current batch, if any, now.
func (p *packer) flush() {
	p.mu.Lock()
	if p.cur == nil {
		p.mu.Unlock()
		return
	}
	b := p.take()
	p.mu.Unlock()
	p.w.send(b)
}

// discard drops the current batch; its events were handed back.
func (p *packer) discard() {
	p.mu.Lock()
	if p.cur != nil {
		p.take()
	}
	p.mu.Unlock()
}
