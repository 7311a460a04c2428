package store

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

const appKey = "0123456789abcdef0123456789abcdef"

func record(id string) *lifecycle.Record {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &lifecycle.Record{Request: event.Request{ID: id, PolicyKey: "p", Status: event.StatusInProcessing,
		Step: event.StepPreWebhooks, Run: 1, CreatedAt: at, UpdatedAt: at, Webhooks: []event.WebhookRecord{},
		Plan: event.Plan{PolicyKey: "p", Version: 1, PublishedAt: at,
			Pre: []event.PlanWebhook{{ID: "w1", Key: "a", Direction: event.TwoWay}}}}}
}

// TestRecords checks Create, Load and Update against a real KV bucket: the compare-and-set on the
// revision and the errors of each failure.
func TestRecords(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketRequests)
	ops := map[string]int{}
	s := NewRecords(kv, plansnapshots.New(n.Bucket(t, event.BucketPlanSnapshots)), n.JS, time.Hour, func(op string) { ops[op]++ })
	ctx := t.Context()

	for _, id := range []string{"pri_1", "urn:req.1:a"} {
		t.Run(id, func(t *testing.T) {
			if _, _, err := s.Load(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Load before Create: %v, want ErrNotFound", err)
			}
			r := record(id)
			rev, err := s.Create(ctx, r)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := kv.Get(ctx, event.KVKey(id)); err != nil {
				t.Errorf("the record is not under the key %q: %v", event.KVKey(id), err)
			}
			if _, err := s.Create(ctx, record(id)); !errors.Is(err, ErrExists) {
				t.Errorf("second Create: %v, want ErrExists", err)
			}
			got, grev, err := s.Load(ctx, id)
			if err != nil || grev != rev || !reflect.DeepEqual(got, r) {
				t.Fatalf("Load: %+v rev %d, %v; want %+v rev %d", got, grev, err, r, rev)
			}

			got.Next, got.Status = 1, event.StatusPaused
			rev2, err := s.Update(ctx, got, rev)
			if err != nil || rev2 <= rev {
				t.Fatalf("Update at rev %d: rev %d, %v; want a later revision", rev, rev2, err)
			}
			stale := record(id)
			stale.Next = 5
			if _, err := s.Update(ctx, stale, rev); !errors.Is(err, ErrConflict) {
				t.Errorf("Update at the stale rev %d: %v, want ErrConflict", rev, err)
			}
			if back, brev, err := s.Load(ctx, id); err != nil || brev != rev2 || !reflect.DeepEqual(back, got) {
				t.Errorf("Load after Update: %+v rev %d, %v; want %+v rev %d", back, brev, err, got, rev2)
			}
		})
	}

	t.Run("update of an unknown id", func(t *testing.T) {
		if _, err := s.Update(ctx, record("pri_unknown"), 3); !errors.Is(err, ErrConflict) {
			t.Errorf("Update: %v, want ErrConflict", err)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		if _, err := s.Create(ctx, record("pri_del")); err != nil {
			t.Fatal(err)
		}
		if err := kv.Delete(ctx, "pri_del"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Load(ctx, "pri_del"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Load of a deleted record: %v, want ErrNotFound", err)
		}
		if _, err := s.Create(ctx, record("pri_del")); err != nil {
			t.Errorf("Create after a delete: %v", err)
		}
	})
	t.Run("undecodable", func(t *testing.T) {
		if _, err := kv.Put(ctx, "pri_bad", []byte("{")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Load(ctx, "pri_bad"); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Load of an undecodable record: %v, want a decode error", err)
		}
	})
	if ops["kv_create"] == 0 || ops["kv_get"] == 0 || ops["kv_update"] == 0 {
		t.Errorf("counted %v, want kv_create, kv_get and kv_update", ops)
	}
}

// TestRecordRetention: a record carries a TTL of REQUEST_RETENTION from the write that makes it
// complete on (an update, or a record created complete), every later write carries it again, and
// a record not complete carries none; once the TTL runs out the record is gone. The compare-and-set
// holds for the writes with a TTL as for the others.
func TestRecordRetention(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketRequests)
	const retention = 2 * time.Second
	s := NewRecords(kv, plansnapshots.New(n.Bucket(t, event.BucketPlanSnapshots)), n.JS, retention, nil)
	forever := NewRecords(kv, plansnapshots.New(n.Bucket(t, event.BucketPlanSnapshots)), n.JS, 0, nil)
	ctx := t.Context()
	stream, err := n.JS.Stream(ctx, "KV_"+event.BucketRequests)
	if err != nil {
		t.Fatal(err)
	}
	// ttlOf returns the Nats-TTL header of the stored message of id ("" when none).
	ttlOf := func(id string) string {
		t.Helper()
		m, err := stream.GetLastMsgForSubject(ctx, natsconn.KeySubject(event.BucketRequests, event.KVKey(id)))
		if err != nil {
			t.Fatalf("the stored message of %s: %v", id, err)
		}
		return m.Header.Get(jetstream.MsgTTLHeader)
	}

	r := record("pri_ret")
	rev, err := s.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := ttlOf("pri_ret"); got != "" {
		t.Fatalf("in_processing record: TTL %q, want none", got)
	}
	r.Status = event.StatusComplete
	if _, err := s.Update(ctx, r, rev+7); !errors.Is(err, ErrConflict) {
		t.Fatalf("Update with a TTL at a stale revision: %v, want ErrConflict", err)
	}
	rev2, err := s.Update(ctx, r, rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("Update to complete: rev %d, %v", rev2, err)
	}
	if got := ttlOf("pri_ret"); got != retention.String() {
		t.Fatalf("complete record: TTL %q, want %s", got, retention)
	}
	rev3, err := s.Update(ctx, r, rev2)
	if err != nil {
		t.Fatalf("a later write of the complete record: %v", err)
	}
	if got := ttlOf("pri_ret"); got != retention.String() {
		t.Fatalf("after a later write: TTL %q, want %s again", got, retention)
	}
	if back, brev, err := s.Load(ctx, "pri_ret"); err != nil || brev != rev3 || back.Status != event.StatusComplete {
		t.Fatalf("Load: %+v rev %d, %v", back, brev, err)
	}

	done := record("pri_created_done")
	done.Status = event.StatusComplete
	if _, err := s.Create(ctx, done); err != nil {
		t.Fatal(err)
	}
	if got := ttlOf("pri_created_done"); got != retention.String() {
		t.Fatalf("record created complete: TTL %q, want %s", got, retention)
	}
	denied := record("pri_denied")
	denied.Status = event.StatusDenied
	if _, err := s.Create(ctx, denied); err != nil {
		t.Fatal(err)
	}
	if got := ttlOf("pri_denied"); got != retention.String() {
		t.Fatalf("denied record: TTL %q, want %s (finished like a complete one)", got, retention)
	}
	kept := record("pri_kept")
	kept.Status = event.StatusComplete
	if _, err := forever.Create(ctx, kept); err != nil {
		t.Fatal(err)
	}
	if got := ttlOf("pri_kept"); got != "" {
		t.Fatalf("REQUEST_RETENTION=0: TTL %q, want none", got)
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		_, _, err1 := s.Load(ctx, "pri_ret")
		_, _, err2 := s.Load(ctx, "pri_created_done")
		if errors.Is(err1, ErrNotFound) && errors.Is(err2, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("complete records still there %v after their TTL: %v, %v", 15*time.Second, err1, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, _, err := s.Load(ctx, "pri_kept"); err != nil {
		t.Fatalf("the record kept for good: %v", err)
	}
}

// TestRecordTooLarge checks that a record over the NATS maximum payload is refused with
// ErrTooLarge, by Create and by Update, and that the stored record is left as it was.
func TestRecordTooLarge(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketRequests)
	s := NewRecords(kv, plansnapshots.New(n.Bucket(t, event.BucketPlanSnapshots)), n.JS, time.Hour, nil)
	ctx := t.Context()
	huge := strings.Repeat("x", int(n.NC.MaxPayload())+1)

	big := record("pri_big")
	big.ExternalID = huge
	if _, err := s.Create(ctx, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Create of %d bytes: %v, want ErrTooLarge", len(huge), err)
	}
	if _, _, err := s.Load(ctx, "pri_big"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load after the refused Create: %v, want ErrNotFound", err)
	}

	r := record("pri_small")
	rev, err := s.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	grown := record("pri_small")
	grown.Error = &event.RequestError{Step: event.StepPreWebhooks, Message: huge}
	if _, err := s.Update(ctx, grown, rev); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Update of %d bytes: %v, want ErrTooLarge", len(huge), err)
	}
	if got, grev, err := s.Load(ctx, "pri_small"); err != nil || grev != rev || !reflect.DeepEqual(got, r) {
		t.Errorf("Load after the refused Update: %+v rev %d, %v; want %+v rev %d", got, grev, err, r, rev)
	}
	// The record still takes a normal write at its revision.
	if _, err := s.Update(ctx, r, rev); err != nil {
		t.Errorf("Update after the refused one: %v", err)
	}
}

func identitiesKeyring(t *testing.T) *secret.Keyring {
	t.Helper()
	k, err := secret.NewKeyring(appKey, "", secret.PurposeIdentities)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func identity(email string) event.Identity { return event.Identity{Email: &email} }

func identitiesBucket(t *testing.T, n *testkit.NATS, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	kv, err := natsconn.IdentitiesBucket(t.Context(), n.JS, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestIdentities checks identities and patches against a real KV bucket: Create keeps a stored
// identity, Put replaces it, values are sealed for their request, patches live beside the
// identity under <key>.patch.<name>, and ids holding ':' and '.' work.
func TestIdentities(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := identitiesBucket(t, n, time.Hour)
	keys := identitiesKeyring(t)
	const ttl = 10 * time.Minute
	ops := map[string]int{}
	s := NewIdentities(kv, n.JS, keys, ttl, func(op string) { ops[op]++ })
	ctx := t.Context()

	for _, id := range []string{"pri_1", "urn:req.1:a"} {
		t.Run(id, func(t *testing.T) {
			first, second := identity("first@example.com"), identity("second@example.com")
			before := time.Now()
			exp, created, err := s.Create(ctx, id, first)
			if err != nil || !created {
				t.Fatalf("Create: created %v, %v; want created", created, err)
			}
			if exp.Before(before.Add(ttl)) || exp.After(time.Now().Add(ttl)) {
				t.Errorf("Create: expires %s, want now + %s", exp, ttl)
			}
			exp, created, err = s.Create(ctx, id, second)
			if err != nil || created || !exp.IsZero() {
				t.Errorf("second Create: expires %s, created %v, %v; want the stored one kept (zero time, false)", exp, created, err)
			}
			if got, err := s.Get(ctx, id); err != nil || !reflect.DeepEqual(got, first) {
				t.Errorf("Get after Create: %+v, %v; want the first identity", got, err)
			}

			e, err := kv.Get(ctx, event.KVKey(id))
			if err != nil {
				t.Fatalf("raw Get of %q: %v", event.KVKey(id), err)
			}
			if bytes.Contains(e.Value(), []byte("first@example.com")) || bytes.Contains(e.Value(), []byte("email")) {
				t.Errorf("the stored value holds the plaintext: %q", e.Value())
			}

			before = time.Now()
			exp, err = s.Put(ctx, id, second)
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if exp.Before(before.Add(ttl)) || exp.After(time.Now().Add(ttl)) {
				t.Errorf("Put: expires %s, want now + %s", exp, ttl)
			}
			if got, err := s.Get(ctx, id); err != nil || !reflect.DeepEqual(got, second) {
				t.Errorf("Get after Put: %+v, %v; want the second identity", got, err)
			}

			// Patches.
			derived := identity("derived@example.com")
			if _, err := s.Patch(ctx, id, "jti1"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Patch before PutPatch: %v, want ErrNotFound", err)
			}
			if err := s.PutPatch(ctx, id, "jti1", derived); err != nil {
				t.Fatalf("PutPatch: %v", err)
			}
			pe, err := kv.Get(ctx, event.KVKey(id)+".patch.jti1")
			if err != nil {
				t.Errorf("the patch is not under %q: %v", event.KVKey(id)+".patch.jti1", err)
			} else if bytes.Contains(pe.Value(), []byte("derived@example.com")) {
				t.Errorf("the stored patch holds the plaintext: %q", pe.Value())
			}
			if got, err := s.Patch(ctx, id, "jti1"); err != nil || !reflect.DeepEqual(got, derived) {
				t.Errorf("Patch: %+v, %v; want %+v", got, err, derived)
			}
			if _, err := s.Patch(ctx, id, "jti2"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Patch of another name: %v, want ErrNotFound", err)
			}
			if got, err := s.Get(ctx, id); err != nil || !reflect.DeepEqual(got, second) {
				t.Errorf("Get after PutPatch: %+v, %v; want the identity unchanged", got, err)
			}
			for i := range 2 {
				if err := s.DeletePatch(ctx, id, "jti1"); err != nil {
					t.Errorf("DeletePatch %d: %v", i+1, err)
				}
			}
			if _, err := s.Patch(ctx, id, "jti1"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Patch after DeletePatch: %v, want ErrNotFound", err)
			}

			for i := range 2 {
				if err := s.Delete(ctx, id); err != nil {
					t.Errorf("Delete %d: %v", i+1, err)
				}
			}
			if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after Delete: %v, want ErrNotFound", err)
			}
			if _, created, err := s.Create(ctx, id, first); err != nil || !created {
				t.Errorf("Create after Delete: created %v, %v; want created", created, err)
			}
		})
	}

	t.Run("sealed for its request", func(t *testing.T) {
		if _, err := s.Put(ctx, "pri_a", identity("a@example.com")); err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "pri_a")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "pri_b", e.Value()); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "pri_b"); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Get of pri_a's value under pri_b: %+v, %v; want an error opening it", got, err)
		}
	})

	t.Run("a patch name is not another request's key", func(t *testing.T) {
		own, patch := identity("own@example.com"), identity("patch@example.com")
		if _, err := s.Put(ctx, "a.patch.b", own); err != nil {
			t.Fatal(err)
		}
		if err := s.PutPatch(ctx, "a", "b", patch); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "a.patch.b"); err != nil || !reflect.DeepEqual(got, own) {
			t.Errorf("Get(a.patch.b): %+v, %v; want %+v", got, err, own)
		}
		if got, err := s.Patch(ctx, "a", "b"); err != nil || !reflect.DeepEqual(got, patch) {
			t.Errorf("Patch(a, b): %+v, %v; want %+v", got, err, patch)
		}
	})

	t.Run("too large", func(t *testing.T) {
		huge := identity(strings.Repeat("x", int(n.NC.MaxPayload())))
		if _, _, err := s.Create(ctx, "pri_huge", huge); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Create: %v, want ErrTooLarge", err)
		}
		if _, err := s.Put(ctx, "pri_huge", huge); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Put: %v, want ErrTooLarge", err)
		}
	})
	for _, op := range []string{"kv_create", "kv_put", "kv_get", "stream_purge"} {
		if ops[op] == 0 {
			t.Errorf("counted %v, want %s counted", ops, op)
		}
	}
}

