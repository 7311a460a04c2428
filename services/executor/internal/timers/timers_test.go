package timers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// fired is one fired timer as the stream stored it.
type fired struct {
	Subject string
	Fire    Fire
	Stored  time.Time
}

func (f fired) String() string {
	return fmt.Sprintf("%s %s pause %d run %d at %s", f.Subject, f.Fire.Kind, f.Fire.Pause, f.Fire.Run,
		f.Stored.Format("15:04:05.000"))
}

// watchFires records every message stored on privacy.request.timer.fire.> from now on; the
// returned function lists them so far.
func watchFires(t *testing.T, n *testkit.NATS) func() []fired {
	t.Helper()
	cons, err := n.JS.OrderedConsumer(t.Context(), event.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{FireSubjects}})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	var mu sync.Mutex
	var got []fired
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			t.Errorf("metadata of %s: %v", m.Subject(), err)
			return
		}
		var f Fire
		if err := json.Unmarshal(m.Data(), &f); err != nil {
			t.Errorf("fire on %s: %v: %s", m.Subject(), err, m.Data())
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fired{Subject: m.Subject(), Fire: f, Stored: md.Timestamp})
	})
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	t.Cleanup(cc.Stop)
	return func() []fired {
		mu.Lock()
		defer mu.Unlock()
		return append([]fired(nil), got...)
	}
}

func fireSubject(kind lifecycle.TimerKind, id string) string {
	return "privacy.request.timer.fire." + string(kind) + "." + token(id)
}

