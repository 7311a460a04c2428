package plansnapshots_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

func plan(version int64) event.Plan {
	return event.Plan{PolicyKey: "p", Version: version, PublishedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Pre:  []event.PlanWebhook{{ID: "w1", Key: "a", Direction: event.TwoWay, URL: "https://a.example.com"}},
		Post: []event.PlanWebhook{{ID: "w2", Key: "b", Direction: event.OneWay, URL: "https://b.example.com"}}}
}

// TestStore: a snapshot is stored once under the reference of its JSON, however many writers put
// it; another process gets it back equal; a reference without a snapshot is ErrNotFound, and so is
// a string that cannot be a key.
func TestStore(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlanSnapshots)
	ctx := context.Background()
	b1, _ := json.Marshal(plan(1))
	b2, _ := json.Marshal(plan(2))

	writer, other := plansnapshots.New(kv), plansnapshots.New(kv)
	ref1, err := writer.Put(ctx, b1)
	if err != nil {
		t.Fatal(err)
	}
	if ref1 != plansnapshots.Ref(b1) || len(ref1) != 32 || !event.ValidKVKey(ref1) {
		t.Fatalf("ref %q, want the 32 hex digits of Ref", ref1)
	}
	for _, s := range []*plansnapshots.Store{writer, other} {
		if ref, err := s.Put(ctx, b1); err != nil || ref != ref1 {
			t.Fatalf("a second Put of the same plan: %q, %v", ref, err)
		}
	}
	ref2, err := other.Put(ctx, b2)
	if err != nil || ref2 == ref1 {
		t.Fatalf("another plan: %q, %v; want another ref", ref2, err)
	}
	if st, err := kv.Status(ctx); err != nil || st.Values() != 2 {
		t.Fatalf("bucket holds %v values (%v), want 2: one per distinct plan", st.Values(), err)
	}
	e, err := kv.Get(ctx, ref1)
	if err != nil || e.Revision() != 1 {
		t.Fatalf("the first snapshot: %v, %v; want it written once (revision 1)", e, err)
	}

	reader := plansnapshots.New(kv)
	for ref, want := range map[string]event.Plan{ref1: plan(1), ref2: plan(2)} {
		for range 2 { // from the bucket, then from memory
			got, err := reader.Get(ctx, ref)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("Get(%s) = %+v, %v; want %+v", ref, got, err, want)
			}
		}
	}
	for _, ref := range []string{plansnapshots.Ref([]byte("{}")), "not a key", ""} {
		if _, err := reader.Get(ctx, ref); !errors.Is(err, plansnapshots.ErrNotFound) {
			t.Errorf("Get(%q): %v, want ErrNotFound", ref, err)
		}
	}
}

// TestStoreUnavailable: when the bucket does not answer, Put and Get fail with the cause, never
// ErrNotFound: a request is not refused for a snapshot the store could not read.
func TestStoreUnavailable(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlanSnapshots)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := plansnapshots.New(kv)
	if err := n.JS.DeleteKeyValue(ctx, event.BucketPlanSnapshots); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(plan(1))
	if _, err := s.Put(ctx, b); err == nil {
		t.Fatal("Put into a missing bucket succeeded")
	}
	if _, err := s.Get(ctx, plansnapshots.Ref(b)); err == nil || errors.Is(err, plansnapshots.ErrNotFound) {
		t.Fatalf("Get from a missing bucket: %v, want an error other than ErrNotFound", err)
	}
}
