package requestlist

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func at(sec int) *time.Time {
	t := t0.Add(time.Duration(sec) * time.Second)
	return &t
}

// model is the list as the simplest code says it: every live row, filtered and sorted on each
// query.
type model struct {
	rows map[string]Row
	rev  map[string]uint64
}

func (m *model) put(rev uint64, r Row) {
	if rev <= m.rev[r.Key] && m.rows[r.Key].Key != "" {
		return
	}
	m.rows[r.Key], m.rev[r.Key] = r, rev
}

func (m *model) remove(key string, rev uint64) {
	if r, ok := m.rows[key]; ok && m.rev[r.Key] < rev {
		delete(m.rows, key)
	}
}

func inRange(t *time.Time, r Range) bool {
	if r.After.IsZero() && r.Before.IsZero() {
		return true
	}
	return t != nil && (r.After.IsZero() || t.After(r.After)) && (r.Before.IsZero() || t.Before(r.Before))
}

func (m *model) query(q Query) Result {
	var match []Row
	for _, r := range m.rows {
		created := r.CreatedAt
		if (len(q.Statuses) > 0 && !slices.Contains(q.Statuses, r.Status)) ||
			(q.ID != "" && r.ID != q.ID) || (q.ExternalID != "" && r.ExternalID != q.ExternalID) ||
			(q.PolicyKey != "" && r.PolicyKey != q.PolicyKey) || !inRange(&created, q.Created) ||
			!inRange(r.StartedProcessingAt, q.Started) || !inRange(r.FinishedProcessingAt, q.Finished) {
			continue
		}
		match = append(match, r)
	}
	creation := func(a, b Row) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.Key, b.Key))
	}
	slices.SortFunc(match, func(a, b Row) int {
		var ta, tb *time.Time
		switch q.Sort {
		case ByCreated:
			if q.Ascending {
				return creation(a, b)
			}
			return creation(b, a)
		case ByStarted:
			ta, tb = a.StartedProcessingAt, b.StartedProcessingAt
		case ByFinished:
			ta, tb = a.FinishedProcessingAt, b.FinishedProcessingAt
		case ByUpdated:
			ta, tb = &a.UpdatedAt, &b.UpdatedAt
		}
		switch {
		case ta == nil && tb == nil:
			return creation(a, b)
		case ta == nil:
			return 1
		case tb == nil:
			return -1
		}
		c := ta.Compare(*tb)
		if !q.Ascending {
			c = -c
		}
		return cmp.Or(c, creation(a, b))
	})
	res := Result{Rows: []Row{}, Total: len(match)}
	for i := (q.Page - 1) * q.Size; i < len(match) && len(res.Rows) < q.Size; i++ {
		res.Rows = append(res.Rows, match[i])
	}
	return res
}

var (
	allStatuses = statuses[1:otherStatus]
	allSteps    = []event.Step{event.StepPreApproval, event.StepPreWebhooks, event.StepExecution, event.StepPostWebhooks}
)

func randomRow(rng *rand.Rand, key string, created int) Row {
	r := Row{Key: key, ID: key, PolicyKey: fmt.Sprintf("policy_%d", rng.IntN(3)),
		Status: allStatuses[rng.IntN(len(allStatuses))], Step: allSteps[rng.IntN(len(allSteps))],
		CreatedAt: *at(created), UpdatedAt: *at(created + rng.IntN(50))}
	if rng.IntN(3) > 0 {
		r.ExternalID = fmt.Sprintf("ext_%d", rng.IntN(4))
	}
	if rng.IntN(4) > 0 {
		r.StartedProcessingAt = at(created + rng.IntN(20))
	}
	if rng.IntN(3) == 0 {
		r.FinishedProcessingAt = at(created + 20 + rng.IntN(20))
	}
	return r
}

func randomRange(rng *rand.Rand) Range {
	var r Range
	if rng.IntN(3) == 0 {
		r.After = *at(rng.IntN(60))
	}
	if rng.IntN(3) == 0 {
		r.Before = *at(rng.IntN(100))
	}
	return r
}

func randomQuery(rng *rand.Rand, keys []string) Query {
	q := Query{Sort: Field(rng.IntN(4)), Ascending: rng.IntN(2) == 0, Page: 1 + rng.IntN(3), Size: 1 + rng.IntN(7)}
	for _, s := range allStatuses {
		if rng.IntN(5) == 0 {
			q.Statuses = append(q.Statuses, s)
		}
	}
	if rng.IntN(6) == 0 && len(keys) > 0 {
		q.ID = keys[rng.IntN(len(keys))]
	}
	if rng.IntN(4) == 0 {
		q.ExternalID = fmt.Sprintf("ext_%d", rng.IntN(5))
	}
	if rng.IntN(3) == 0 {
		q.PolicyKey = fmt.Sprintf("policy_%d", rng.IntN(4))
	}
	q.Created, q.Started, q.Finished = randomRange(rng), randomRange(rng), randomRange(rng)
	if rng.IntN(2) == 0 {
		q.Started = Range{}
	}
	if rng.IntN(2) == 0 {
		q.Finished = Range{}
	}
	return q
}

