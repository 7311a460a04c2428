package runner

import "sync"

// shares keeps one slow or dead webhook host from holding every message slot: a host holds at most
// all slots but a sixteenth (one at least), which stay for the other hosts. A handler holds its
// host's share from when it decides to call until the answer is written (waiting for a connection
// included); a request refused a share comes back a moment later (its message is handed back,
// freeing its slot), later each time it is refused again.
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
		if s.held[host] >= max(1, slots-max(1, slots/16)) {
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
