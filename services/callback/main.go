// Command callback runs the callback service: the REST endpoints that resume a paused privacy
// request with a reply-to-token, retry a failed one, and show a request's state (SPEC §7).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/policyhooks/policyhooks/services/callback/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, os.Getenv, os.Stderr); err != nil {
		stop()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
