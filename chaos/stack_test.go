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
