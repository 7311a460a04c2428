package breaker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/breaker"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

var (
	t0  = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	cfg = breaker.Config{Failures: 3, Cooldown: 30 * time.Second, ProbeTTL: 45 * time.Second, Recheck: time.Second}
)

func at(d time.Duration) time.Time { return t0.Add(d) }
func ptr(t time.Time) *time.Time   { return &t }

func TestApply(t *testing.T) {
	closed := event.ConnectionHealth{ConnectionKey: "c", State: event.BreakerClosed}
	failing := closed
	failing.Failures = 2
	open := event.ConnectionHealth{ConnectionKey: "c", State: event.BreakerOpen, Failures: 3, Since: t0, ProbeAt: ptr(at(30 * time.Second)), Seq: 1}
	probing := open
	probing.Probe = &event.Probe{Owner: "run-1", Until: at(75 * time.Second)}
	tests := []struct {
		name    string
		h       event.ConnectionHealth
		ev      breaker.Event
		row     string
		want    func(event.ConnectionHealth) bool
		wantMsg string
	}{
		{"a success with no failures changes nothing", closed, breaker.Event{Input: breaker.Succeeded, Now: t0}, "", nil, ""},
		{"a success resets the count", failing, breaker.Event{Input: breaker.Succeeded, Now: t0}, "B1",
			func(h event.ConnectionHealth) bool {
				return h.Failures == 0 && h.State == event.BreakerClosed && h.Seq == 0
			}, "failures 0, still closed"},
		{"a failure below the threshold counts", closed, breaker.Event{Input: breaker.Failed, Now: t0, Reason: "HTTP 503"}, "B3",
			func(h event.ConnectionHealth) bool {
				return h.Failures == 1 && h.LastError == "HTTP 503" && h.State == event.BreakerClosed
			}, "one failure counted"},
		{"the threshold opens", failing, breaker.Event{Input: breaker.Failed, Now: t0, Reason: "timeout"}, "B2",
			func(h event.ConnectionHealth) bool {
				return h.State == event.BreakerOpen && h.Seq == 1 && !h.Announced && h.ProbeAt.Equal(at(30*time.Second)) && h.By == breaker.ByExecutor
			}, "open, probe after the cool-down, to announce"},
		{"no probe before the cool-down's end", open, breaker.Event{Input: breaker.TakeProbe, Now: at(29 * time.Second), Owner: "run-1"}, "", nil, ""},
		{"the probe after the cool-down", open, breaker.Event{Input: breaker.TakeProbe, Now: at(30 * time.Second), Owner: "run-1"}, "B6",
			func(h event.ConnectionHealth) bool {
				return h.Probe != nil && h.Probe.Owner == "run-1" && h.Probe.Until.Equal(at(75*time.Second))
			}, "the probe claimed"},
		{"one probe at a time", probing, breaker.Event{Input: breaker.TakeProbe, Now: at(40 * time.Second), Owner: "run-2"}, "", nil, ""},
		{"a probe whose claim ended is taken over", probing, breaker.Event{Input: breaker.TakeProbe, Now: at(75 * time.Second), Owner: "run-2"}, "B6",
			func(h event.ConnectionHealth) bool { return h.Probe.Owner == "run-2" }, "run-2 probes"},
		{"the probe's success closes", probing, breaker.Event{Input: breaker.Succeeded, Now: at(40 * time.Second), Owner: "run-1"}, "B4",
			func(h event.ConnectionHealth) bool {
				return h.State == event.BreakerClosed && h.Seq == 2 && h.Failures == 0 && h.Probe == nil && h.ProbeAt == nil && !h.Announced
			}, "closed, to announce"},
		{"the probe's failure waits another cool-down", probing, breaker.Event{Input: breaker.Failed, Now: at(40 * time.Second), Owner: "run-1", Reason: "HTTP 500"}, "B5",
			func(h event.ConnectionHealth) bool {
				return h.State == event.BreakerOpen && h.Seq == 1 && h.Probe == nil && h.ProbeAt.Equal(at(70*time.Second))
			}, "open, the next probe 30 s on"},
		{"another call's failure while open changes nothing", probing, breaker.Event{Input: breaker.Failed, Now: at(40 * time.Second), Owner: "run-9"}, "", nil, ""},
		{"closed by hand", probing, breaker.Event{Input: breaker.CloseByHand, Now: at(40 * time.Second)}, "B7",
			func(h event.ConnectionHealth) bool {
				return h.State == event.BreakerClosed && h.By == breaker.ByOperator && h.Seq == 2
			}, "closed by the operator"},
		{"closing a closed breaker by hand changes nothing", failing, breaker.Event{Input: breaker.CloseByHand, Now: t0}, "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := json.Marshal(tt.h)
			got, row, changed := breaker.Apply(tt.h, tt.ev, cfg)
			if row != tt.row || changed != (tt.row != "") {
				t.Fatalf("row %q changed %v, want row %q", row, changed, tt.row)
			}
			if after, _ := json.Marshal(tt.h); string(after) != string(before) {
				t.Fatalf("Apply changed its argument: %s", after)
			}
			if tt.want == nil {
				if g, _ := json.Marshal(got); string(g) != string(before) {
					t.Fatalf("no row applied but the breaker changed: %s", g)
				}
				return
			}
			if !tt.want(got) {
				b, _ := json.Marshal(got)
				t.Fatalf("got %s, want %s", b, tt.wantMsg)
			}
		})
	}
}

