package publish

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/runner"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// awaitAck waits for an asynchronous publish and returns its ack.
func awaitAck(t *testing.T, a runner.Ack) *jetstream.PubAck {
	t.Helper()
	select {
	case ack := <-a.Ok():
		return ack
	case err := <-a.Err():
		t.Fatalf("status publish failed: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("status publish: no ack within 5s")
	}
	return nil
}

// stored returns the payloads and Nats-Msg-Id headers of the stream's messages on subject.
func stored(t *testing.T, n *testkit.NATS, subject string) (payloads [][]byte, ids []string) {
	t.Helper()
	for _, m := range n.Msgs(t, subject) {
		payloads = append(payloads, m.Data())
		ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
	}
	return payloads, ids
}

// TestStatus checks that a status event lands on privacy.request.status.<status> with Nats-Msg-Id
// status:<id>:<seq>, that publishing it again is stored once, and that another seq is another event.
func TestStatus(t *testing.T) {
	n := testkit.StartNATS(t)
	var ops []string
	p := New(n.JS, 0, func(op string) { ops = append(ops, op) })
	prev := event.StatusInProcessing
	ev := event.StatusChanged{ID: "urn:req.1", TimelineEntry: event.TimelineEntry{Seq: 3, Status: event.StatusComplete, Previous: &prev, At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Step: event.StepPostWebhooks}}

	for i, want := range []bool{false, true} {
		a, err := p.Status(context.Background(), ev)
		if err != nil {
			t.Fatalf("publish %d: %v", i+1, err)
		}
		if ack := awaitAck(t, a); ack.Duplicate != want {
			t.Errorf("publish %d: duplicate %v, want %v", i+1, ack.Duplicate, want)
		}
	}
	ev2 := ev
	ev2.Seq = 4
	a, err := p.Status(context.Background(), ev2)
	if err != nil {
		t.Fatal(err)
	}
	awaitAck(t, a)

	payloads, ids := stored(t, n, "privacy.request.status.complete")
	if want := []string{"status:urn:req.1:3", "status:urn:req.1:4"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("stored Nats-Msg-Ids %q, want %q (the repeat stored once)", ids, want)
	}
	var got event.StatusChanged
	if err := json.Unmarshal(payloads[0], &got); err != nil {
		t.Fatalf("payload %s: %v", payloads[0], err)
	}
	if !reflect.DeepEqual(got, ev) {
		t.Errorf("stored event %+v, want %+v", got, ev)
	}
	if all := n.Msgs(t, ""); len(all) != 2 {
		t.Errorf("stream holds %d messages, want 2 (nothing on other subjects)", len(all))
	}
	if want := []string{"js_publish_async", "js_publish_async", "js_publish_async"}; !reflect.DeepEqual(ops, want) {
		t.Errorf("counted %q, want %q", ops, want)
	}
}

// TestSync checks Execute, Invalid and Rejected: each on its subject, de-duplicated on its message
// id (Rejected's names its payload: another payload is another event).
func TestSync(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	email := "a@example.com"
	exec := event.Execute{ID: "pri_1", ExecutionID: event.ExecutionID("pri_1", 1), PolicyKey: "p",
		Identity: event.Identity{Email: &email}}
	exec2 := exec
	exec2.ExecutionID = event.ExecutionID("pri_1", 2)
	invalid := event.StatusChanged{ID: "pri_2", TimelineEntry: event.TimelineEntry{Status: event.StatusError, At: at, Error: "bad"}}
	rejected := event.Rejected{Reason: "not JSON", Payload: "{", At: at}

	for _, tc := range []struct {
		name    string
		publish func(ctx context.Context, p *Publisher) error
		times   int
		subject string
		wantIDs []string
		want    any // the payload, decoded into a value of its type
	}{
		{name: "execute", subject: event.SubjectExecute, times: 2,
			publish: func(ctx context.Context, p *Publisher) error { return p.Execute(ctx, exec) },
			wantIDs: []string{exec.ExecutionID}, want: exec},
		{name: "execute of another run", subject: event.SubjectExecute, times: 1,
			publish: func(ctx context.Context, p *Publisher) error {
				if err := p.Execute(ctx, exec); err != nil {
					return err
				}
				return p.Execute(ctx, exec2)
			},
			wantIDs: []string{exec.ExecutionID, exec2.ExecutionID}, want: exec},
		{name: "invalid", subject: "privacy.request.status.error", times: 2,
			publish: func(ctx context.Context, p *Publisher) error { return p.Invalid(ctx, invalid, "invalid:pri_2:abc") },
			wantIDs: []string{"invalid:pri_2:abc"}, want: invalid},
		{name: "rejected", subject: event.SubjectRejected, times: 2,
			publish: func(ctx context.Context, p *Publisher) error { return p.Rejected(ctx, rejected) },
			wantIDs: []string{"rejected:021fb596db81e6d02bf3d2586ee3981f"}, want: rejected},
		{name: "rejected, another payload", subject: event.SubjectRejected, times: 1,
			publish: func(ctx context.Context, p *Publisher) error {
				if err := p.Rejected(ctx, rejected); err != nil {
					return err
				}
				other := rejected
				other.Payload = "[]"
				return p.Rejected(ctx, other)
			},
			wantIDs: []string{"rejected:021fb596db81e6d02bf3d2586ee3981f", "rejected:4f53cda18c2baa0c0354bb5f9a3ecbe5"}, want: rejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := testkit.StartNATS(t)
			p := New(n.JS, 0, nil)
			for range tc.times {
				if err := tc.publish(t.Context(), p); err != nil {
					t.Fatalf("publish: %v", err)
				}
			}
			payloads, ids := stored(t, n, tc.subject)
			if !reflect.DeepEqual(ids, tc.wantIDs) {
				t.Fatalf("stored Nats-Msg-Ids %q on %s, want %q", ids, tc.subject, tc.wantIDs)
			}
			got := reflect.New(reflect.TypeOf(tc.want))
			if err := json.Unmarshal(payloads[0], got.Interface()); err != nil {
				t.Fatalf("payload %s: %v", payloads[0], err)
			}
			if !reflect.DeepEqual(got.Elem().Interface(), tc.want) {
				t.Errorf("stored %+v, want %+v", got.Elem().Interface(), tc.want)
			}
			if all := n.Msgs(t, ""); len(all) != len(tc.wantIDs) {
				t.Errorf("stream holds %d messages, want %d (nothing on other subjects)", len(all), len(tc.wantIDs))
			}
		})
	}
}

