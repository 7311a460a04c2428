package natsconn_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestEach reads every live entry once, leaves deleted and purged keys out, reads an empty bucket
// as nothing, and stops at the first error of its callback.
func TestEach(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := n.Bucket(t, event.BucketErrored)
	read := func() (map[string]string, error) {
		got := map[string]string{}
		err := natsconn.Each(ctx, kv, func(e jetstream.KeyValueEntry) error {
			if _, dup := got[e.Key()]; dup {
				t.Errorf("key %s read twice", e.Key())
			}
			got[e.Key()] = string(e.Value())
			return nil
		})
		return got, err
	}
	if got, err := read(); err != nil || len(got) != 0 {
		t.Fatalf("empty bucket: %v, %v", got, err)
	}
	for _, k := range []string{"a", "b", "c", "d"} {
		if _, err := kv.Put(ctx, k, []byte("v1-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "a", []byte("v2-a")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	got, err := read()
	if err != nil || len(got) != 2 || got["a"] != "v2-a" || got["d"] != "v1-d" {
		t.Fatalf("Each read %v, %v; want a (its last value) and d", got, err)
	}
	stop := errors.New("stop")
	calls := 0
	err = natsconn.Each(ctx, kv, func(jetstream.KeyValueEntry) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("a callback error: %v after %d calls, want it at once", err, calls)
	}
}
