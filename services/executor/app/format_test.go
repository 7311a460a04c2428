package app_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
)

// TestNewerRecordFormatIsLeftAlone: a record written in a newer format than this executor reads
// (SPEC §5, a rolling upgrade with a newer executor beside) is never rewritten, and the message about
// it is not acknowledged: it stays for an executor that can read the record.
func TestNewerRecordFormatIsLeftAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	ctx := context.Background()
	kv := e.nats.Bucket(t, event.BucketRequests)
	newer := map[string]any{"format": event.RecordFormat + 1, "id": "pri_newer", "policy_key": "p", "status": "paused",
		"step": "pre_webhooks", "pause": 1,
		"plan": map[string]any{"policy_key": "p", "pre_execution": []any{}, "post_execution": []any{}}}
	b, _ := json.Marshal(newer)
	rev, err := kv.Put(ctx, event.KVKey("pri_newer"), b)
	if err != nil {
		t.Fatal(err)
	}
	seq := e.publishJSON(event.SubjectRetry, event.Retry{RequestID: "pri_newer", FromError: 0})

	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if info := e.consumerInfo(app.ConsumerControl); info.Delivered.Stream >= seq && info.NumAckPending > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	info := e.consumerInfo(app.ConsumerControl)
	if info.Delivered.Stream < seq || info.NumAckPending == 0 {
		t.Fatalf("consumer delivered up to %d, %d unacknowledged; want the retry (seq %d) delivered and not acknowledged",
			info.Delivered.Stream, info.NumAckPending, seq)
	}
	entry, err := kv.Get(ctx, event.KVKey("pri_newer"))
	if err != nil || entry.Revision() != rev || string(entry.Value()) != string(b) {
		t.Fatalf("the record was rewritten: %v, revision %d (want %d)", err, entry.Revision(), rev)
	}
}