// TestIdentityTTL checks the per-entry TTL: with a store TTL of 2s an identity (created or put) and
// a patch are gone after it, entries written with a longer TTL before stay, and the bucket's
// MaxAge, created longer, is never lowered by opening it with a shorter TTL (D27).
func TestIdentityTTL(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := t.Context()
	identitiesBucket(t, n, time.Hour)
	kv := identitiesBucket(t, n, time.Second)
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != time.Hour {
		t.Errorf("bucket MaxAge %s after opening it with 1s, want 1h kept", st.TTL())
	}
	keys := identitiesKeyring(t)
	long := NewIdentities(kv, n.JS, keys, time.Hour, nil)
	const ttl = 2 * time.Second
	short := NewIdentities(kv, n.JS, keys, ttl, nil)

	kept := identity("kept@example.com")
	if _, err := long.Put(ctx, "pri_long", kept); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ident := identity("a@example.com")
	if _, created, err := short.Create(ctx, "urn:created.1", ident); err != nil || !created {
		t.Fatalf("Create: %v %v", created, err)
	}
	if _, err := short.Put(ctx, "pri_put", ident); err != nil {
		t.Fatal(err)
	}
	if err := short.PutPatch(ctx, "pri_put", "jti", ident); err != nil {
		t.Fatal(err)
	}
	gets := map[string]func() error{
		"created": func() error { _, err := short.Get(ctx, "urn:created.1"); return err },
		"put":     func() error { _, err := short.Get(ctx, "pri_put"); return err },
		"patch":   func() error { _, err := short.Patch(ctx, "pri_put", "jti"); return err },
	}
	for name, get := range gets {
		if err := get(); err != nil {
			t.Errorf("%s: read right after the write: %v", name, err)
		}
	}
	for name, get := range gets {
		testkit.Eventually(t, ttl+5*time.Second, name+" identity to expire", func() bool {
			return errors.Is(get(), ErrNotFound)
		})
		if gone := time.Since(start); gone < ttl-200*time.Millisecond {
			t.Errorf("%s: gone after %s, before its TTL of %s", name, gone, ttl)
		}
	}
	if got, err := short.Get(ctx, "pri_long"); err != nil || !reflect.DeepEqual(got, kept) {
		t.Errorf("an identity written with a TTL of 1h, after %s: %+v, %v; want it kept", time.Since(start), got, err)
	}
	// An expired identity can be created again.
	if _, created, err := short.Create(ctx, "urn:created.1", ident); err != nil || !created {
		t.Errorf("Create after expiry: created %v, %v; want created", created, err)
	}

	// The bucket's MaxAge grows with a longer TTL and never shrinks.
	for _, tc := range []struct {
		ttl, want time.Duration
	}{{2 * time.Hour, 2 * time.Hour}, {time.Minute, 2 * time.Hour}, {0, 2 * time.Hour}} {
		kv := identitiesBucket(t, n, tc.ttl)
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != tc.want {
			t.Errorf("opened with %s: MaxAge %s, want %s", tc.ttl, st.TTL(), tc.want)
		}
	}
}