// TestSchedule schedules timers against a real stream and checks which fire, on which subject, with
// which payload, and not before their due time rounded up to the second. The cases run at once on
// one stream, each with its own request ids (so they also show that requests do not interfere).
func TestSchedule(t *testing.T) {
	type sched struct {
		id    string // prefixed with the case's number
		kind  lifecycle.TimerKind
		pause int
		in    time.Duration // due this long after the whole second following the start
	}
	cases := []struct {
		name   string
		scheds []sched
		// want lists the schedules (indexes of scheds) that fire.
		want []int
	}{
		{name: "fires at the due time rounded up to the second",
			scheds: []sched{{id: "urn:req.a", kind: lifecycle.TimerPause, pause: 1, in: 1300 * time.Millisecond}},
			want:   []int{0}},
		{name: "due on a whole second",
			scheds: []sched{{id: "a", kind: lifecycle.TimerExecution, in: 2 * time.Second}},
			want:   []int{0}},
		{name: "a later schedule replaces an earlier one due before it",
			scheds: []sched{
				{id: "a", kind: lifecycle.TimerPause, pause: 1, in: 1 * time.Second},
				{id: "a", kind: lifecycle.TimerPause, pause: 2, in: 2 * time.Second}},
			want: []int{1}},
		{name: "a later schedule replaces an earlier one due after it",
			scheds: []sched{
				{id: "a", kind: lifecycle.TimerPause, pause: 1, in: 2500 * time.Millisecond},
				{id: "a", kind: lifecycle.TimerPause, pause: 2, in: 1 * time.Second}},
			want: []int{1}},
		{name: "other requests and kinds do not interfere",
			scheds: []sched{
				{id: "a", kind: lifecycle.TimerPause, pause: 1, in: 1 * time.Second},
				{id: "b", kind: lifecycle.TimerPause, pause: 1, in: 1 * time.Second},
				{id: "a", kind: lifecycle.TimerExecution, in: 1 * time.Second},
				{id: "b", kind: lifecycle.TimerExecution, in: 1500 * time.Millisecond}},
			want: []int{0, 1, 2, 3}},
		{name: "due in the past fires at once",
			scheds: []sched{{id: "a", kind: lifecycle.TimerPause, pause: 3, in: -10 * time.Second}},
			want:   []int{0}},
	}

	n := testkit.StartNATS(t)
	fires := watchFires(t, n)
	var counted []string
	s := NewScheduler(n.JS, func(op string) { counted = append(counted, op) })
	start := time.Now()
	base := start.Truncate(time.Second).Add(time.Second)
	wantFires := make([][]fired, len(cases)) // per case
	var nWant, nSched int
	var last time.Time // the latest due time of any schedule, replaced or not
	for c, tc := range cases {
		for i, sc := range tc.scheds {
			id := fmt.Sprintf("c%d:%s", c, sc.id)
			due := base.Add(sc.in)
			timer := lifecycle.Timer{Kind: sc.kind, Pause: sc.pause, Run: i + 1, Due: due}
			if err := s.Schedule(t.Context(), id, timer); err != nil {
				t.Fatalf("%s: schedule %d: %v", tc.name, i, err)
			}
			nSched++
			at := due.Truncate(time.Second)
			if at.Before(due) {
				at = at.Add(time.Second)
			}
			if at.After(last) {
				last = at
			}
			if slices.Contains(tc.want, i) {
				wantFires[c] = append(wantFires[c], fired{Subject: fireSubject(sc.kind, id), Stored: at,
					Fire: Fire{RequestID: id, Kind: sc.kind, Pause: sc.pause, Run: i + 1, Due: due}})
				nWant++
			}
		}
	}
	if len(counted) != nSched {
		t.Errorf("counted %q, want one js_publish per schedule (%d)", counted, nSched)
	}
	testkit.WaitFor(t, time.Until(last)+5*time.Second, fmt.Sprintf("%d timers to fire", nWant),
		func() ([]fired, bool) { f := fires(); return f, len(f) >= nWant })
	// Give the replaced schedules the time to fire if they were not replaced.
	time.Sleep(time.Until(last.Add(time.Second)))
	got := fires()
	bySubject := map[string][]fired{}
	for _, f := range got {
		bySubject[f.Subject] = append(bySubject[f.Subject], f)
	}

	for c, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mine []fired
			for _, f := range got {
				if strings.HasPrefix(f.Fire.RequestID, fmt.Sprintf("c%d:", c)) {
					mine = append(mine, f)
				}
			}
			if len(mine) != len(wantFires[c]) {
				t.Fatalf("fired %v, want %v", mine, wantFires[c])
			}
			for _, w := range wantFires[c] {
				gs := bySubject[w.Subject]
				if len(gs) != 1 {
					t.Errorf("fired on %s: %v, want once", w.Subject, gs)
					continue
				}
				g := gs[0]
				switch {
				case g.Fire.RequestID != w.Fire.RequestID || g.Fire.Kind != w.Fire.Kind ||
					g.Fire.Pause != w.Fire.Pause || g.Fire.Run != w.Fire.Run || !g.Fire.Due.Equal(w.Fire.Due):
					t.Errorf("fire on %s: %+v, want %+v", w.Subject, g.Fire, w.Fire)
				case g.Stored.Before(w.Stored):
					t.Errorf("fire on %s stored at %s, before its due time %s (rounded up from %s)", w.Subject,
						g.Stored.Format(time.StampMilli), w.Stored.Format(time.StampMilli), w.Fire.Due.Format(time.StampMilli))
				case g.Stored.After(latest(w.Stored, start).Add(3 * time.Second)):
					t.Errorf("fire on %s stored at %s, want it within 3s of %s", w.Subject,
						g.Stored.Format(time.StampMilli), latest(w.Stored, start).Format(time.StampMilli))
				}
			}
		})
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestToken checks the token of a request id in timer subjects: it is one subject token, the same for the same id and different for ids that differ only where KV
// keys escape.
func TestToken(t *testing.T) {
	ids := []string{"pri_1", "urn:req:1", "urn=3Areq=3A1", "a.b", "a=2Eb", "*", ">", "with space", ""}
	seen := map[string]string{}
	for _, id := range ids {
		tok := token(id)
		if tok != token(id) {
			t.Errorf("token(%q) differs between calls", id)
		}
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Errorf("token(%q) = %q, want one subject token", id, tok)
		}
		if other, ok := seen[tok]; ok {
			t.Errorf("token(%q) = token(%q) = %q", id, other, tok)
		}
		seen[tok] = id
	}
}

func TestIsFire(t *testing.T) {
	for _, tc := range []struct {
		subject string
		want    bool
	}{
		{fireSubject(lifecycle.TimerPause, "pri_1"), true},
		{fireSubject(lifecycle.TimerExecution, "pri_1"), true},
		{"privacy.request.timer.schedule.pause." + token("pri_1"), false},
		{"privacy.request.timer.fire", false},
		{"privacy.request.timer.fired.pause.x", false},
		{event.SubjectExecuted, false},
		{event.SubjectResume, false},
		{event.SubjectSubmitted, false},
	} {
		if got := IsFire(tc.subject); got != tc.want {
			t.Errorf("IsFire(%q) = %v, want %v", tc.subject, got, tc.want)
		}
	}
}

// TestScheduleRefused checks that a failed publish is reported with the timer and request named.
func TestScheduleRefused(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := Schedule(ctx, n.JS, Fire{RequestID: "pri_x", Kind: lifecycle.TimerPause, Due: time.Now().Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "timers: schedule pause for pri_x") {
		t.Errorf("Schedule with an ended context: %v, want an error naming the timer and request", err)
	}
}