// TestIndexAgainstModel runs random puts, repeats, stale writes, removals and restarts of the
// watch against the index and the model, and compares every query's page and total.
func TestIndexAgainstModel(t *testing.T) {
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 7))
		x, m := New(), &model{rows: map[string]Row{}, rev: map[string]uint64{}}
		if seed%2 == 1 { // a weak hash: most keys collide
			x.keyHash = func(k string) uint64 { return uint64(len(k) + int(k[len(k)-1]%3)) }
		}
		var keys []string
		var rev uint64
		created := map[string]int{}
		step := func(loading bool) {
			rev++
			switch op := rng.IntN(10); {
			case op < 4 || len(keys) == 0: // a new request, created about now
				k := fmt.Sprintf("pri_%03d", len(keys))
				keys = append(keys, k)
				created[k] = int(rev)/2 + rng.IntN(5) - 2
				r := randomRow(rng, k, created[k])
				x.Put(rev, r)
				m.put(rev, r)
			case op < 8: // a change of a request
				k := keys[rng.IntN(len(keys))]
				r := randomRow(rng, k, created[k])
				x.Put(rev, r)
				m.put(rev, r)
			case op < 9: // a repeat of an older revision, which changes nothing
				k := keys[rng.IntN(len(keys))]
				r := randomRow(rng, k, created[k])
				x.Put(rev/2, r)
				m.put(rev/2, r)
			default:
				k := keys[rng.IntN(len(keys))]
				x.Remove(k, rev)
				m.remove(k, rev)
			}
		}
		for range 40 {
			step(true)
		}
		if _, err := x.Query(Query{Page: 1, Size: 1}); !errors.Is(err, ErrLoading) {
			t.Fatalf("seed %d: a query before Loaded: %v, want ErrLoading", seed, err)
		}
		x.Loaded()
		for round := range 200 {
			step(false)
			if round%50 == 49 { // the watch starts again and delivers the live rows only
				x.Restart()
				for k, r := range m.rows {
					x.Put(m.rev[k], r)
				}
				x.Loaded()
			}
			q := randomQuery(rng, keys)
			got, err := x.Query(q)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if want := m.query(q); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d round %d: query %+v\n got %d %v\nwant %d %v", seed, round, q, got.Total, keysOf(got), want.Total, keysOf(want))
			}
		}
		if x.Len() != len(m.rows) {
			t.Fatalf("seed %d: %d rows, want %d", seed, x.Len(), len(m.rows))
		}
	}
}

func keysOf(r Result) []string {
	var ks []string
	for _, row := range r.Rows {
		ks = append(ks, row.Key)
	}
	return ks
}

// TestRestartDropsRowsRemovedUnseen: a pass that does not deliver a row (it was removed while no
// watch ran, and its delete marker is gone) removes it.
func TestRestartDropsRowsRemovedUnseen(t *testing.T) {
	x := New()
	a := Row{Key: "pri_a", ID: "pri_a", PolicyKey: "p", Status: event.StatusError, CreatedAt: t0, UpdatedAt: t0}
	b := a
	b.Key, b.ID = "pri_b", "pri_b"
	x.Put(1, a)
	x.Put(2, b)
	x.Loaded()
	x.Restart()
	x.Put(1, a)
	x.Loaded()
	got, err := x.Query(Query{Page: 1, Size: 10})
	if err != nil || got.Total != 1 || got.Rows[0].Key != "pri_a" {
		t.Fatalf("after a pass without pri_b: %+v, %v; want pri_a alone", got, err)
	}
}

// TestUnknownStatusIsListed: a status a newer executor writes is listed as it is.
func TestUnknownStatusIsListed(t *testing.T) {
	x := New()
	x.Put(1, Row{Key: "pri_a", ID: "pri_a", PolicyKey: "p", Status: "archived", CreatedAt: t0, UpdatedAt: t0})
	x.Loaded()
	got, err := x.Query(Query{Page: 1, Size: 10})
	if err != nil || len(got.Rows) != 1 || got.Rows[0].Status != "archived" {
		t.Fatalf("got %+v, %v; want the row with status archived", got, err)
	}
	got, _ = x.Query(Query{Statuses: []event.Status{event.StatusPending}, Page: 1, Size: 10})
	if got.Total != 0 {
		t.Fatalf("status=pending matched the archived row: %+v", got)
	}
}

// TestCompact: removing most rows reclaims their places and keeps the order.
func TestCompact(t *testing.T) {
	x := New()
	x.Loaded()
	for i := range 5000 {
		k := fmt.Sprintf("pri_%05d", i)
		x.Put(uint64(i+1), Row{Key: k, ID: k, PolicyKey: "p", Status: event.StatusComplete, CreatedAt: *at(i), UpdatedAt: *at(i)})
	}
	for i := range 5000 {
		if i%10 != 0 {
			x.Remove(fmt.Sprintf("pri_%05d", i), uint64(10000+i))
		}
	}
	if len(x.key) >= 5000 {
		t.Fatalf("%d places for %d rows: never compacted", len(x.key), x.Len())
	}
	got, err := x.Query(Query{Page: 2, Size: 3, Ascending: true})
	if err != nil || got.Total != 500 || !slices.Equal(keysOf(got), []string{"pri_00030", "pri_00040", "pri_00050"}) {
		t.Fatalf("page 2 after compacting: %v of %d, %v", keysOf(got), got.Total, err)
	}
}