// TestIdentityForget checks Forget and ForgetAll against a real bucket: with nothing to keep,
// Forget removes the identity alone and ForgetAll every patch of its request too, leaving no
// message (and so no marker) on their subjects and another request's entries alone; both are
// idempotent; with a time ahead the identity is kept until then and no longer, even when its own
// TTL is longer.
func TestIdentityForget(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := t.Context()
	kv := identitiesBucket(t, n, time.Hour)
	ops := map[string]int{}
	s := NewIdentities(kv, n.JS, identitiesKeyring(t), time.Hour, func(op string) { ops[op]++ })
	stream, err := n.JS.Stream(ctx, "KV_"+event.BucketIdentities)
	if err != nil {
		t.Fatal(err)
	}
	subjects := func(id string) int {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(natsconn.KeySubject(event.BucketIdentities, event.KVKey(id))+".>"))
		if err != nil {
			t.Fatal(err)
		}
		left := len(info.State.Subjects)
		if _, err := stream.GetLastMsgForSubject(ctx, natsconn.KeySubject(event.BucketIdentities, event.KVKey(id))); err == nil {
			left++
		}
		return left
	}
	for _, id := range []string{"pri_gone", "urn:gone.1", "pri_other"} {
		if _, err := s.Put(ctx, id, identity(id+"@example.com")); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"jti1", "jti2"} {
			if err := s.PutPatch(ctx, id, name, identity("derived@example.com")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Forget(ctx, "pri_gone", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "pri_gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Forget: %v, want ErrNotFound", err)
	}
	if left := subjects("pri_gone"); left != 2 {
		t.Errorf("after Forget, %d subjects keep messages, want the 2 patches alone", left)
	}
	for _, id := range []string{"pri_gone", "urn:gone.1"} {
		for range 2 { // the second time finds nothing to forget
			if err := s.ForgetAll(ctx, id, time.Now()); err != nil {
				t.Fatalf("ForgetAll(%s): %v", id, err)
			}
		}
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) after Forget: %v, want ErrNotFound", id, err)
		}
		if _, err := s.Patch(ctx, id, "jti1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Patch(%s) after Forget: %v, want ErrNotFound", id, err)
		}
		if left := subjects(id); left != 0 {
			t.Errorf("%s: %d subjects keep messages after Forget, want none (no marker either)", id, left)
		}
	}
	if left := subjects("pri_other"); left != 3 {
		t.Errorf("another request keeps %d subjects, want its identity and 2 patches", left)
	}
	if ops["stream_purge"] == 0 || ops["stream_info"] != 1 {
		t.Errorf("counted %v, want stream_purge counted and the stream looked up once", ops)
	}

	// Kept: until 2.5 s from now (2 whole seconds of TTL), though it was written with an hour.
	start := time.Now()
	until := start.Add(2500 * time.Millisecond)
	if err := s.ForgetAll(ctx, "pri_other", until); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "pri_other"); err != nil || *got.Email != "pri_other@example.com" {
		t.Errorf("Get right after a ForgetAll that keeps it: %+v, %v; want it kept", got, err)
	}
	if _, err := s.Patch(ctx, "pri_other", "jti2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a patch after a ForgetAll that keeps the identity: %v, want it gone", err)
	}
	testkit.Eventually(t, 10*time.Second, "the kept identity to expire", func() bool {
		_, err := s.Get(ctx, "pri_other")
		return errors.Is(err, ErrNotFound)
	})
	if gone := time.Since(start); gone < 1500*time.Millisecond || gone > 4*time.Second {
		t.Errorf("the kept identity was gone after %s, want about 2 s (never much after 2.5 s)", gone)
	}
}
