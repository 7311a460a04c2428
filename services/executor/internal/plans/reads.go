package plans

import (
	"context"
	"sync"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// readTimeout bounds one shared read of a plan: the Gets waiting for it each have their own
// context, so the read has a deadline of its own and no caller's cancellation.
const readTimeout = 5 * time.Second

// reads shares the reads of one policy's plan among the Gets that wait for it. A Get must see every
// put that completed before it was called, so it takes the result of a read that started after
// that: a Get that finds no read of its key running starts one; a Get that arrives while one runs
// waits for the next, which starts as the running one ends, shared by every Get that arrived
// meanwhile. At most one read per key runs at a time, and a Get waits for at most two. (A
// singleflight, which lets a call join one already running, would answer a Get with a read that
// may have started before a put the Get must see.)
type reads struct {
	read func(ctx context.Context, key string) (event.Plan, error)

	mu sync.Mutex
	// keys holds the keys with a read running; the value is the read to start after it, nil
	// while no Get waits for one.
	keys map[string]*sharedRead
}

// sharedRead is one read and the plan or error it gave, set before done closes.
type sharedRead struct {
	done chan struct{}
	plan event.Plan
	err  error
}

func newReads(read func(ctx context.Context, key string) (event.Plan, error)) *reads {
	return &reads{read: read, keys: map[string]*sharedRead{}}
}

// get returns the result of a read of key that started after get was called, or ctx's error.
func (r *reads) get(ctx context.Context, key string) (event.Plan, error) {
	r.mu.Lock()
	next, running := r.keys[key]
	var mine *sharedRead
	switch {
	case !running:
		mine = &sharedRead{done: make(chan struct{})}
		r.keys[key] = nil
		go r.run(key, mine)
	case next == nil:
		mine = &sharedRead{done: make(chan struct{})}
		r.keys[key] = mine
	default:
		mine = next
	}
	r.mu.Unlock()
	select {
	case <-mine.done:
		return mine.plan, mine.err
	case <-ctx.Done():
		return event.Plan{}, ctx.Err()
	}
}

// run makes the read sr, then the reads queued behind it, until none waits.
func (r *reads) run(key string, sr *sharedRead) {
	for sr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		sr.plan, sr.err = r.read(ctx, key)
		cancel()
		close(sr.done)
		r.mu.Lock()
		sr = r.keys[key]
		if sr == nil {
			delete(r.keys, key)
		} else {
			r.keys[key] = nil
		}
		r.mu.Unlock()
	}
}
