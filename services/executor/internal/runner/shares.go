package runner

import (
	"context"
	"sync"
)

// shares keeps one slow or dead webhook host from holding every message slot: a host holds at most
// all slots but a sixteenth (one at least), which stay for the other hosts. A handler holds its
// host's share from when it decides to call until the answer is written (waiting for a connection
// included). A request refused a share waits for one in line, its message parked outside the slot
// pool (consume.ParkFree): a share given back goes to the first in line, so no request starves
// while others of its host come and go, and the slot it would hold serves another host meanwhile.
type shares struct {
	pool    Pool
	mu      sync.Mutex
	held    map[string]int
	waiting map[string][]chan struct{}
}

func newShares(pool Pool) *shares {
	return &shares{pool: pool, held: map[string]int{}, waiting: map[string][]chan struct{}{}}
}

// limit is how many shares one host may hold; 0: no limit.
func (s *shares) limit() int {
	if s.pool == nil {
		return 0
	}
	slots := s.pool.Cap()
	return max(1, slots-max(1, slots/16))
}

// line returns a place in host's line for a share, or nil when the line is as long as the limit
// (then the request is handed back for later instead).
func (s *shares) line(host string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiting[host]) >= s.limit() {
		return nil
	}
	ch := make(chan struct{})
	s.waiting[host] = append(s.waiting[host], ch)
	return ch
}

// wait waits in place for a share of host; true when it got one (handed over by leave), false
// when stop or ctx ended first (it then leaves the line, or gives back a share handed over in the
// meantime).
func (s *shares) wait(ctx context.Context, stop <-chan struct{}, host string, place chan struct{}) bool {
	select {
	case <-place:
		return true
	case <-ctx.Done():
	case <-stop:
	}
	s.mu.Lock()
	for i, ch := range s.waiting[host] {
		if ch == place {
			s.waiting[host] = append(s.waiting[host][:i], s.waiting[host][i+1:]...)
			s.mu.Unlock()
			return false
		}
	}
	s.mu.Unlock()
	s.leave(host) // handed over just now: pass it on
	return false
}

// enter takes a share of host; false when the host holds its part already.
func (s *shares) enter(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit := s.limit(); limit > 0 && (s.held[host] >= limit || len(s.waiting[host]) > 0) {
		return false
	}
	s.held[host]++
	return true
}

// leave gives a share of host back: to the first request in its line, if any.
func (s *shares) leave(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if line := s.waiting[host]; len(line) > 0 {
		close(line[0])
		if len(line) == 1 {
			delete(s.waiting, host)
		} else {
			s.waiting[host] = line[1:]
		}
		return
	}
	if s.held[host] <= 1 {
		delete(s.held, host)
		return
	}
	s.held[host]--
}