// TestExecuteTTL checks that an execute message, which carries the identity, carries a TTL of
// EXECUTION_TIMEOUT and is gone from the stream after it, while other messages stay.
func TestExecuteTTL(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := t.Context()
	email := "a@example.com"
	p := New(n.JS, 2*time.Second, nil)
	if err := p.Execute(ctx, event.Execute{ID: "pri_1", ExecutionID: event.ExecutionID("pri_1", 1), PolicyKey: "p",
		Identity: event.Identity{Email: &email}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Rejected(ctx, event.Rejected{Reason: "not JSON", Payload: "{", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	msgs := n.Msgs(t, event.SubjectExecute)
	if len(msgs) != 1 || msgs[0].Headers().Get(jetstream.MsgTTLHeader) != "2s" {
		t.Fatalf("execute stored %d times, TTL header %q; want once with 2s", len(msgs), msgs[0].Headers().Get(jetstream.MsgTTLHeader))
	}
	stream, err := n.JS.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the execute message to expire", func() bool {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(event.SubjectExecute))
		return err == nil && info.State.Subjects[event.SubjectExecute] == 0
	})
	if left := n.Msgs(t, event.SubjectRejected); len(left) != 1 {
		t.Errorf("%d rejected messages left, want the one without a TTL kept", len(left))
	}
}
