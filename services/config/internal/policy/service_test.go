package policy_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/services/config/internal/store"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/rs/zerolog"
)

type nopPublisher struct{}

func (nopPublisher) PublishPolicies(context.Context, ...string) error { return nil }
func (nopPublisher) RemovePolicy(context.Context, string) error       { return nil }
func (nopPublisher) Republish(context.Context) error                  { return nil }

// pauseSave is the policy service's store with its first SaveWebhooks or SavePreApproval held until resume, after
// telling reached: a connection change can then run between the service's checks and its write.
type pauseSave struct {
	*store.Store
	once    sync.Once
	reached chan struct{}
	resume  chan struct{}
}

func (p *pauseSave) SaveWebhooks(ctx context.Context, pol policy.Policy, now time.Time) (policy.Policy, error) {
	p.hold()
	return p.Store.SaveWebhooks(ctx, pol, now)
}

func (p *pauseSave) SavePreApproval(ctx context.Context, pol policy.Policy, now time.Time) (policy.Policy, error) {
	p.hold()
	return p.Store.SavePreApproval(ctx, pol, now)
}

func (p *pauseSave) hold() {
	p.once.Do(func() {
		close(p.reached)
		<-p.resume
	})
}

// pauseDelete is the connection service's store with DeleteConnection and UpsertConnection held
// until resume, after telling reached: a webhook edit can then run between the connection
// service's checks and its write.
type pauseDelete struct {
	*store.Store
	reached chan struct{}
	resume  chan struct{}
}

func (p *pauseDelete) hold() {
	close(p.reached)
	<-p.resume
}

func (p *pauseDelete) DeleteConnection(ctx context.Context, key string) error {
	p.hold()
	return p.Store.DeleteConnection(ctx, key)
}