func TestHeld(t *testing.T) {
	open := event.ConnectionHealth{State: event.BreakerOpen, ProbeAt: ptr(at(30 * time.Second))}
	probing := open
	probing.Probe = &event.Probe{Owner: "r", Until: at(75 * time.Second)}
	tests := []struct {
		name          string
		h             event.ConnectionHealth
		now           time.Time
		until         time.Time
		probing, held bool
	}{
		{"closed", event.ConnectionHealth{State: event.BreakerClosed, Failures: 2}, t0, time.Time{}, false, false},
		{"no entry", event.ConnectionHealth{}, t0, time.Time{}, false, false},
		{"open, cooling down", open, at(10 * time.Second), at(30 * time.Second), false, true},
		{"open, probe due", open, at(30 * time.Second), time.Time{}, false, false},
		{"another run probes", probing, at(40 * time.Second), at(75 * time.Second), true, true},
		{"the probe's claim ended", probing, at(75 * time.Second), time.Time{}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			until, probing, held := breaker.Held(tt.h, tt.now, cfg)
			if !until.Equal(tt.until) || probing != tt.probing || held != tt.held {
				t.Fatalf("Held = %v %v %v, want %v %v %v", until, probing, held, tt.until, tt.probing, tt.held)
			}
		})
	}
}

// TestStore drives a breaker through real NATS: failures open it and announce unhealthy once, a
// probe is given to one run at a time, its success closes the breaker and announces healthy, and
// an operator closes it by hand; the view of another Store follows.
func TestStore(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv := n.Bucket(t, event.BucketHealth)
	c := breaker.Config{Failures: 2, Cooldown: 300 * time.Millisecond, ProbeTTL: 5 * time.Second, Recheck: 100 * time.Millisecond}
	s := breaker.NewStore(kv, n.JS, c, zerolog.Nop())
	other := breaker.NewStore(kv, n.JS, c, zerolog.Nop())
	go s.Watch(ctx, n.NC)
	go other.Watch(ctx, n.NC)
	testkit.WaitFor(t, 5*time.Second, "the views loaded", func() (bool, bool) { return true, s.Loaded() && other.Loaded() })

	if err := s.Observe(ctx, "crm", "r1", false, ""); err != nil {
		t.Fatal(err)
	}
	if _, rev, _ := s.Get(ctx, "crm"); rev != 0 {
		t.Fatalf("a success on a healthy connection wrote an entry (revision %d)", rev)
	}
	for i := range 2 {
		if err := s.Observe(ctx, "crm", "r1", true, "HTTP 503"); err != nil {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	h, _, err := s.Get(ctx, "crm")
	if err != nil || h.State != event.BreakerOpen || !h.Announced || h.LastError != "HTTP 503" {
		t.Fatalf("after 2 failures: %+v, %v; want open and announced", h, err)
	}
	testkit.WaitFor(t, 5*time.Second, "the other store's view shows it open", func() (bool, bool) {
		_, _, held := other.Held("crm", time.Now())
		return held, held
	})
	if ok, err := s.TakeProbe(ctx, "crm", "r2"); err != nil || ok {
		t.Fatalf("probe during the cool-down: %v %v, want refused", ok, err)
	}
	time.Sleep(c.Cooldown)
	if ok, err := s.TakeProbe(ctx, "crm", "r2"); err != nil || !ok {
		t.Fatalf("probe after the cool-down: %v %v, want r2's", ok, err)
	}
	if ok, _ := s.TakeProbe(ctx, "crm", "r3"); ok {
		t.Fatal("a second probe was given while r2's is in flight")
	}
	if err := s.Observe(ctx, "crm", "r2", false, ""); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := s.Get(ctx, "crm"); h.State != event.BreakerClosed || h.Seq != 2 || !h.Announced {
		t.Fatalf("after the probe's success: %+v, want closed and announced", h)
	}

	// Open again, then an operator closes it.
	for range 2 {
		_ = s.Observe(ctx, "crm", "r4", true, "timeout")
	}
	if h, err = s.Close(ctx, "crm"); err != nil || h.State != event.BreakerClosed || h.By != breaker.ByOperator {
		t.Fatalf("close by hand: %+v %v", h, err)
	}

	var got []string
	for _, m := range n.Msgs(t, event.SubjectConnectionAll) {
		var ev event.ConnectionHealthChanged
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Subject()+" "+string(ev.State)+" "+ev.By+" "+m.Headers().Get("Nats-Msg-Id"))
	}
	want := []string{
		"privacy.connection.unhealthy open executor health:crm:1",
		"privacy.connection.healthy closed executor health:crm:2",
		"privacy.connection.unhealthy open executor health:crm:3",
		"privacy.connection.healthy closed operator health:crm:4",
	}
	if len(got) != len(want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: %q, want %q", i, got[i], want[i])
		}
	}
	if err := s.Delete(ctx, "crm"); err != nil {
		t.Fatal(err)
	}
	if h, rev, _ := s.Get(ctx, "crm"); rev != 0 || h.State != event.BreakerClosed {
		t.Fatalf("after delete: %+v rev %d", h, rev)
	}
}

