// Command receiver is an example policy-webhook receiver to run next to `make run` and to copy
// from. It verifies the Standard Webhooks signatures when given signing secrets (v1, HMAC) or
// Ed25519 public keys (v1a), accepting a call that one of them verifies, logs each call
// (never the identity values), answers two-way calls with a configurable derived identity (fides's
// shape) and halt, and, when it halted a request, posts the reply-to-token back to reply-to after a
// delay. It answers fides's pre-approval calls at once and replies eligible (or not eligible) at
// their reply URLs after the same delay.
//
//	go run ./examples/receiver -addr 127.0.0.1:9000 -halt -resume-after 3s -derived-phone 555-0100
//	go run ./examples/receiver -derived-identity '{"loyalty_id": {"label": "Loyalty ID", "value": "CH-1"}}'
//	go run ./examples/receiver -signing-secret "$NEW_SECRET,$OLD_SECRET" -public-key "$PUBLIC_KEY"
//	go run ./examples/receiver -gen-key   # prints SIGNING_KEY=whsk_… and PUBLIC_KEY=whpk_…
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var o Options
	var secrets, publicKeys listFlag
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:9000", "listen address")
	flag.Var(&secrets, "signing-secret", "a signing_secret of the connection (whsec_<base64> or raw) to verify v1 signatures with; repeat the flag or separate secrets by commas (during a rotation: the new and the old one)")
	flag.Var(&publicKeys, "public-key", "an Ed25519 public key (whpk_<base64>, from GET /api/v1/connection/{key}/signing-key) to verify v1a signatures with; repeat the flag or separate keys by commas")
	genKey := flag.Bool("gen-key", false, "print a new Ed25519 key pair, SIGNING_KEY=whsk_… for the connection's signing_key and PUBLIC_KEY=whpk_… for -public-key, and exit")
	flag.BoolVar(&o.Halt, "halt", false, "answer pre-execution two-way calls with halt=true")
	flag.StringVar(&o.DerivedEmail, "derived-email", "", "derived_identity.email to answer two-way calls with")
	flag.StringVar(&o.DerivedPhone, "derived-phone", "", "derived_identity.phone_number to answer two-way calls with")
	flag.StringVar(&o.DerivedIdentity, "derived-identity", "", `a derived identity in fides's shape to answer two-way calls with, e.g. {"ga_client_id": "GA1.2", "loyalty_id": {"label": "Loyalty ID", "value": "CH-1"}}`)
	flag.BoolVar(&o.NotEligible, "not-eligible", false, "reply not eligible to pre-approval calls (eligible otherwise)")
	flag.DurationVar(&o.ResumeAfter, "resume-after", 3*time.Second, "after halting (or a pre-approval call), post the reply-to-token back after this delay (0: never)")
	flag.BoolVar(&o.ResumeOnEnter, "resume-on-enter", false, "after halting (or a pre-approval call), post the reply-to-token back when Enter is pressed (instead of after a delay)")
	flag.StringVar(&o.CallbackBase, "callback-base", "http://127.0.0.1:8081", "base URL for a reply-to that is a path alone")
	flag.Parse()
	if *genKey {
		if err := GenerateKey(os.Stdout, nil); err != nil {
			fmt.Fprintln(os.Stderr, "receiver:", err)
			os.Exit(1)
		}
		return
	}
	v, err := NewVerifier(secrets, publicKeys)
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(2)
	}
	o.Verifier = v
	if o.DerivedIdentity != "" {
		var probe map[string]any
		if err := json.Unmarshal([]byte(o.DerivedIdentity), &probe); err != nil {
			fmt.Fprintln(os.Stderr, "receiver: -derived-identity must be a JSON object:", err)
			os.Exit(2)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o Options) error {
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	r := NewReceiver(o, os.Stdout)
	if o.ResumeOnEnter {
		go r.ResumeOnEnter(os.Stdin)
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	when := "after " + o.ResumeAfter.String()
	if o.ResumeOnEnter {
		when = "when Enter is pressed"
	}
	fmt.Printf("receiver listening on http://%s (halt=%v, resume %s, %s)\n", ln.Addr(), o.Halt, when, o.Verifier)
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	r.Wait()
	return nil
}
