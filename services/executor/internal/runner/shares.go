package runner

import "sync"

// shares keeps one slow or dead webhook host from holding every message slot: a host that already
// holds half of the slots or more may take another only while at least a sixteenth of them (one at
// least) stays free for the others. A host alone may so use nearly all slots, and a host that is
// not above its half always gets one. A handler holds its host's share from when it decides to
// call until the answer is written (waiting for a connection included); a request refused a share
// comes back a moment later (its message is handed back, freeing its slot).
type shares struct {
	pool Pool
	mu   sync.Mutex
	held map[string]int
}

func newShares(pool Pool) *shares { return &shares{pool: pool, held: map[string]int{}} }

// enter takes a share of host; false when the host holds its part already.
func (s *shares) enter(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pool != nil {
		slots := s.pool.Cap()
		half, reserve := max(1, slots/2), max(1, slots/16)
		if s.held[host] >= half && slots-s.pool.Used() < reserve {
			return false
		}
	}
	s.held[host]++
	return true
}

// leave gives a share of host back.
func (s *shares) leave(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[host] <= 1 {
		delete(s.held, host)
		return
	}
	s.held[host]--
}