// TestStoreOff: with CIRCUIT_BREAKER_FAILURES 0 nothing is written and nothing is held.
func TestStoreOff(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := context.Background()
	s := breaker.NewStore(n.Bucket(t, event.BucketHealth), n.JS, breaker.Config{}, zerolog.Nop())
	for range 5 {
		if err := s.Observe(ctx, "crm", "r", true, "HTTP 500"); err != nil {
			t.Fatal(err)
		}
	}
	if _, rev, _ := s.Get(ctx, "crm"); rev != 0 {
		t.Fatalf("breakers off wrote an entry (revision %d)", rev)
	}
}

// TestWatchAnnounces: a Store's watch announces an opening whose writer never did (it stopped
// between the write and the publish), once; a breaker that only counted failures, never opened,
// has nothing to announce (a chaos run found every such connection announced as healthy).
func TestWatchAnnounces(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv := n.Bucket(t, event.BucketHealth)
	c := breaker.Config{Failures: 3, Cooldown: time.Hour, ProbeTTL: time.Minute, AnnounceAfter: 100 * time.Millisecond}
	s := breaker.NewStore(kv, n.JS, c, zerolog.Nop())
	if err := s.Observe(ctx, "counted", "r", true, "HTTP 503"); err != nil {
		t.Fatal(err)
	}
	// An opening written without its announcement, as by an executor killed in between.
	opened := event.ConnectionHealth{ConnectionKey: "lost", State: event.BreakerOpen, Failures: 3, Since: time.Now().Add(-time.Second),
		ProbeAt: ptr(time.Now().Add(time.Hour)), Seq: 1, By: breaker.ByExecutor}
	b, _ := json.Marshal(opened)
	if _, err := kv.Put(ctx, "lost", b); err != nil {
		t.Fatal(err)
	}
	go s.Watch(ctx, n.NC)
	testkit.WaitFor(t, 5*time.Second, "the lost opening announced", func() (bool, bool) {
		h, _, err := s.Get(ctx, "lost")
		return true, err == nil && h.Announced
	})
	time.Sleep(500 * time.Millisecond) // several more passes of the watch
	var got []string
	for _, m := range n.Msgs(t, event.SubjectConnectionAll) {
		got = append(got, m.Subject()+" "+m.Headers().Get("Nats-Msg-Id"))
	}
	if len(got) != 1 || got[0] != "privacy.connection.unhealthy health:lost:1" {
		t.Fatalf("events %q, want the lost opening once and nothing for the breaker that never opened", got)
	}
}
