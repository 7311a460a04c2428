// Command local runs the whole policyhooks system on one machine (make run): an embedded NATS
// server with JetStream, an embedded MongoDB-compatible store (FerretDB on SQLite), and the config,
// callback and executor services in one process, with everything kept under .data/.
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
	dataDir := flag.String("data", ".data", "directory for NATS, the store and the generated credentials")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dataDir, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "policyhooks:", err)
		os.Exit(1)
	}
}
