package devstack_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/devstack"
)

// TestMain lets the test binary serve as a node of devstack's clusters.
func TestMain(m *testing.M) {
	if code, ok := devstack.RunClusterNode(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// Bounds of how long an operation is retried: setup (creations, leader look-ups) and a write
// across a leader's crash. A crashed leader costs its raft group one election timeout (4–9 s at
// nats-server's production timings), two after a split vote: up to about 18 s.
const (
	setupWithin = 15 * time.Second
	writeWithin = 30 * time.Second
)

// retry calls op, each attempt bounded by two seconds, until it succeeds or within has passed;
// then the test fails with the last error. It returns op's result and the attempts made.
// Right after an election JetStream answers "no suitable peers for placement" (10005), 503 or not
// at all for a while; every error is retried, the last one is reported.
func retry[T any](t *testing.T, ctx context.Context, within time.Duration, what string, op func(context.Context) (T, error)) (T, int) {
	t.Helper()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := op(actx)
		cancel()
		if err == nil {
			return v, attempt
		}
		if time.Since(start) > within || ctx.Err() != nil {
			t.Fatalf("%s: still failing after %s and %d attempts: %v", what, time.Since(start).Round(time.Millisecond), attempt, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestClusterKeepsEveryMessageAcrossLeaderKill starts three nodes, SIGKILLs the leader of an R3
// stream while publishing with message ids (each publish retried with its id until acknowledged),
// restarts the node on its store and ports, and checks that the stream holds every message exactly
// once and that the restarted node is current again.
func TestClusterKeepsEveryMessageAcrossLeaderKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	c := devstack.ClusterForTest(t, 3)
	t.Logf("3 nodes up and meta leader elected in %s", since(began))

	nc, err := nats.Connect(c.URLs(), nats.Name("cluster-test"), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect %s: %v", c.URLs(), err)
	}
	t.Cleanup(nc.Close) // before the cluster's cleanup, registered earlier
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	const stream, subject, bucket = "FAILOVER", "failover.msg", "failover"
	setup := time.Now()
	_, attempts := retry(t, ctx, setupWithin, "create R3 stream", func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: stream, Subjects: []string{subject}, Replicas: 3, Storage: jetstream.FileStorage,
		})
	})
	kv, kvAttempts := retry(t, ctx, setupWithin, "create R3 KV bucket", func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: 3})
	})
	t.Logf("R3 stream and KV bucket created in %s (%d and %d attempts)", since(setup), attempts, kvAttempts)

	published := 0
	publish := func(n int) (slowest time.Duration, dups int) {
		t.Helper()
		for range n {
			id := fmt.Sprintf("m-%03d", published)
			start := time.Now()
			ack, _ := retry(t, ctx, writeWithin, "publish "+id, func(ctx context.Context) (*jetstream.PubAck, error) {
				return js.Publish(ctx, subject, []byte(id), jetstream.WithMsgID(id), jetstream.WithExpectStream(stream))
			})
			slowest = max(slowest, time.Since(start))
			if ack.Duplicate {
				dups++
			}
			published++
		}
		return slowest, dups
	}
	putKV := func(value string) time.Duration {
		t.Helper()
		start := time.Now()
		retry(t, ctx, writeWithin, "KV put "+value, func(ctx context.Context) (uint64, error) {
			return kv.Put(ctx, "k", []byte(value))
		})
		return time.Since(start)
	}

	publish(30)
	putKV("before")
	leader, _ := retry(t, ctx, setupWithin, "stream leader", func(ctx context.Context) (*devstack.Node, error) {
		return c.StreamLeader(ctx, js, stream)
	})
	kvLeader, _ := retry(t, ctx, setupWithin, "KV leader", func(ctx context.Context) (*devstack.Node, error) {
		return c.KVLeader(ctx, js, bucket)
	})
	meta, _ := retry(t, ctx, setupWithin, "meta leader", c.MetaLeader)
	t.Logf("leaders: stream %s, KV %s, meta %s; killing %s (pid %d)", leader.Name(), kvLeader.Name(), meta.Name(), leader.Name(), leader.Pid())

	killed := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	if leader.Running() {
		t.Fatalf("%s runs after Kill", leader.Name())
	}
	stall, dups := publish(30)
	publishedAfterKill := time.Since(killed)
	kvStall := putKV("after")
	newLeader, _ := retry(t, ctx, setupWithin, "stream leader after the kill", func(ctx context.Context) (*devstack.Node, error) {
		return c.StreamLeader(ctx, js, stream)
	})
	if newLeader == leader {
		t.Fatalf("stream leader after the kill = %s, the killed node", newLeader.Name())
	}
	t.Logf("failover: slowest publish after SIGKILL %s (the stall), 30 publishes in %s, %d acks were duplicates of a timed-out try; KV put after %s; new stream leader %s",
		stall.Round(time.Millisecond), publishedAfterKill.Round(time.Millisecond), dups, kvStall.Round(time.Millisecond), newLeader.Name())

	restarted := time.Now()
	if err := leader.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	listening := since(restarted)
	if err := c.WaitReady(ctx); err != nil { // every node's /healthz, the restarted one's included
		t.Fatal(err)
	}
	healthy := since(restarted)
	for _, s := range []string{stream, "KV_" + bucket} {
		if err := c.WaitStreamCurrent(ctx, js, s); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("restart: %s listening after %s, healthy (current by its own /healthz) after %s, listed online and current by the stream's and the bucket's leaders after %s",
		leader.Name(), listening, healthy, since(restarted))
	publish(10)

	// Every message is in the stream exactly once, in publish order.
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	state := s.CachedInfo().State
	if state.Msgs != uint64(published) {
		t.Errorf("stream holds %d messages, want %d", state.Msgs, published)
	}
	seen := make(map[string]int)
	for seq := state.FirstSeq; seq <= state.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if string(m.Data) != id {
			t.Errorf("message %d: data %q, Nats-Msg-Id %q", seq, m.Data, id)
		}
		if want := fmt.Sprintf("m-%03d", seq-state.FirstSeq); id != want {
			t.Errorf("message %d = %s, want %s", seq, id, want)
		}
		seen[id]++
	}
	for i := range published {
		if id := fmt.Sprintf("m-%03d", i); seen[id] != 1 {
			t.Errorf("%s is in the stream %d times, want 1", id, seen[id])
		}
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "after" {
		t.Errorf("KV k = %v, %v; want after", e, err)
	}
	t.Logf("%d messages checked; whole test %s", published, since(began))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// TestClusterNodeStopsAndRestarts stops a node gracefully: the cluster keeps a meta leader, and the
// node comes back on the same URL.
func TestClusterNodeStopsAndRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := devstack.ClusterForTest(t, 3)
	n := c.Node(2)
	if n.Name() != "n3" || c.NodeByName("n3") != n {
		t.Fatalf("Node(2) = %s, NodeByName(n3) = %v", n.Name(), c.NodeByName("n3"))
	}
	nc, err := nats.Connect(c.URLs(), nats.Name("cluster-test"), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect %s: %v", c.URLs(), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Ready means an R3 asset can be placed at the first attempt, with no retry: the meta leader
	// counts every node online (the bench's baseline stream failed here with 10005 "peer offline"
	// when WaitReady checked only each node's own /healthz).
	placeR3 := func(name string) {
		t.Helper()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Replicas: 3, Storage: jetstream.FileStorage,
		}); err != nil {
			t.Fatalf("R3 stream %s right after WaitReady: %v", name, err)
		}
	}
	placeR3("READY")
	url := n.URL()
	meta, err := c.MetaLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if n.Running() || n.Pid() != 0 {
		t.Fatalf("%s runs after Stop (pid %d)", n.Name(), n.Pid())
	}
	stopTook := since(stopped)
	if err := c.WaitReady(ctx); err != nil { // two of three: still a quorum
		t.Fatal(err)
	}
	t.Logf("%s (meta leader %s) stopped in %s, the other two ready after %s", n.Name(), meta.Name(), stopTook, since(stopped))
	restarted := time.Now()
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if n.URL() != url {
		t.Fatalf("URL after restart = %s, want %s", n.URL(), url)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted and healthy in %s", n.Name(), since(restarted))
	placeR3("RESTARTED")
	if _, err := c.MetaLeader(ctx); err != nil {
		t.Fatal(err)
	}
	// The node's log has timestamps, to line its events up with the test's.
	year := strconv.Itoa(time.Now().UTC().Year())
	for _, line := range strings.Split(strings.TrimSpace(n.LogTail(5)), "\n") {
		if _, rest, ok := strings.Cut(line, "] "); !ok || !strings.HasPrefix(rest, year+"/") {
			t.Errorf("log line without a timestamp: %q", line)
		}
	}
}
