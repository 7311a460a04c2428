// Command bench measures privacy requests per second through the real executor against a raw
// baseline: a minimal loop over the same JetStream messages and the same HTTPS receivers with no
// product around it (make bench). It prints a table, then one JSON line per scenario.
//
// The scenarios run on one NATS server with one replica of the stream and the buckets (R1). The R3
// point (-replicas) runs the skip and await scenarios at the middle concurrency again, on a
// three-node cluster with three replicas (NATS_REPLICAS=3), each beside a raw baseline on such a
// cluster: skip_r3 and await_r3 in the report, their server CPU summed over the three nodes.
//
// The paused-requests scenario (-paused) runs last on one server: requests whose two-way webhook
// answers halt, all paused at once, and what the NATS server (memory, disk, each stream) and the
// executor hold per paused request, also after a restart of the server on its store.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/policyhooks/policyhooks/shared/devstack"
)

func main() {
	// A cluster node (the R3 point) is this binary started again: it must run as the node before
	// anything else, flags included.
	if code, ok := devstack.RunClusterNode(); ok {
		os.Exit(code)
	}
	var o Options
	flag.IntVar(&o.Requests, "n", 5000, "requests per measured point")
	flag.StringVar(&o.Concurrency, "c", "64,256,1024", "in-flight concurrencies to measure, comma-separated")
	flag.IntVar(&o.InFlight, "inflight", 10000, "requests held in flight for the memory scenario (0 skips it)")
	flag.BoolVar(&o.Quick, "quick", false, "a short run: few requests, one concurrency, no memory or paused-requests scenario, R1 only\n"+
		"unless -replicas says otherwise")
	flag.BoolVar(&o.InFlightOnly, "inflight-only", false, "measure only the memory scenario (-inflight requests in flight, R1)")
	flag.IntVar(&o.Paused, "paused", 20000, "requests paused at once for the paused-requests scenario, what the NATS server holds per\n"+
		"paused request (0 skips it; -quick skips it unless -paused-only)")
	flag.DurationVar(&o.PausedSettle, "paused-settle", 0, "wait this long after the last pause before measuring what the server holds; 135s\n"+
		"outlasts the 2-minute duplicate window, whose message ids the server keeps in memory until then")
	flag.BoolVar(&o.PausedOnly, "paused-only", false, "measure only the paused-requests scenario (-paused requests, R1); with -inflight-only, those two")
	flag.StringVar(&o.Replicas, "replicas", "", "replica counts to measure, comma-separated: 1 runs every scenario on one NATS server,\n"+
		"3 (or 5) the skip and await scenarios at the middle concurrency on a cluster of that many nodes\n"+
		"with that many replicas (skip_r3, await_r3); default 1,3, or 1 with -quick")
	flag.IntVar(&o.List, "list", 1000000, "records of the request list scenario: the callback's index of that many records, filtered\n"+
		"pages asked while records change (0 skips it; -quick skips it unless -list-only)")
	flag.BoolVar(&o.ListOnly, "list-only", false, "measure only the request list scenario")
	flag.DurationVar(&o.ListFor, "list-for", 20*time.Second, "how long each phase of the request list scenario asks")
	flag.StringVar(&o.ExecutorBin, "executor-bin", "", "measure this executor binary instead of building ../services/executor")
	natsDir := flag.String(natsServerFlag, "", "internal: with `DIR` and then PORT, run as the benchmark's NATS server (store in DIR) on\n"+
		"127.0.0.1:PORT until SIGTERM; the harness starts itself so to measure the server's CPU on its own")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if *natsDir != "" {
		err = serveNATS(ctx, *natsDir, flag.Arg(0), os.Stdin)
	} else {
		err = run(ctx, o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