func (p *pauseDelete) UpsertConnection(ctx context.Context, in connection.Input, now time.Time) (connection.Connection, error) {
	p.hold()
	return p.Store.UpsertConnection(ctx, in, now)
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	kr  *secret.Keyring
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	st, err := store.Open(ctx, ferret.ForTest(t), "policytest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	kr, err := secret.NewKeyring("0123456789abcdef0123456789abcdef", "", secret.PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, st: st, kr: kr}
}

func (f *fixture) policies(st policy.Store) *policy.Service {
	return policy.NewService(st, f.st, nopPublisher{}, zerolog.Nop())
}

func (f *fixture) connections(st connection.Store) *connection.Service {
	return connection.NewService(st, f.st, nopPublisher{}, f.kr, netguard.Policy{}, nil, zerolog.Nop())
}

func (f *fixture) upsertConn(key string, typ connection.Type) {
	f.t.Helper()
	_, failed, err := f.connections(f.st).Upsert(f.ctx, []connection.Input{{Key: key, Name: "Conn " + key, Type: typ, Access: "read"}})
	if err != nil || len(failed) > 0 {
		f.t.Fatalf("upsert connection %s: %v %+v", key, err, failed)
	}
}

func (f *fixture) upsertPolicy(key string) {
	f.t.Helper()
	if _, _, err := f.policies(f.st).Upsert(f.ctx, []policy.Input{{Key: key, Name: "Policy " + key}}); err != nil {
		f.t.Fatal(err)
	}
}

// broken lists every webhook (pre-approval ones included) whose connection is missing or not
// https, as "<policy>.<kind>.<key> -> <connection> (<why>)".
func (f *fixture) broken() []string {
	f.t.Helper()
	all, err := f.st.AllPolicies(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	list, err := f.st.GetPreApproval(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	all = append(all, list)
	var out []string
	for _, p := range all {
		conns, err := f.st.GetConnections(f.ctx, p.ConnectionKeys())
		if err != nil {
			f.t.Fatal(err)
		}
		for _, kind := range []policy.Kind{policy.Pre, policy.Post} {
			for _, w := range p.Webhooks(kind) {
				c, ok := conns[w.ConnectionKey]
				switch {
				case !ok:
					out = append(out, fmt.Sprintf("%s.%s.%s -> %s (missing)", p.Key, kind, w.Key, w.ConnectionKey))
				case c.Type != connection.HTTPS:
					out = append(out, fmt.Sprintf("%s.%s.%s -> %s (type %s)", p.Key, kind, w.Key, w.ConnectionKey, c.Type))
				}
			}
		}
	}
	return out
}

func hooks(conns ...string) []policy.WebhookInput {
	out := make([]policy.WebhookInput, len(conns))
	for i, c := range conns {
		out[i] = policy.WebhookInput{Key: fmt.Sprintf("w%d", i), Name: fmt.Sprintf("W%d", i), Direction: event.OneWay, ConnectionKey: c}
	}
	return out
}

// TestConnectionChangeDuringWebhookEdit (D21): a connection deleted, or changed to another type,
// after a webhook edit checked it and before the edit is written makes one of them fail; no
// webhook ends up pointing at a missing or non-https connection.
func TestConnectionChangeDuringWebhookEdit(t *testing.T) {
	forEachList(t, func(t *testing.T, edit listEdit) {
		connectionChangeDuringWebhookEdit(t, edit)
	})
}

// listEdit makes the list it stands for (a policy's or the pre-approval list) use the
// connections conns.
type listEdit func(f *fixture, svc *policy.Service, conns ...string) error

// forEachList runs test with an edit of policy p's pre-execution list, then with an edit of the
// pre-approval list: both claim their connections the same way (D21).
func forEachList(t *testing.T, test func(t *testing.T, edit listEdit)) {
	t.Run("policy", func(t *testing.T) {
		test(t, func(f *fixture, svc *policy.Service, conns ...string) error {
			_, err := svc.ReplaceWebhooks(f.ctx, "p", policy.Pre, hooks(conns...))
			return err
		})
	})
	t.Run("pre-approval", func(t *testing.T) {
		test(t, func(f *fixture, svc *policy.Service, conns ...string) error {
			_, err := svc.ReplacePreApproval(f.ctx, hooks(conns...))
			return err
		})
	})
}

func connectionChangeDuringWebhookEdit(t *testing.T, edit listEdit) {
	for _, tc := range []struct {
		name   string
		change func(f *fixture) error
	}{
		{"delete", func(f *fixture) error { return f.connections(f.st).Delete(f.ctx, "c") }},
		{"type change", func(f *fixture) error {
			_, failed, err := f.connections(f.st).Upsert(f.ctx, []connection.Input{{Key: "c", Name: "Conn c", Type: "postgres", Access: "read"}})
			if err == nil && len(failed) > 0 {
				err = failed[0].Err
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.upsertConn("c", connection.HTTPS)
			f.upsertPolicy("p")
			st := &pauseSave{Store: f.st, reached: make(chan struct{}), resume: make(chan struct{})}
			done := make(chan error, 1)
			go func() { done <- edit(f, f.policies(st), "c") }()
			select {
			case <-st.reached:
			case err := <-done:
				t.Fatalf("the edit ended before its write: %v", err)
			}
			changeErr := tc.change(f)
			close(st.resume)
			editErr := <-done
			if b := f.broken(); len(b) > 0 {
				t.Fatalf("webhooks pointing at a missing or non-https connection: %v (edit: %v, %s: %v)", b, editErr, tc.name, changeErr)
			}
			if (editErr == nil) == (changeErr == nil) {
				t.Fatalf("edit: %v, %s: %v; want exactly one to fail", editErr, tc.name, changeErr)
			}
		})
	}
}

// TestWebhookEditDuringConnectionChange (D21): a webhook edit written after a connection delete or
// type change checked the connection's users and before it is applied makes one of them fail.
func TestWebhookEditDuringConnectionChange(t *testing.T) {
	forEachList(t, func(t *testing.T, edit listEdit) {
		webhookEditDuringConnectionChange(t, edit)
	})
}

func webhookEditDuringConnectionChange(t *testing.T, edit listEdit) {
	for _, tc := range []struct {
		name   string
		change func(f *fixture, st connection.Store) error
	}{
		{"delete", func(f *fixture, st connection.Store) error { return f.connections(st).Delete(f.ctx, "c") }},
		{"type change", func(f *fixture, st connection.Store) error {
			_, failed, err := f.connections(st).Upsert(f.ctx, []connection.Input{{Key: "c", Name: "Conn c", Type: "postgres", Access: "read"}})
			if err == nil && len(failed) > 0 {
				err = failed[0].Err
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.upsertConn("c", connection.HTTPS)
			f.upsertPolicy("p")
			st := &pauseDelete{Store: f.st, reached: make(chan struct{}), resume: make(chan struct{})}
			done := make(chan error, 1)
			go func() { done <- tc.change(f, st) }()
			select {
			case <-st.reached:
			case err := <-done:
				t.Fatalf("the %s ended before its write: %v", tc.name, err)
			}
			editErr := edit(f, f.policies(f.st), "c")
			close(st.resume)
			changeErr := <-done
			if b := f.broken(); len(b) > 0 {
				t.Fatalf("webhooks pointing at a missing or non-https connection: %v (edit: %v, %s: %v)", b, editErr, tc.name, changeErr)
			}
			if (editErr == nil) == (changeErr == nil) {
				t.Fatalf("edit: %v, %s: %v; want exactly one to fail", editErr, tc.name, changeErr)
			}
		})
	}
}

// TestConcurrentEditsAndConnectionChanges (D21): in rounds, webhook edits of several policies
// (list replacements and connection patches) start using a new connection while it is deleted or
// changed to another type, on one FerretDB store; after every round no webhook points at a missing
// or non-https connection. At the end, a connection no webhook uses can be deleted.
func TestConcurrentEditsAndConnectionChanges(t *testing.T) {
	f := newFixture(t)
	pols := []string{"p0", "p1", "p2", "p3", "p4"}
	for _, p := range pols {
		f.upsertPolicy(p)
	}
	ps := f.policies(f.st)
	cs := f.connections(f.st)
	r := rand.New(rand.NewPCG(7, 42))
	var conns []string
	stats := map[string]int{}
	deadline := time.Now().Add(3 * time.Second)
	for round := 0; time.Now().Before(deadline); round++ {
		c := fmt.Sprintf("c%d", round)
		f.upsertConn(c, connection.HTTPS)
		conns = append(conns, c)
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		note := func(what string, err error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				stats[what+" ok"]++
			case errors.Is(err, connection.ErrNotFound), errors.Is(err, connection.ErrInUse), errors.Is(err, policy.ErrNotHTTPS),
				errors.Is(err, policy.ErrWebhookNotFound):
				stats[what+" refused"]++
			default:
				t.Errorf("%s: unexpected error: %v", what, err)
			}
		}
		delays := make([]time.Duration, len(pols)+1)
		for i := range delays {
			delays[i] = time.Duration(r.IntN(3000)) * time.Microsecond
		}
		for i, p := range pols {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				time.Sleep(delays[i])
				if i%2 == 0 {
					_, err := ps.ReplaceWebhooks(f.ctx, p, policy.Pre, hooks(c))
					note("replace", err)
				} else {
					_, _, err := ps.PatchWebhook(f.ctx, p, policy.Pre, "w0", policy.Change{ConnectionKey: &c})
					if errors.Is(err, policy.ErrWebhookNotFound) {
						_, err = ps.ReplaceWebhooks(f.ctx, p, policy.Pre, hooks(c))
					}
					note("patch", err)
				}
			}()
		}
		change := round % 2
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			time.Sleep(delays[len(pols)])
			if change == 0 {
				note("delete", cs.Delete(f.ctx, c))
				return
			}
			_, failed, err := cs.Upsert(f.ctx, []connection.Input{{Key: c, Name: "Conn " + c, Type: "postgres", Access: "read"}})
			if err == nil && len(failed) > 0 {
				err = &connection.InUseError{Key: c}
			}
			note("type change", err)
		}()
		close(start)
		wg.Wait()
		if b := f.broken(); len(b) > 0 {
			t.Fatalf("round %d: webhooks pointing at a missing or non-https connection: %v", round, b)
		}
	}
	t.Logf("outcomes: %v", stats)
	for _, p := range pols {
		if _, err := ps.ReplaceWebhooks(f.ctx, p, policy.Pre, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		if err := cs.Delete(f.ctx, c); err != nil && !errors.Is(err, connection.ErrNotFound) {
			t.Errorf("delete of the unused %s: %v", c, err)
		}
	}
}
