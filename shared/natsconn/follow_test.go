package natsconn_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

// view is the simplest natsconn.View: the values by key, and how many reads of the bucket whole
// began and ended.
type view struct {
	mu         sync.Mutex
	values     map[string]string
	fresh      map[string]bool
	begun, end int
}

func (v *view) BeginWhole() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.begun++
	v.fresh = map[string]bool{}
}

func (v *view) EndWhole() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.end++
	maps.DeleteFunc(v.values, func(k, _ string) bool { return !v.fresh[k] })
	v.fresh = nil
}

func (v *view) Apply(e jetstream.KeyValueEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fresh != nil {
		v.fresh[e.Key()] = true
	}
	if e.Operation() == jetstream.KeyValuePut {
		v.values[e.Key()] = string(e.Value())
	} else {
		delete(v.values, e.Key())
	}
}

// state returns the view's keys=values, sorted, and its reads whole begun and ended.
func (v *view) state() ([]string, int, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var kv []string
	for k, val := range v.values {
		kv = append(kv, k+"="+val)
	}
	slices.Sort(kv)
	return kv, v.begun, v.end
}

func (v *view) wait(t *testing.T, what string, want ...string) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, what, func() ([]string, bool) {
		got, _, _ := v.state()
		return got, slices.Equal(got, want)
	})
}

// TestFollow: the view reads the bucket whole, follows puts, deletes and purges, and after NATS
// restarts it follows again within about a second (nats.go's own watch takes 10 to 20), resuming
// after the last revision rather than reading the bucket whole again.
func TestFollow(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1")
	put("b", "1")
	v := &view{values: map[string]string{}}
	go natsconn.Follow(ctx, kv, n.NC, v, zerolog.Nop())
	v.wait(t, "the bucket read whole", "a=1", "b=1")
	if _, begun, end := v.state(); begun != 1 || end != 1 {
		t.Fatalf("reads whole begun %d, ended %d; want 1 and 1", begun, end)
	}
	put("a", "2")
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	put("c", "1")
	v.wait(t, "a put, a delete, a new key", "a=2", "c=1")

	n.Restart(t)
	restarted := time.Now()
	put("c", "2")
	if err := kv.Purge(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	v.wait(t, "changes after NATS restarted", "c=2")
	if took := time.Since(restarted); took > 5*time.Second {
		t.Errorf("followed %s after the restart, want within the tick of a second or two", took)
	}
	if _, begun, _ := v.state(); begun != 1 {
		t.Errorf("after a short loss the bucket was read whole again (%d reads); want a resume", begun)
	}
}

// TestFollowReadsWholeAfterALongLoss: after a loss longer than the resume gap (0 here), the bucket
// is read whole again, and a key removed meanwhile leaves the view though no delete was seen.
func TestFollowReadsWholeAfterALongLoss(t *testing.T) {
	defer natsconn.SetResumeGap(0)()
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, k := range []string{"a", "b"} {
		if _, err := kv.Put(ctx, k, []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	v := &view{values: map[string]string{}}
	go natsconn.Follow(ctx, kv, n.NC, v, zerolog.Nop())
	v.wait(t, "the bucket read whole", "a=1", "b=1")
	// A key the view keeps but the bucket no longer has, as if its delete marker was gone.
	v.mu.Lock()
	v.values["gone"] = "1"
	v.mu.Unlock()
	n.Restart(t)
	v.wait(t, "the bucket read whole again", "a=1", "b=1")
	if _, begun, end := v.state(); begun != 2 || end != 2 {
		t.Errorf("reads whole begun %d, ended %d; want 2 and 2", begun, end)
	}
}

// TestMap: the common View keeps each key's value decoded, drops a value that does not decode
// and a key deleted, and at the end of a read of the bucket whole drops the keys the read did not
// deliver (removed while nobody watched: a breaker whose connection was deleted, say).
func TestMap(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	ctx := t.Context()
	entry := func(key, value string) jetstream.KeyValueEntry {
		t.Helper()
		if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	type health struct{ State string }
	m := natsconn.NewMap[health](zerolog.Nop())
	m.Apply(entry("open", `{"State": "open"}`))
	m.Apply(entry("gone", `{"State": "open"}`))
	m.Apply(entry("broken", `{"State": `))
	if v, ok := m.Get("open"); !ok || v.State != "open" || m.Loaded() {
		t.Fatalf("open: %+v %v, loaded %v; want the value, not loaded yet", v, ok, m.Loaded())
	}
	if _, ok := m.Get("broken"); ok {
		t.Error("an undecodable value is in the map")
	}
	m.BeginWhole()
	m.Apply(entry("open", `{"State": "closed"}`))
	m.EndWhole()
	var keys []string
	m.Each(func(k string, _ health) { keys = append(keys, k) })
	if v, _ := m.Get("open"); !slices.Equal(keys, []string{"open"}) || v.State != "closed" || !m.Loaded() {
		t.Errorf("after a read whole: keys %v, open %+v, loaded %v; want only open, closed, loaded", keys, v, m.Loaded())
	}
	if err := kv.Delete(ctx, "open"); err != nil {
		t.Fatal(err)
	}
	h, err := kv.History(ctx, "open")
	if err != nil {
		t.Fatal(err)
	}
	m.Apply(h[len(h)-1])
	if _, ok := m.Get("open"); ok {
		t.Error("a deleted key is in the map")
	}
}
