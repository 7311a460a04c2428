package natsconn_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestMain lets the test binary serve as a node of devstack's clusters.
func TestMain(m *testing.M) {
	if code, ok := devstack.RunClusterNode(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestLeaderReads: a leader read answers what nats.go's own Get answers, for every state a key can
// be in: a value, an updated value, a delete, a purge, a per-key TTL that ran out, never written,
// and a key that cannot be one.
func TestLeaderReads(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	plain, err := n.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leader_reads", History: 1,
		LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	leader := natsconn.LeaderReads(n.JS, plain)
	must := func(_ uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(plain.Put(ctx, "value", []byte("v1")))
	must(plain.Put(ctx, "updated", []byte("v1")))
	must(plain.Put(ctx, "updated", []byte("v2")))
	must(plain.Put(ctx, "deleted", []byte("v1")))
	if err := plain.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	must(plain.Put(ctx, "purged", []byte("v1")))
	if err := plain.Purge(ctx, "purged"); err != nil {
		t.Fatal(err)
	}
	must(plain.Create(ctx, "expired", []byte("v1"), jetstream.KeyTTL(time.Second)))
	must(plain.Put(ctx, "a/b=c_d-e.f", []byte("v1")))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := plain.Get(ctx, "expired"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the per-key TTL never ran out")
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, key := range []string{"value", "updated", "deleted", "purged", "expired", "never", "a/b=c_d-e.f", "bad key", ".bad", ""} {
		t.Run(key, func(t *testing.T) {
			want, wantErr := plain.Get(ctx, key)
			got, gotErr := leader.Get(ctx, key)
			if !errors.Is(gotErr, wantErr) || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("error %v, nats.go's Get says %v", gotErr, wantErr)
			}
			if (got == nil) != (want == nil) {
				t.Fatalf("entry %v, nats.go's Get gives %v", got, want)
			}
			if want == nil {
				return
			}
			if string(got.Value()) != string(want.Value()) || got.Revision() != want.Revision() ||
				got.Operation() != want.Operation() || got.Key() != want.Key() || got.Bucket() != want.Bucket() ||
				!got.Created().Equal(want.Created()) {
				t.Fatalf("got %s rev %d op %v at %v, nats.go's Get gives %s rev %d op %v at %v",
					got.Value(), got.Revision(), got.Operation(), got.Created(),
					want.Value(), want.Revision(), want.Operation(), want.Created())
			}
		})
	}
	// Only Get changes: the rest is the bucket's own.
	if _, err := leader.Put(ctx, "value", []byte("v3")); err != nil {
		t.Fatal(err)
	}
	if e, err := leader.Get(ctx, "value"); err != nil || string(e.Value()) != "v3" {
		t.Fatalf("after a Put through the wrapper: %v, %v", e, err)
	}
}

// TestLeaderReadsOnCluster writes a key through a connection to the leader of an R3 bucket and reads
// it at once through a connection to a follower: the leader read always sees the write just
// acknowledged. nats.go's direct get, which a follower may answer, is read the same way and its
// stale answers are reported (they are what the leader read exists for; how many depends on timing).
func TestLeaderReadsOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c := devstack.ClusterForTest(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	connect := func(url string) jetstream.JetStream {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	js := connect(c.URLs())
	var kv jetstream.KeyValue
	var err error
	for kv == nil {
		kv, err = natsconn.Assets{JS: js, Replicas: 3}.Requests(ctx)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitStreamCurrent(ctx, js, "KV_"+kv.Bucket()); err != nil {
		t.Fatal(err)
	}
	lead, err := c.KVLeader(ctx, js, kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	var follower *devstack.Node
	for _, nd := range c.Nodes() {
		if nd != lead {
			follower = nd
		}
	}
	writer := connect(lead.URL())
	reader := connect(follower.URL())
	wkv, err := writer.KeyValue(ctx, kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	direct, err := reader.KeyValue(ctx, kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	leader := natsconn.LeaderReads(reader, direct)

	const writes = 2000
	stale := 0
	for i := range writes {
		key := fmt.Sprintf("k%d", i%50)
		rev, err := wkv.Put(ctx, key, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		if e, err := direct.Get(ctx, key); err != nil || e.Revision() < rev {
			stale++
		}
		e, err := leader.Get(ctx, key)
		if err != nil {
			t.Fatalf("write %d: leader read of %s: %v", i, key, err)
		}
		if e.Revision() != rev || string(e.Value()) != strconv.Itoa(i) {
			t.Fatalf("write %d: leader read of %s gave revision %d (%s), the write acknowledged %d", i, key,
				e.Revision(), e.Value(), rev)
		}
	}
	t.Logf("%d writes: every leader read saw its write; the direct get through the follower was stale %d times", writes, stale)
}
