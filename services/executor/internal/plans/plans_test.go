package plans

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

func plan(key string, version int64) event.Plan {
	return event.Plan{PolicyKey: key, Version: version, PublishedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Pre:  []event.PlanWebhook{{ID: "w1", Key: "hook", Direction: event.TwoWay, ConnectionKey: "c", Secrets: "sealed"}},
		Post: []event.PlanWebhook{}}
}

func put(t *testing.T, kv jetstream.KeyValue, key string, p event.Plan) {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), event.KVKey(key), b); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// inView reports whether the watch has applied a plan for key (without Get's direct read).
func inView(v *View, key string) (event.Plan, bool) { return v.Latest(key) }

// TestWatch checks that the view loads the plans already in the bucket, then applies puts and
// deletes as they happen.
func TestWatch(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	put(t, kv, "existing", plan("existing", 1))
	put(t, kv, "urn:policy.1", plan("urn:policy.1", 1))
	put(t, kv, "deleted", plan("deleted", 1))
	if err := kv.Delete(t.Context(), "deleted"); err != nil {
		t.Fatal(err)
	}

	v := Watch(t.Context(), kv, n.NC, func(string) {}, zerolog.Nop())
	testkit.Eventually(t, 5*time.Second, "the view to be loaded", v.Loaded)
	for _, key := range []string{"existing", "urn:policy.1"} {
		if p, ok := inView(v, key); !ok || !reflect.DeepEqual(p, plan(key, 1)) {
			t.Errorf("loaded %s: %+v (%v), want %+v", key, p, ok, plan(key, 1))
		}
	}
	if p, ok := inView(v, "deleted"); ok {
		t.Errorf("loaded a deleted plan: %+v", p)
	}

	for _, tc := range []struct {
		name   string
		change func(t *testing.T)
		key    string
		want   *event.Plan // nil: no plan
	}{
		{name: "a new plan", key: "fresh", want: ptr(plan("fresh", 1)),
			change: func(t *testing.T) { put(t, kv, "fresh", plan("fresh", 1)) }},
		{name: "a new version", key: "existing", want: ptr(plan("existing", 2)),
			change: func(t *testing.T) { put(t, kv, "existing", plan("existing", 2)) }},
		{name: "a delete", key: "urn:policy.1",
			change: func(t *testing.T) {
				if err := kv.Delete(t.Context(), event.KVKey("urn:policy.1")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "a purge", key: "fresh",
			change: func(t *testing.T) {
				if err := kv.Purge(t.Context(), "fresh"); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "put again after the delete", key: "urn:policy.1", want: ptr(plan("urn:policy.1", 3)),
			change: func(t *testing.T) { put(t, kv, "urn:policy.1", plan("urn:policy.1", 3)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.change(t)
			testkit.WaitFor(t, 5*time.Second, "the watch to apply the change", func() (event.Plan, bool) {
				p, ok := inView(v, tc.key)
				if tc.want == nil {
					return p, !ok
				}
				return p, ok && reflect.DeepEqual(p, *tc.want)
			})
			p, err := v.Get(t.Context(), tc.key)
			switch {
			case tc.want == nil && !errors.Is(err, ErrNotFound):
				t.Errorf("Get(%q) = %+v, %v; want ErrNotFound", tc.key, p, err)
			case tc.want != nil && (err != nil || !reflect.DeepEqual(p, *tc.want)):
				t.Errorf("Get(%q) = %+v, %v; want %+v", tc.key, p, err, *tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestWatchEnds checks that the view stops applying changes once its context ends.
func TestWatchEnds(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	ctx, cancel := context.WithCancel(t.Context())
	v := Watch(ctx, kv, n.NC, func(string) {}, zerolog.Nop())
	testkit.Eventually(t, 5*time.Second, "the view to be loaded", v.Loaded)
	cancel()
	time.Sleep(100 * time.Millisecond)
	put(t, kv, "after", plan("after", 1))
	time.Sleep(300 * time.Millisecond)
	if p, ok := inView(v, "after"); ok {
		t.Errorf("the view applied a put after its context ended: %+v", p)
	}
	// Get still finds it, by its direct read.
	if p, err := v.Get(t.Context(), "after"); err != nil || !reflect.DeepEqual(p, plan("after", 1)) {
		t.Errorf("Get after the watch ended: %+v, %v; want %+v", p, err, plan("after", 1))
	}
}

// TestGet checks Get's answers: a plan the watch has not delivered is found by the direct read, and
// a key that cannot be a KV key or names no plan is ErrNotFound.
func TestGet(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	v := Watch(t.Context(), kv, n.NC, func(string) {}, zerolog.Nop())
	testkit.Eventually(t, 5*time.Second, "the view to be loaded", v.Loaded)
	// A view whose watch never delivers anything: every Get is a miss and reads the bucket.
	cold := newView(kv, func(string) {}, zerolog.Nop())

	put(t, kv, "known", plan("known", 7))
	put(t, kv, "urn:p.1", plan("urn:p.1", 2))
	testkit.Eventually(t, 5*time.Second, "the watch to deliver the plans", func() bool {
		_, ok := inView(v, "urn:p.1")
		return ok
	})

	for _, tc := range []struct {
		key  string
		want *event.Plan // nil: ErrNotFound
	}{
		{key: "known", want: ptr(plan("known", 7))},
		{key: "urn:p.1", want: ptr(plan("urn:p.1", 2))},
		{key: "unknown"},
		{key: "has space"},
		{key: "*"},
		{key: ">"},
		{key: "a/b"},
		{key: ""},
	} {
		for _, view := range []struct {
			name string
			v    *View
		}{{"watched", v}, {"direct read", cold}} {
			p, err := view.v.Get(t.Context(), tc.key)
			switch {
			case tc.want == nil && !errors.Is(err, ErrNotFound):
				t.Errorf("%s: Get(%q) = %+v, %v; want ErrNotFound", view.name, tc.key, p, err)
			case tc.want != nil && (err != nil || !reflect.DeepEqual(p, *tc.want)):
				t.Errorf("%s: Get(%q) = %+v, %v; want %+v", view.name, tc.key, p, err, *tc.want)
			}
		}
		// Latest answers from the watch alone: what it delivered, and nothing on a miss.
		if p, ok := v.Latest(tc.key); ok != (tc.want != nil) || ok && !reflect.DeepEqual(p, *tc.want) {
			t.Errorf("Latest(%q) = %+v, %v; want %v", tc.key, p, ok, tc.want)
		}
		if _, ok := cold.Latest(tc.key); ok {
			t.Errorf("Latest(%q) of a view that was never delivered anything found a plan", tc.key)
		}
	}
}

// TestGetIsNotStale checks that Get answers what the bucket holds now, not what the watch last
// delivered: a view that still holds a policy's older plan (the watch lags a change config put an
// instant before a submission) answers the newer one, and ErrNotFound once the plan is deleted.
func TestGetIsNotStale(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	put(t, kv, "p", plan("p", 1))
	old, err := kv.Get(t.Context(), "p")
	if err != nil {
		t.Fatal(err)
	}
	newer := plan("p", 2)
	newer.Pre = append(newer.Pre, event.PlanWebhook{ID: "w2", Key: "added", Direction: event.OneWay, ConnectionKey: "c"})
	put(t, kv, "p", newer)
	// A view whose watch delivered version 1 and nothing since.
	var reads []string
	stale := newView(kv, func(op string) { reads = append(reads, op) }, zerolog.Nop())
	stale.Apply(old)
	if p, ok := stale.Latest("p"); !ok || p.Version != 1 {
		t.Fatalf("Latest = %+v, %v; want the stale version 1", p, ok)
	}
	if p, err := stale.Get(t.Context(), "p"); err != nil || !reflect.DeepEqual(p, newer) {
		t.Fatalf("Get = %+v, %v; want version 2 with the added webhook", p, err)
	}
	if err := kv.Delete(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	if p, err := stale.Get(t.Context(), "p"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after the delete = %+v, %v; want ErrNotFound", p, err)
	}
	if want := []string{"kv_get", "kv_get"}; !reflect.DeepEqual(reads, want) {
		t.Fatalf("NATS requests counted %v, want %v (one read per Get)", reads, want)
	}
}

// TestGetUndecodablePlan checks that an undecodable plan is ignored: the watch drops it, and Get
// answers ErrNotFound (as for a policy without a plan) rather than an error, whether the value
// was there when the view loaded, arrived later, or overwrote a valid plan.
func TestGetUndecodablePlan(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	putRaw := func(t *testing.T, key, value string) {
		t.Helper()
		if _, err := kv.Put(t.Context(), key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	putRaw(t, "loaded_garbled", "{not json")
	v := Watch(t.Context(), kv, n.NC, func(string) {}, zerolog.Nop())
	testkit.Eventually(t, 5*time.Second, "the view to be loaded", v.Loaded)
	put(t, kv, "overwritten", plan("overwritten", 1))
	testkit.Eventually(t, 5*time.Second, "the valid plan in the view", func() bool {
		_, ok := inView(v, "overwritten")
		return ok
	})
	putRaw(t, "overwritten", "garbage")
	putRaw(t, "later_wrong_shape", `{"version": "seven"}`)
	put(t, kv, "marker", plan("marker", 1))
	testkit.Eventually(t, 5*time.Second, "the watch to apply every put", func() bool {
		_, ok := inView(v, "marker")
		return ok
	})
	for _, key := range []string{"loaded_garbled", "overwritten", "later_wrong_shape"} {
		if p, ok := inView(v, key); ok {
			t.Errorf("%s: the view holds %+v, want the undecodable plan ignored", key, p)
		}
		if p, err := v.Get(t.Context(), key); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) of an undecodable plan = %+v, %v; want ErrNotFound", key, p, err)
		}
	}
}

// TestReadWholeDropsUnseenPlans: a plan that a read of the bucket whole does not deliver (deleted
// while nobody watched) leaves the view at the read's end; the plans it delivers stay.
func TestReadWholeDropsUnseenPlans(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlans)
	put(t, kv, "kept", plan("kept", 1))
	put(t, kv, "gone", plan("gone", 1))
	entry := func(key string) jetstream.KeyValueEntry {
		e, err := kv.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	v := &View{Map: natsconn.NewMap[event.Plan](zerolog.Nop()), kv: kv, log: zerolog.Nop()}
	v.Apply(entry("gone")) // in the view, then deleted while nobody watched
	if _, ok := v.Latest("gone"); !ok {
		t.Fatal("the plan applied is not in the view")
	}
	v.BeginWhole()
	v.Apply(entry("kept"))
	v.EndWhole()
	if _, ok := v.Latest("gone"); ok {
		t.Error("a plan the read did not deliver is still in the view")
	}
	if p, ok := v.Latest("kept"); !ok || !reflect.DeepEqual(p, plan("kept", 1)) || !v.Loaded() {
		t.Errorf("kept: %+v %v, loaded %v; want the plan, loaded", p, ok, v.Loaded())
	}
}
