package chaos_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/chaos"
	"github.com/policyhooks/policyhooks/shared/event"
)

// stack is what both fault tests run against: the processes, a client, the API, and the data
// layer answering executes.
type stack struct {
	c   *chaos.Cluster
	js  jetstream.JetStream
	api *chaos.API
	dl  *chaos.DataLayer
}

// startStack starts the processes of cfg (Bin, Self and CAFile filled in here), configures the
// receivers' policy, waits for its plan and runs the data layer until the test ends. On failure
// the processes' last log lines are logged under label.
func startStack(t *testing.T, ctx context.Context, label string, seed uint64, cfg chaos.ClusterConfig, rcv *chaos.Receivers) stack {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Bin, cfg.Self, cfg.CAFile = filepath.Join(cfg.Dir, "bin"), self, rcv.CAFile
	c, err := chaos.NewCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s: process logs, last lines (seed %d):\n%s", label, seed, c.Tails(30))
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nc, js, err := chaos.Connect(c.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	api := chaos.NewAPI(c.ConfigURL, c.CallbackURL, c.RootID, c.RootSecret)
	setupCtx, setupCancel := context.WithTimeout(ctx, 30*time.Second)
	defer setupCancel()
	if err := api.Token(setupCtx); err != nil {
		t.Fatal(err)
	}
	if err := api.Configure(setupCtx, rcv); err != nil {
		t.Fatal(err)
	}
	if err := chaos.WaitPlan(setupCtx, js); err != nil {
		t.Fatal(err)
	}
	dl := chaos.NewDataLayer()
	cons, err := dl.Subscribe(setupCtx, js)
	if err != nil {
		t.Fatal(err)
	}
	dlCtx, dlStop := context.WithCancel(ctx)
	var dlDone sync.WaitGroup
	dlDone.Go(func() { dl.Run(dlCtx, js, cons) })
	t.Cleanup(func() { dlStop(); dlDone.Wait() })
	// The executors watch policy_webhooks; give the plan a moment to reach their views.
	time.Sleep(500 * time.Millisecond)
	return stack{c: c, js: js, api: api, dl: dl}
}

// readList reads callback's request list until it shows every request in its record's status,
// for at most 15 seconds (the index follows the records within milliseconds, and a callback just
// restarted reads the bucket first), and returns the last read.
func readList(ctx context.Context, t *testing.T, api *chaos.API, specs []chaos.Spec, records map[string]*chaos.Record) map[string]string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		listed, err := api.List(ctx)
		agree := err == nil
		for _, s := range specs {
			if r := records[s.ID]; agree && r != nil && listed[s.ID] != r.Status {
				agree = false
			}
		}
		if agree || time.Now().After(deadline) {
			if err != nil {
				t.Errorf("reading the request list: %v", err)
			}
			return listed
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// gatherEvidence collects, once the requests settled, everything known about each one (its record,
// the receivers' calls, resume posts and eligible replies, the data layer's deliveries, its status events, its
// submission, its row in the request list) and evaluates the assertions on it. It waits 2 s first, for the last status events
// to reach the stream.
func gatherEvidence(ctx context.Context, t *testing.T, js jetstream.JetStream, api *chaos.API, specs []chaos.Spec,
	records map[string]*chaos.Record, recordErrs map[string]string, rcv *chaos.Receivers, dl *chaos.DataLayer,
	sub *chaos.Submitter) ([]*chaos.Evidence, chaos.Report) {
	t.Helper()
	time.Sleep(2 * time.Second)
	evCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	events, err := chaos.ReadStatusEvents(evCtx, js)
	if err != nil {
		t.Errorf("reading status events: %v", err)
	}
	stored, err := chaos.ReadStoredIdentities(evCtx, js)
	if err != nil {
		t.Errorf("reading stored identities: %v", err)
	}
	listed := readList(evCtx, t, api, specs, records)
	all := make([]*chaos.Evidence, 0, len(specs))
	for _, s := range specs {
		e := &chaos.Evidence{
			Spec: s, Record: records[s.ID], RecordErr: recordErrs[s.ID],
			Calls: rcv.Calls(s.ID), Resumes: rcv.Resumes(s.ID), Replies: rcv.Replies(s.ID), Deliveries: dl.Deliveries(s.ID), Events: events[s.ID],
		}
		e.Submission, e.Submitted = sub.Get(s.ID)
		e.StoredIdentities = stored[event.KVKey(s.ID)]
		e.Listed = listed[s.ID]
		all = append(all, e)
	}
	return all, chaos.Evaluate(all)
}
