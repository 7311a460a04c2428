// Command bench measures privacy requests per second through the real executor against a raw
// baseline: a minimal loop over the same JetStream messages and the same HTTPS receivers with no
// product around it (make bench). It prints a table, then one JSON line per scenario.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var o Options
	flag.IntVar(&o.Requests, "n", 5000, "requests per measured point")
	flag.StringVar(&o.Concurrency, "c", "64,256,1024", "in-flight concurrencies to measure, comma-separated")
	flag.IntVar(&o.InFlight, "inflight", 10000, "requests held in flight for the memory scenario (0 skips it)")
	flag.BoolVar(&o.Quick, "quick", false, "a short run: few requests, one concurrency, no memory scenario")
	flag.BoolVar(&o.InFlightOnly, "inflight-only", false, "measure only the memory scenario (-inflight requests in flight)")
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
