package requestlist

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

func record(t *testing.T, id string, status event.Status, minute int) []byte {
	t.Helper()
	created := t0.Add(time.Duration(minute) * time.Minute)
	b, err := json.Marshal(event.Request{ID: id, PolicyKey: "p", Status: status, Step: event.StepPreWebhooks,
		CreatedAt: created, UpdatedAt: created, Webhooks: []event.WebhookRecord{{Key: "w", Attempts: []event.Attempt{{Status: 200}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventually waits until the list, all of it in creation order, is want.
func eventually(t *testing.T, x *Index, what string, want ...string) {
	t.Helper()
	testkit.WaitFor(t, 60*time.Second, what, func() ([]string, bool) {
		res, err := x.Query(Query{Ascending: true, Page: 1, Size: 100})
		if err != nil {
			return nil, false
		}
		var got []string
		for _, r := range res.Rows {
			got = append(got, r.ID+":"+string(r.Status))
		}
		return got, slices.Equal(got, want)
	})
}

// TestFollow runs the watch against a real privacy_requests: the bucket's content at start (in
// the order of its last writes, not of creation), then puts, changes, a delete, a purge, a per-key
// TTL that runs out, an unreadable record and a restart of NATS.
func TestFollow(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketRequests)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put := func(key string, value []byte) {
		t.Helper()
		if _, err := kv.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("pri_3", record(t, "pri_3", event.StatusPending, 3))
	put("pri_1", record(t, "pri_1", event.StatusPending, 1))
	put("pri_2", record(t, "pri_2", event.StatusPending, 2))
	put("pri_1", record(t, "pri_1", event.StatusError, 1))

	x := New()
	go Follow(ctx, kv, n.NC, x, zerolog.Nop())
	eventually(t, x, "the bucket's content", "pri_1:error", "pri_2:pending", "pri_3:pending")

	put("pri_0", record(t, "pri_0", event.StatusComplete, 0)) // created before the others
	put("pri_2", record(t, "pri_2", event.StatusPaused, 2))
	put(event.KVKey("pri:x.4"), record(t, "pri:x.4", event.StatusInProcessing, 4)) // stored under its escaped key
	eventually(t, x, "new and changed records", "pri_0:complete", "pri_1:error", "pri_2:paused", "pri_3:pending", "pri:x.4:in_processing")

	if err := kv.Delete(ctx, "pri_1"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "pri_3"); err != nil {
		t.Fatal(err)
	}
	put("pri_0", []byte(`{"id": "pri_0", "status": `)) // unreadable: left out
	eventually(t, x, "a delete, a purge, an unreadable record", "pri_2:paused", "pri:x.4:in_processing")

	if _, err := kv.Create(ctx, "pri_5", record(t, "pri_5", event.StatusComplete, 5), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, x, "a finished record with a TTL", "pri_2:paused", "pri:x.4:in_processing", "pri_5:complete")
	eventually(t, x, "the TTL ran out", "pri_2:paused", "pri:x.4:in_processing")

	n.Restart(t)
	restarted := time.Now()
	defer func() { t.Logf("followed %v after the restart", time.Since(restarted)) }()
	put("pri_2", record(t, "pri_2", event.StatusComplete, 2))
	put("pri_6", record(t, "pri_6", event.StatusPending, 6))
	eventually(t, x, "changes after NATS restarted", "pri_2:complete", "pri:x.4:in_processing", "pri_6:pending")
	if x.Len() != 3 {
		t.Errorf("%d rows, want 3", x.Len())
	}
}
