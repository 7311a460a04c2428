package main

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// storedIdentity counts what privacy_identities holds of request id: its identity (an entry
// that reads) and the messages on its derived identities' subjects.
func (f *flow) storedIdentity(id string) int {
	f.t.Helper()
	kv, err := f.js.KeyValue(f.ctx, event.BucketIdentities)
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	switch _, err := kv.Get(f.ctx, event.KVKey(id)); {
	case err == nil:
		n++
	case !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted):
		f.t.Fatal(err)
	}
	stream, err := f.js.Stream(f.ctx, "KV_"+event.BucketIdentities)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := stream.Info(f.ctx, jetstream.WithSubjectFilter(natsconn.KeySubject(event.BucketIdentities, event.KVKey(id))+".>"))
	if err != nil {
		f.t.Fatal(err)
	}
	for _, count := range info.State.Subjects {
		n += int(count)
	}
	return n
}

// TestIdentityForgottenWhenComplete: a request that paused, was resumed with a derived identity
// (stored beside the identity, then merged) and completed has nothing left in privacy_identities,
// while a request still paused keeps its identity; with FINISHED_IDENTITY_RETENTION the identity
// of a complete request stays that long, and no longer (SPEC §5.1).
func TestIdentityForgottenWhenComplete(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep time.Duration
	}{{"removed at once", 0}, {"kept 3s", 3 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"EXECUTION_STAGE": "skip"}
			if tc.keep > 0 {
				env["FINISHED_IDENTITY_RETENTION"] = tc.keep.String()
			}
			f := newFlow(t, env)
			f.answer("/halt", `{"halt": true}`)
			f.policy("forgetting", []hookSpec{{"ask", "two_way", "/halt"}}, []hookSpec{{"after", "one_way", "/post"}})

			f.submit("pri_forget_waits", "forgetting", "waits@example.com")
			f.submit("pri_forget_done", "forgetting", "done@example.com")
			f.waitStatus("pri_forget_waits", "paused", 20*time.Second)
			f.waitStatus("pri_forget_done", "paused", 20*time.Second)
			var replyTo, tok string
			for _, c := range f.callsTo("/halt") {
				if f.body(c).ID == "pri_forget_done" {
					replyTo, tok = c.Header.Get("reply-to"), c.Header.Get("reply-to-token")
				}
			}
			if status, body := f.call(http.MethodPost, replyTo, `{"derived_identity": {"phone_number": "+15555550100"}}`, "Bearer "+tok); status != 200 {
				t.Fatalf("resume: %d %s", status, body)
			}
			f.waitStatus("pri_forget_done", "complete", 20*time.Second)
			done := time.Now()
			post := f.waitCalls("/post", 1, 10*time.Second)
			if b := f.body(post[0]); b.Identity.PhoneNumber == nil || *b.Identity.PhoneNumber != "+15555550100" {
				t.Fatalf("the post-execution call carried %+v, want the derived phone number (the identity was there)", b.Identity)
			}

			if n := f.storedIdentity("pri_forget_waits"); n != 1 {
				t.Errorf("the paused request has %d messages in privacy_identities, want its identity", n)
			}
			if tc.keep == 0 {
				testkit.Eventually(t, 5*time.Second, "the complete request's identity to be gone", func() bool {
					return f.storedIdentity("pri_forget_done") == 0
				})
				// Purged from the stream: not even a marker is left.
				stream, err := f.js.Stream(f.ctx, "KV_"+event.BucketIdentities)
				if err != nil {
					t.Fatal(err)
				}
				info, err := stream.Info(f.ctx, jetstream.WithSubjectFilter(natsconn.KeySubject(event.BucketIdentities, event.KVKey("pri_forget_done"))))
				if err != nil || len(info.State.Subjects) != 0 {
					t.Errorf("the identity's subject keeps messages %v (%v), want none", info.State.Subjects, err)
				}
				return
			}
			if n := f.storedIdentity("pri_forget_done"); n != 1 {
				t.Errorf("right after it completed, %d messages of the request in privacy_identities, want the identity alone (kept)", n)
			}
			testkit.Eventually(t, tc.keep+5*time.Second, "the kept identity to be gone", func() bool {
				return f.storedIdentity("pri_forget_done") == 0
			})
			if gone := time.Since(done); gone < tc.keep-1500*time.Millisecond {
				t.Errorf("the identity was gone %s after the request completed, before FINISHED_IDENTITY_RETENTION (%s)", gone, tc.keep)
			}
		})
	}
}
