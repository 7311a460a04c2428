package sweep

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

// TestSweep runs a sweep against real buckets: it forgets the identity (and derived identities) of
// a complete and of a denied request, even one whose record says it was already forgotten (as
// after a NATS server revived it); it keeps the identity of a finished request still within
// FINISHED_IDENTITY_RETENTION, of a request still running, and of a request with no record (whose
// record may be being written), and a second sweep finds nothing more to do.
func TestSweep(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := t.Context()
	idKV, err := natsconn.IdentitiesBucket(ctx, n.JS, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.NewKeyring("0123456789abcdef0123456789abcdef", "", secret.PurposeIdentities)
	if err != nil {
		t.Fatal(err)
	}
	identities := store.NewIdentities(idKV, n.JS, keys, time.Hour, nil)
	erroredKV, err := natsconn.ErroredBucket(ctx, n.JS)
	if err != nil {
		t.Fatal(err)
	}
	errored := store.NewErrored(erroredKV, nil)
	records := store.NewRecords(n.Bucket(t, event.BucketRequests), plansnapshots.New(n.Bucket(t, event.BucketPlanSnapshots)), n.JS, 0, nil)
	now := time.Now()
	cfg := lifecycle.Config{IdentityTTL: time.Hour, FinishedIdentityRetention: 10 * time.Minute}
	put := func(id string, status event.Status, finishedAgo time.Duration) {
		email := id + "@example.com"
		if _, err := identities.Put(ctx, id, event.Identity{Email: &email}); err != nil {
			t.Fatal(err)
		}
		if err := identities.PutPatch(ctx, id, "jti", event.Identity{Email: &email}); err != nil {
			t.Fatal(err)
		}
		if status == "" {
			return // no record
		}
		at := now.Add(-finishedAgo)
		exp := now.Add(time.Hour)
		r := &lifecycle.Record{Request: event.Request{ID: id, PolicyKey: "p", Status: status, Step: event.StepPostWebhooks,
			Run: 1, CreatedAt: at, UpdatedAt: at, Webhooks: []event.WebhookRecord{},
			Plan: event.Plan{PolicyKey: "p", Version: 1, PublishedAt: at}}, IdentityExpiresAt: &exp}
		if status == event.StatusComplete || status == event.StatusDenied {
			r.FinishedProcessingAt = &at
		}
		if _, err := records.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	put("pri_complete", event.StatusComplete, time.Hour)
	put("urn:denied.1", event.StatusDenied, 11*time.Minute)
	put("pri_recent", event.StatusComplete, time.Minute)
	put("pri_running", event.StatusInProcessing, 0)
	put("pri_norecord", "", 0)
	// errored_requests: pri_failed is in error 1 (kept); pri_complete was retried to the end and
	// pri_running is being retried (both stale); pri_gone has no record (stale); pri_old failed
	// before the index existed (indexed by the sweep).
	put("pri_failed", event.StatusError, 0)
	put("pri_old", event.StatusError, 0)
	for id, count := range map[string]int{"pri_failed": 0, "pri_complete": 1, "pri_running": 1, "pri_gone": 1} {
		if err := errored.Put(ctx, event.Errored{ID: id, PolicyKey: "p", Step: event.StepPreWebhooks, ErrorCount: count, At: now}); err != nil {
			t.Fatal(err)
		}
	}

	s := &Sweeper{Records: records, Identities: identities, Errors: errored, Cfg: cfg, Log: zerolog.Nop()}
	res, err := s.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Checked: 7, Forgotten: 2, Kept: 1, Unindexed: 3, Indexed: 1}); res != want {
		t.Errorf("first sweep: %+v, want %+v", res, want)
	}
	left, err := identities.Requests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(left)
	if want := []string{"pri_failed", "pri_norecord", "pri_old", "pri_recent", "pri_running"}; !slices.Equal(left, want) {
		t.Errorf("requests with stored identities after the sweep: %q, want %q", left, want)
	}
	for _, id := range []string{"pri_complete", "urn:denied.1"} {
		if _, err := identities.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: identity after the sweep: %v, want it gone", id, err)
		}
		if _, err := identities.Patch(ctx, id, "jti"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: derived identity after the sweep: %v, want it gone", id, err)
		}
	}
	entries, err := errored.Entries(ctx)
	slices.SortFunc(entries, func(a, b store.Entry) int { return strings.Compare(a.ID, b.ID) })
	if err != nil || len(entries) != 2 || entries[0].ID != "pri_failed" || entries[1].ID != "pri_old" || entries[1].ErrorCount != 0 {
		t.Errorf("errored_requests after the sweep: %+v, %v; want pri_failed and pri_old", entries, err)
	}
	if res, err := s.Once(ctx); err != nil || res != (Result{Checked: 5, Kept: 1}) {
		t.Errorf("second sweep: %+v, %v; want 5 checked, 1 kept, nothing else done", res, err)
	}
	// An entry replaced after it was read (a later error) is not removed.
	if err := errored.Put(ctx, event.Errored{ID: "pri_failed", ErrorCount: 2}); err != nil {
		t.Fatal(err)
	}
	if err := errored.DeleteAt(ctx, "pri_failed", entries[0].Revision); !errors.Is(err, store.ErrConflict) {
		t.Errorf("DeleteAt of a replaced entry: %v, want ErrConflict", err)
	}
}
