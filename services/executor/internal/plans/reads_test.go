package plans

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

// TestReadsShare drives reads with a read that waits to be released: a Get that finds no read
// running starts one; Gets arriving while it runs wait for the next read, which starts as it ends
// and which they share; a Get whose context ends returns without disturbing the others; another
// key is read on its own.
func TestReadsShare(t *testing.T) {
	type call struct {
		key     string
		n       int
		release chan struct{}
	}
	calls := make(chan call)
	var n atomic.Int32
	r := newReads(func(ctx context.Context, key string) (event.Plan, error) {
		c := call{key: key, n: int(n.Add(1)), release: make(chan struct{})}
		calls <- c
		<-c.release
		return event.Plan{PolicyKey: key, Version: int64(c.n)}, nil
	})
	type result struct {
		name string
		plan event.Plan
		err  error
	}
	results := make(chan result, 10)
	get := func(ctx context.Context, name, key string) {
		go func() {
			p, err := r.get(ctx, key)
			results <- result{name, p, err}
		}()
	}
	next := func(want string) call {
		t.Helper()
		select {
		case c := <-calls:
			if c.key != want {
				t.Fatalf("read of %q, want %q", c.key, want)
			}
			return c
		case <-time.After(5 * time.Second):
			t.Fatalf("no read of %q started", want)
			return call{}
		}
	}
	noRead := func() {
		t.Helper()
		select {
		case c := <-calls:
			t.Fatalf("read %d of %q started, want none", c.n, c.key)
		case <-time.After(50 * time.Millisecond):
		}
	}
	waitFor := func(names ...string) map[string]result {
		t.Helper()
		got := map[string]result{}
		for range names {
			select {
			case res := <-results:
				got[res.name] = res
			case <-time.After(5 * time.Second):
				t.Fatalf("got %v, want results of %v", got, names)
			}
		}
		for _, name := range names {
			if _, ok := got[name]; !ok {
				t.Fatalf("got %v, want results of %v", got, names)
			}
		}
		return got
	}
	waiting := func(key string) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.keys[key] != nil
	}

	get(t.Context(), "a", "p")
	first := next("p")
	get(t.Context(), "b", "p")
	gone, cancel := context.WithCancel(t.Context())
	get(gone, "c", "p")
	testkit.Eventually(t, 5*time.Second, "b and c to wait for the next read", func() bool { return waiting("p") })
	get(t.Context(), "other", "q")
	other := next("q") // another key does not wait for p's read
	close(other.release)
	if got := waitFor("other")["other"]; got.err != nil || got.plan.PolicyKey != "q" {
		t.Fatalf("other = %+v", got)
	}
	noRead() // p's next read waits for the running one
	cancel()
	if got := waitFor("c")["c"]; !errors.Is(got.err, context.Canceled) {
		t.Fatalf("c after its context ended = %+v, want context.Canceled", got)
	}
	close(first.release)
	if got := waitFor("a")["a"]; got.err != nil || got.plan.Version != 1 {
		t.Fatalf("a = %+v, want read 1 (the one it started)", got)
	}
	second := next("p")
	get(t.Context(), "d", "p") // arrives during read 2: waits for read 3
	testkit.Eventually(t, 5*time.Second, "d to wait for the next read", func() bool { return waiting("p") })
	close(second.release)
	if got := waitFor("b")["b"]; got.err != nil || got.plan.Version != int64(second.n) {
		t.Fatalf("b = %+v, want read %d (the first that started after it)", got, second.n)
	}
	third := next("p")
	close(third.release)
	if got := waitFor("d")["d"]; got.err != nil || got.plan.Version != int64(third.n) {
		t.Fatalf("d = %+v, want read %d", got, third.n)
	}
	noRead()
	testkit.Eventually(t, 5*time.Second, "no read of p left", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		_, ok := r.keys["p"]
		return !ok
	})
}

// TestGetFresh runs Gets of one policy from many goroutines while its plan is put again and again,
// against a real bucket: every Get answers a version at least as new as the last put that had
// completed when it was called, and the Gets share reads.
func TestGetFresh(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	var reads atomic.Int64
	v := newView(kv, func(string) { reads.Add(1) }, zerolog.Nop())
	put(t, kv, "p", plan("p", 0))
	var (
		putDone atomic.Int64 // the version of the last put that returned
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		gets    atomic.Int64
		errs    = make(chan error, 1)
	)
	for range 32 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := putDone.Load()
				p, err := v.Get(t.Context(), "p")
				gets.Add(1)
				if err == nil && p.Version < floor {
					err = fmt.Errorf("Get answered version %d after the put of version %d had returned", p.Version, floor)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	for version := int64(1); version <= 300; version++ {
		put(t, kv, "p", plan("p", version))
		putDone.Store(version)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if reads.Load() >= gets.Load() {
		t.Fatalf("%d reads for %d Gets: want them shared", reads.Load(), gets.Load())
	}
	t.Logf("%d Gets, %d reads", gets.Load(), reads.Load())
}
