package consume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

// fixture is an embedded NATS with the PRIVACY_REQUESTS stream and durable consumers configured
// as the executor configures its own (explicit ack, unlimited deliveries and ack pending).
type fixture struct {
	t *testing.T
	n *testkit.NATS
	// log is the loops' logger (zerolog.Nop() unless a test sets it).
	log zerolog.Logger
}

func newFixture(t *testing.T) *fixture {
	return &fixture{t: t, n: testkit.StartNATS(t), log: zerolog.Nop()}
}

// consumerConfig is the configuration of the durable consumer name on subject.
func consumerConfig(name, subject string, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Durable: name, FilterSubjects: []string{subject},
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1, MaxAckPending: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy}
}

func (f *fixture) opener(cfg jetstream.ConsumerConfig) Open {
	return func(ctx context.Context) (jetstream.Consumer, error) {
		return f.n.JS.CreateOrUpdateConsumer(ctx, event.Stream, cfg)
	}
}

func (f *fixture) publish(subject string, data ...string) {
	f.t.Helper()
	for _, d := range data {
		if _, err := f.n.JS.Publish(f.t.Context(), subject, []byte(d)); err != nil {
			f.t.Fatalf("publish %s: %v", d, err)
		}
	}
}

func (f *fixture) info(name string) *jetstream.ConsumerInfo {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := f.n.JS.Consumer(ctx, event.Stream, name)
	if err != nil {
		f.t.Fatalf("consumer %s: %v", name, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		f.t.Fatalf("consumer %s info: %v", name, err)
	}
	return info
}

// start starts a loop on the consumer cfg until ctx ends; when the test ends the loop is stopped
// (if ctx has not ended) and waited for.
func (f *fixture) start(ctx context.Context, cfg jetstream.ConsumerConfig, h Handler, opt Options) *Loop {
	f.t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	l, err := Start(ctx, f.opener(cfg), h, opt, f.log)
	if err != nil {
		cancel()
		f.t.Fatalf("start: %v", err)
	}
	f.t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { l.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			f.t.Errorf("the loop on %s did not stop within 10s", cfg.Durable)
		}
	})
	return l
}

// acks records what the clients send on the ack subjects of a consumer, by delivery (the reply
// subject of the delivered message): +ACK, -NAK (with its delay), +WPI, +TERM (with its reason).
type acks struct {
	mu  sync.Mutex
	got map[string][]string
}

func (f *fixture) watchAcks(consumer string) *acks {
	f.t.Helper()
	a := &acks{got: map[string][]string{}}
	sub, err := f.n.NC.Subscribe("$JS.ACK."+event.Stream+"."+consumer+".>", func(m *nats.Msg) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.got[m.Subject] = append(a.got[m.Subject], string(m.Data))
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.n.NC.Flush(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return a
}

// of returns what was sent for the delivery whose reply subject is reply, progress marks (+WPI)
// apart.
func (a *acks) of(reply string) (settled []string, progress int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.got[reply] {
		if s == "+WPI" {
			progress++
		} else {
			settled = append(settled, s)
		}
	}
	return settled, progress
}

// delivery is one call of a handler.
type delivery struct {
	data      string
	reply     string
	delivered uint64 // NumDelivered
	at, end   time.Time
}

// log records deliveries.
type log struct {
	mu  sync.Mutex
	all []delivery
}

// begin records the start of a handler's call and returns a function recording its end.
func (l *log) begin(msg jetstream.Msg) func() {
	md, err := msg.Metadata()
	if err != nil {
		panic(err)
	}
	l.mu.Lock()
	i := len(l.all)
	l.all = append(l.all, delivery{data: string(msg.Data()), reply: msg.Reply(), delivered: md.NumDelivered, at: time.Now()})
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.all[i].end = time.Now()
	}
}

func (l *log) of(data string) []delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []delivery
	for _, d := range l.all {
		if d.data == data {
			out = append(out, d)
		}
	}
	return out
}

func (l *log) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

func maxInto(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

func TestFate(t *testing.T) {
	base := errors.New("boom")
	for _, tc := range []struct {
		name      string
		err       error
		fate      string
		wantDelay time.Duration
	}{
		{"nil", nil, "ack", 0},
		{"abandon", ErrAbandon, "abandon", 0},
		{"wrapped abandon", fmt.Errorf("x: %w", ErrAbandon), "abandon", 0},
		{"park", Park(func(ctx context.Context) context.Context { return ctx }), "park", 0},
		{"permanent", Permanent(base), "term", 0},
		{"wrapped permanent", fmt.Errorf("decode: %w", Permanent(base)), "term", 0},
		{"retry", Retry(3*time.Second, base), "nak", 3 * time.Second},
		{"wrapped retry", fmt.Errorf("x: %w", Retry(time.Second, base)), "nak", time.Second},
		{"retry at once", Retry(0, base), "nak", 0},
		{"negative delay", Retry(-time.Second, base), "nak", 0},
		{"plain error", base, "nak", DefaultRetryDelay},
		{"context ended", context.Canceled, "nak", DefaultRetryDelay},
	} {
		fate, delay := Fate(tc.err)
		if fate != tc.fate || delay != tc.wantDelay {
			t.Errorf("%s: Fate = %s %s, want %s %s", tc.name, fate, delay, tc.fate, tc.wantDelay)
		}
	}
	if got := Permanent(base).Error(); got != "boom" {
		t.Errorf("Permanent(err).Error() = %q, want the error's text", got)
	}
	if !errors.Is(Retry(time.Second, base), base) || !errors.Is(Permanent(base), base) {
		t.Errorf("Retry and Permanent do not unwrap to their error")
	}
}

// TestPullsWhatThePoolTakes checks that a loop holds at most the pool's slots plus the prefetch:
// with handlers that block, the consumer has that many messages delivered and not acked, no
// more, while the rest stay in the stream; once released every message is handled once.
func TestPullsWhatThePoolTakes(t *testing.T) {
	for _, tc := range []struct {
		pool, prefetch, maxBatch int
	}{
		{pool: 2, prefetch: 1, maxBatch: 10},
		{pool: 3, prefetch: 2, maxBatch: 2},
		{pool: 4, prefetch: 0, maxBatch: 16},
	} {
		t.Run(fmt.Sprintf("pool %d prefetch %d batch %d", tc.pool, tc.prefetch, tc.maxBatch), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			cfg := consumerConfig("bounded", event.SubjectSubmitted, 10*time.Second)
			const total = 12
			for i := range total {
				f.publish(event.SubjectSubmitted, fmt.Sprintf("m%d", i))
			}
			release := make(chan struct{})
			var running, maxRunning atomic.Int64
			var starts, dones atomic.Int64
			var l log
			h := func(ctx context.Context, msg jetstream.Msg) error {
				defer l.begin(msg)()
				maxInto(&maxRunning, running.Add(1))
				defer running.Add(-1)
				<-release
				return nil
			}
			pool := NewPool(tc.pool)
			f.start(t.Context(), cfg, h, Options{Pool: pool, Prefetch: tc.prefetch, MaxBatch: tc.maxBatch,
				KeepAlive: time.Second, PullExpiry: 100 * time.Millisecond,
				OnStart: func() { starts.Add(1) }, OnDone: func() { dones.Add(1) }})

			held := tc.pool + tc.prefetch
			testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("%d messages held", held), func() (uint64, bool) {
				n := f.info("bounded").NumAckPending
				return uint64(n), n == held
			})
			// Over many pull periods, no more is pulled.
			for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				if info := f.info("bounded"); info.NumAckPending > held {
					t.Fatalf("%d messages held (delivered, not acked), want at most %d (pool %d + prefetch %d)",
						info.NumAckPending, held, tc.pool, tc.prefetch)
				}
			}
			info := f.info("bounded")
			if info.NumAckPending != held || info.NumPending != uint64(total-held) {
				t.Errorf("held %d, left in the stream %d; want %d and %d", info.NumAckPending, info.NumPending, held, total-held)
			}
			if got := running.Load(); got != int64(tc.pool) || pool.Used() != tc.pool {
				t.Errorf("%d handlers running, %d slots used; want %d", got, pool.Used(), tc.pool)
			}

			close(release)
			testkit.Eventually(t, 10*time.Second, "every message handled", func() bool { return dones.Load() == total })
			testkit.Eventually(t, 5*time.Second, "every message acked", func() bool {
				info := f.info("bounded")
				return info.NumAckPending == 0 && info.NumPending == 0
			})
			if got := maxRunning.Load(); got != int64(tc.pool) {
				t.Errorf("at most %d handlers ran at once, want %d (the pool)", got, tc.pool)
			}
			for i := range total {
				ds := l.of(fmt.Sprintf("m%d", i))
				if len(ds) != 1 || ds[0].delivered != 1 {
					t.Errorf("m%d handled %d times (%+v), want once, first delivery", i, len(ds), ds)
				}
			}
			if info := f.info("bounded"); info.NumRedelivered != 0 || starts.Load() != total {
				t.Errorf("redelivered %d, OnStart %d; want 0 and %d", info.NumRedelivered, starts.Load(), total)
			}
		})
	}
}

// TestKeepsWaitingMessagesAlive checks that a message waiting for a slot, and one being handled, is
// kept alive past the ack wait: with an ack wait of 1s and handlers holding both slots for 3s,
// nothing is redelivered.
func TestKeepsWaitingMessagesAlive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := consumerConfig("alive", event.SubjectSubmitted, time.Second)
	a := f.watchAcks("alive")
	f.publish(event.SubjectSubmitted, "m1", "m2", "m3")
	var l log
	var calls atomic.Int64
	h := func(ctx context.Context, msg jetstream.Msg) error {
		defer l.begin(msg)()
		if calls.Add(1) <= 2 {
			time.Sleep(3 * time.Second)
		}
		return nil
	}
	start := time.Now()
	f.start(t.Context(), cfg, h, Options{Pool: NewPool(2), Prefetch: 1, MaxBatch: 10,
		KeepAlive: 300 * time.Millisecond, PullExpiry: 200 * time.Millisecond})
	testkit.Eventually(t, 10*time.Second, "three messages handled", func() bool {
		ds := l.of("m1")
		ds = append(ds, l.of("m2")...)
		ds = append(ds, l.of("m3")...)
		for _, d := range ds {
			if d.end.IsZero() {
				return false
			}
		}
		return len(ds) == 3
	})
	// One ack wait more: a message not kept alive would come back.
	time.Sleep(1200 * time.Millisecond)
	info := f.info("alive")
	if info.NumRedelivered != 0 || info.NumAckPending != 0 || l.count() != 3 {
		t.Errorf("redelivered %d, held %d, handled %d times; want 0, 0, 3", info.NumRedelivered, info.NumAckPending, l.count())
	}
	var waited time.Duration
	for _, m := range []string{"m1", "m2", "m3"} {
		ds := l.of(m)
		if len(ds) != 1 || ds[0].delivered != 1 {
			t.Errorf("%s: handled %+v, want once, first delivery", m, ds)
			continue
		}
		waited = max(waited, ds[0].at.Sub(start))
		// Each message was held 3s (handled, or waiting for a slot): marked in progress every 300ms.
		settled, progress := a.of(ds[0].reply)
		if len(settled) != 1 || settled[0] != "+ACK" || progress < 3 {
			t.Errorf("%s: settled with %q after %d progress marks, want one +ACK after at least 3", m, settled, progress)
		}
	}
	if waited < 2500*time.Millisecond {
		t.Errorf("the last message waited %s for a slot, want about 3s: the test did not test what it means to", waited)
	}
}

// TestResults checks how each handler result is settled on the server: nil is acked, a retry is
// nak'd and comes back after its delay (not before), an error after DefaultRetryDelay, a permanent
// error is terminated with its reason and never comes back, an abandoned message comes back after
// the ack wait, and a panicking handler's message is nak'd while the loop goes on.
func TestResults(t *testing.T) {
	t.Parallel()
	const ackWait = 2 * time.Second
	errLater := errors.New("later")
	type row struct {
		name   string
		result func() error
		// again: the message comes back, after a gap in [min, max] from the end of the first
		// handling (from its start for abandon, whose timer runs from the delivery).
		again    bool
		min, max time.Duration
		settled  string // what the first delivery was settled with ("" nothing)
	}
	rows := []row{
		{name: "ack", result: func() error { return nil }, settled: "+ACK"},
		{name: "retry after a delay", result: func() error { return Retry(700*time.Millisecond, errLater) },
			again: true, min: 650 * time.Millisecond, max: 1500 * time.Millisecond, settled: `-NAK {"delay": 700000000}`},
		{name: "error", result: func() error { return errLater },
			again: true, min: DefaultRetryDelay - 50*time.Millisecond, max: DefaultRetryDelay + 800*time.Millisecond,
			settled: `-NAK {"delay": 1000000000}`},
		{name: "retry at once", result: func() error { return Retry(0, errLater) },
			again: true, max: 500 * time.Millisecond, settled: "-NAK"},
		{name: "retry with a negative delay", result: func() error { return Retry(-time.Second, errLater) },
			again: true, max: 500 * time.Millisecond, settled: "-NAK"},
		{name: "permanent", result: func() error { return Permanent(errors.New("bad input")) }, settled: "+TERM bad input"},
		{name: "wrapped permanent", result: func() error { return fmt.Errorf("decode: %w", Permanent(errors.New("bad"))) },
			settled: "+TERM decode: bad"},
		{name: "permanent with a long reason", result: func() error { return Permanent(errors.New(strings.Repeat("r", 300))) },
			settled: "+TERM " + strings.Repeat("r", 200)},
		{name: "abandon", result: func() error { return ErrAbandon },
			again: true, min: ackWait - 100*time.Millisecond, max: ackWait + time.Second},
		{name: "panic", result: func() error { panic("boom") },
			again: true, min: DefaultRetryDelay - 50*time.Millisecond, max: DefaultRetryDelay + 800*time.Millisecond,
			settled: `-NAK {"delay": 1000000000}`},
	}
	f := newFixture(t)
	cfg := consumerConfig("results", event.SubjectSubmitted, ackWait)
	a := f.watchAcks("results")
	var terminated []string
	var termMu sync.Mutex
	adv, err := f.n.NC.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."+event.Stream+".results", func(m *nats.Msg) {
		var ev struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(m.Data, &ev)
		termMu.Lock()
		defer termMu.Unlock()
		terminated = append(terminated, ev.Reason)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = adv.Unsubscribe() }()

	byName := map[string]row{}
	for _, r := range rows {
		byName[r.name] = r
	}
	var l log
	h := func(ctx context.Context, msg jetstream.Msg) error {
		defer l.begin(msg)()
		if md, _ := msg.Metadata(); md.NumDelivered > 1 {
			return nil
		}
		return byName[string(msg.Data())].result()
	}
	start := time.Now()
	for _, r := range rows {
		f.publish(event.SubjectSubmitted, r.name)
	}
	f.start(t.Context(), cfg, h, Options{Pool: NewPool(16), Prefetch: 1, MaxBatch: 16,
		KeepAlive: ackWait / 3, PullExpiry: 200 * time.Millisecond})

	want := 0
	for _, r := range rows {
		want++
		if r.again {
			want++
		}
	}
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%d deliveries", want), func() bool { return l.count() >= want })
	// Long enough for anything acked or terminated to come back if it were not settled.
	time.Sleep(time.Until(start.Add(ackWait + time.Second)))

	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			ds := l.of(r.name)
			wantN := 1
			if r.again {
				wantN = 2
			}
			if len(ds) != wantN {
				t.Fatalf("delivered %d times, want %d", len(ds), wantN)
			}
			settled, _ := a.of(ds[0].reply)
			switch {
			case r.settled == "" && len(settled) != 0:
				t.Errorf("first delivery settled with %q, want nothing sent", settled)
			case r.settled != "" && (len(settled) != 1 || settled[0] != r.settled):
				t.Errorf("first delivery settled with %q, want %q", settled, r.settled)
			}
			if !r.again {
				return
			}
			from := ds[0].end
			if r.name == "abandon" {
				from = ds[0].at
			}
			if gap := ds[1].at.Sub(from); gap < r.min || gap > r.max {
				t.Errorf("came back after %s, want between %s and %s", gap, r.min, r.max)
			}
			if ds[1].delivered != 2 {
				t.Errorf("second delivery has NumDelivered %d, want 2", ds[1].delivered)
			}
			if settled, _ := a.of(ds[1].reply); len(settled) != 1 || settled[0] != "+ACK" {
				t.Errorf("second delivery settled with %q, want +ACK", settled)
			}
		})
	}
	termMu.Lock()
	defer termMu.Unlock()
	for _, reason := range []string{"bad input", "decode: bad", strings.Repeat("r", 200)} {
		found := false
		for _, got := range terminated {
			found = found || got == reason
		}
		if !found {
			t.Errorf("no MSG_TERMINATED advisory with reason %q; got %q", reason, terminated)
		}
	}
}

// goroutineID returns the id of the calling goroutine.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	if len(f) < 2 || f[0] != "goroutine" {
		panic("unexpected stack: " + string(buf))
	}
	return f[1]
}

// goroutineLives reports whether the goroutine id exists.
func goroutineLives(id string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Contains(buf, []byte("goroutine "+id+" ["))
}

type slotKey struct{}

// TestPark checks Park: the handler's goroutine ends and frees its token of Options.Active (another
// handler runs) while the message keeps its slot and stays alive past the ack wait; the wait runs
// in another goroutine, and the message is handled again, without waiting for a token, with the
// context the wait returned, and is then acked once.
func TestPark(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := consumerConfig("park", event.SubjectSubmitted, time.Second)
	a := f.watchAcks("park")
	var (
		l            log
		mu           sync.Mutex
		handlerG     string
		waitG        string
		secondSlot   any
		secondErr    error
		secondStop   bool
		qTimedOut    bool
		waitStarted  = make(chan struct{})
		releaseWait  = make(chan struct{})
		qStarted     = make(chan struct{})
		pDone        = make(chan struct{})
		starts, ends atomic.Int64
	)
	h := func(ctx context.Context, msg jetstream.Msg) error {
		defer l.begin(msg)()
		switch string(msg.Data()) {
		case "p":
			if ctx.Value(slotKey{}) == nil {
				mu.Lock()
				handlerG = goroutineID()
				mu.Unlock()
				return Park(func(ctx context.Context) context.Context {
					mu.Lock()
					waitG = goroutineID()
					mu.Unlock()
					close(waitStarted)
					<-releaseWait
					return context.WithValue(ctx, slotKey{}, "slot")
				})
			}
			mu.Lock()
			secondSlot, secondErr, secondStop = ctx.Value(slotKey{}), ctx.Err(), Stopping(ctx)
			mu.Unlock()
			close(pDone)
			return nil
		case "q":
			close(qStarted)
			// Holds the only token until p is handled again: p must not need one.
			select {
			case <-pDone:
			case <-time.After(5 * time.Second):
				mu.Lock()
				qTimedOut = true
				mu.Unlock()
			}
		}
		return nil
	}
	pool := NewPool(2)
	f.start(t.Context(), cfg, h, Options{Pool: pool, Active: make(chan struct{}, 1), Prefetch: 0, MaxBatch: 1,
		KeepAlive: 300 * time.Millisecond, PullExpiry: 200 * time.Millisecond,
		OnStart: func() { starts.Add(1) }, OnDone: func() { ends.Add(1) }})

	f.publish(event.SubjectSubmitted, "p")
	select {
	case <-waitStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("the wait of the parked message did not start within 5s")
	}
	parkedAt := time.Now()
	mu.Lock()
	hg, wg := handlerG, waitG
	mu.Unlock()
	if hg == wg {
		t.Errorf("the wait runs on the handler's goroutine %s", hg)
	}
	testkit.Eventually(t, 2*time.Second, "the parked handler's goroutine "+hg+" to end", func() bool { return !goroutineLives(hg) })

	f.publish(event.SubjectSubmitted, "q")
	select {
	case <-qStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("a second handler did not run while the first was parked (is the Active token held?)")
	}
	if got := pool.Used(); got != 2 {
		t.Errorf("%d slots used while p is parked and q handled, want 2 (a parked message keeps its slot)", got)
	}
	// Parked past the ack wait.
	time.Sleep(time.Until(parkedAt.Add(1500 * time.Millisecond)))
	close(releaseWait)
	select {
	case <-pDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the parked message was not handled again within 5s (waiting for a token?)")
	}
	testkit.Eventually(t, 5*time.Second, "both messages settled", func() bool { return ends.Load() == 2 })
	testkit.Eventually(t, 5*time.Second, "nothing held", func() bool { return f.info("park").NumAckPending == 0 })

	mu.Lock()
	defer mu.Unlock()
	if secondSlot != "slot" || secondErr != nil || secondStop {
		t.Errorf("handled again with slot %v, ctx error %v, Stopping %v; want the wait's value, a live context, false",
			secondSlot, secondErr, secondStop)
	}
	if qTimedOut {
		t.Errorf("q waited 5s for p: the parked message waited for q's token")
	}
	ps := l.of("p")
	if len(ps) != 2 || ps[0].delivered != 1 || ps[1].delivered != 1 || ps[0].reply != ps[1].reply {
		t.Fatalf("p handled %+v, want twice, both of its first delivery", ps)
	}
	if settled, progress := a.of(ps[0].reply); len(settled) != 1 || settled[0] != "+ACK" || progress < 3 {
		t.Errorf("p settled with %q after %d progress marks, want one +ACK after at least 3", settled, progress)
	}
	if info := f.info("park"); info.NumRedelivered != 0 {
		t.Errorf("%d redelivered, want 0", info.NumRedelivered)
	}
	if starts.Load() != 2 {
		t.Errorf("OnStart called %d times, want 2 (once per message, not per handling)", starts.Load())
	}
}

// TestRecreatesDeletedConsumer checks that a loop whose consumer is deleted reports it in Ready,
// creates the consumer again, reports ready again and handles what is published after.
func TestRecreatesDeletedConsumer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := consumerConfig("gone", event.SubjectSubmitted, 5*time.Second)
	var l log
	h := func(ctx context.Context, msg jetstream.Msg) error {
		defer l.begin(msg)()
		return nil
	}
	loop := f.start(t.Context(), cfg, h, Options{Pool: NewPool(4), Prefetch: 1, MaxBatch: 4,
		KeepAlive: time.Second, PullExpiry: 300 * time.Millisecond})
	f.publish(event.SubjectSubmitted, "before")
	testkit.Eventually(t, 5*time.Second, "the first message handled", func() bool { return len(l.of("before")) == 1 })
	if err := loop.Ready(); err != nil {
		t.Errorf("Ready before the delete: %v", err)
	}

	if err := f.n.JS.DeleteConsumer(t.Context(), event.Stream, "gone"); err != nil {
		t.Fatal(err)
	}
	notReady := testkit.WaitFor(t, 5*time.Second, "Ready to report the missing consumer", func() (error, bool) {
		err := loop.Ready()
		return err, err != nil
	})
	testkit.Eventually(t, 10*time.Second, "Ready to be nil again", func() bool { return loop.Ready() == nil })
	if _, err := f.n.JS.Consumer(t.Context(), event.Stream, "gone"); err != nil {
		t.Errorf("the consumer after Ready: %v, want it created again", err)
	}
	f.publish(event.SubjectSubmitted, "after")
	testkit.Eventually(t, 5*time.Second, "the message published after the delete handled", func() bool {
		return len(l.of("after")) == 1
	})
	t.Logf("Ready meanwhile: %v", notReady)
}

// TestSoftStop checks the stop of a loop: it pulls nothing more, hands the messages waiting for a
// slot back at once (another loop gets them well before the ack wait), and its handlers see
// Stopping while their context (Options.Work) stays alive until it is cancelled; Wait returns
// once they return.
func TestSoftStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := consumerConfig("stop", event.SubjectSubmitted, 10*time.Second)
	f.publish(event.SubjectSubmitted, "m1", "m2", "m3")

	type seen struct {
		stoppingAtStart bool
		sawStopping     bool
		errAtStop       error
		endedEarly      bool
	}
	var (
		calls   atomic.Int64
		mu      sync.Mutex
		got     seen
		started = make(chan string, 10)
		noted   = make(chan struct{})
	)
	hA := func(ctx context.Context, msg jetstream.Msg) error {
		calls.Add(1)
		s := seen{stoppingAtStart: Stopping(ctx)}
		started <- string(msg.Data())
		for end := time.Now().Add(10 * time.Second); !s.sawStopping && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			s.sawStopping = Stopping(ctx)
		}
		s.errAtStop = ctx.Err()
		select {
		case <-ctx.Done():
			s.endedEarly = true
		case <-time.After(300 * time.Millisecond):
		}
		mu.Lock()
		got = s
		mu.Unlock()
		close(noted)
		<-ctx.Done()
		return ctx.Err()
	}
	ctxA, stopA := context.WithCancel(t.Context())
	workA, hardStopA := context.WithCancel(t.Context())
	defer hardStopA()
	loopA := f.start(ctxA, cfg, hA, Options{Pool: NewPool(1), Prefetch: 2, MaxBatch: 10,
		KeepAlive: 200 * time.Millisecond, PullExpiry: 300 * time.Millisecond, Work: workA})
	var first string
	select {
	case first = <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("no message handled within 5s")
	}
	testkit.WaitFor(t, 5*time.Second, "one message handled and two waiting", func() (int, bool) {
		n := f.info("stop").NumAckPending
		return n, n == 3
	})

	stopA()
	stoppedAt := time.Now()
	var lB log
	hB := func(ctx context.Context, msg jetstream.Msg) error {
		defer lB.begin(msg)()
		return nil
	}
	f.start(t.Context(), cfg, hB, Options{Pool: NewPool(4), Prefetch: 1, MaxBatch: 4,
		KeepAlive: time.Second, PullExpiry: 200 * time.Millisecond})
	f.publish(event.SubjectSubmitted, "m4")

	var waiting []string
	for _, m := range []string{"m1", "m2", "m3"} {
		if m != first {
			waiting = append(waiting, m)
		}
	}
	testkit.Eventually(t, 5*time.Second, "the other loop to handle "+strings.Join(waiting, ", ")+" and m4", func() bool {
		return len(lB.of(waiting[0])) > 0 && len(lB.of(waiting[1])) > 0 && len(lB.of("m4")) > 0
	})
	for _, m := range waiting {
		d := lB.of(m)[0]
		if after := d.at.Sub(stoppedAt); after > 1500*time.Millisecond || d.delivered != 2 {
			t.Errorf("%s (waiting for a slot at the stop) reached the other loop %s after the stop as delivery %d, want within 1.5s (handed back, not left to the 10s ack wait) as delivery 2",
				m, after.Round(time.Millisecond), d.delivered)
		}
	}
	if d := lB.of("m4")[0]; d.delivered != 1 {
		t.Errorf("m4, published after the stop, reached the other loop as delivery %d, want 1 (the stopped loop pulled it)", d.delivered)
	}

	waited := make(chan struct{})
	go func() { loopA.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Errorf("Wait returned while a handler is still working")
	case <-time.After(300 * time.Millisecond):
	}
	select {
	case <-noted:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not see the stop within 5s")
	}
	mu.Lock()
	s := got
	mu.Unlock()
	if s.stoppingAtStart || !s.sawStopping || s.errAtStop != nil || s.endedEarly {
		t.Errorf("handler saw Stopping %v at start, %v after the stop, context error %v then, ended early %v; want false, true, nil, false",
			s.stoppingAtStart, s.sawStopping, s.errAtStop, s.endedEarly)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the stopped loop handled %d messages, want 1", n)
	}

	hardStopA()
	select {
	case <-waited:
	case <-time.After(3 * time.Second):
		t.Fatal("Wait did not return within 3s of the hard stop")
	}
	// The interrupted message is nak'd and handled by the other loop.
	testkit.Eventually(t, 5*time.Second, first+" handled by the other loop after the hard stop", func() bool {
		return len(lB.of(first)) > 0
	})
}

// TestBlocking checks Blocking: with one Active token, handlers inside Blocking do not hold it (the
// others run meanwhile), and take it again after: never two working at once.
func TestBlocking(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := consumerConfig("blocking", event.SubjectSubmitted, 10*time.Second)
	var working, maxWorking, blocked, maxBlocked, done atomic.Int64
	work := func() {
		maxInto(&maxWorking, working.Add(1))
		time.Sleep(30 * time.Millisecond)
		working.Add(-1)
	}
	h := func(ctx context.Context, msg jetstream.Msg) error {
		defer done.Add(1)
		work()
		Blocking(ctx, func() {
			maxInto(&maxBlocked, blocked.Add(1))
			time.Sleep(400 * time.Millisecond)
			blocked.Add(-1)
		})
		work()
		return nil
	}
	f.publish(event.SubjectSubmitted, "m1", "m2", "m3")
	f.start(t.Context(), cfg, h, Options{Pool: NewPool(3), Active: make(chan struct{}, 1), Prefetch: 0, MaxBatch: 3,
		KeepAlive: time.Second, PullExpiry: 200 * time.Millisecond})
	testkit.Eventually(t, 5*time.Second, "three messages handled", func() bool { return done.Load() == 3 })
	if maxWorking.Load() != 1 || maxBlocked.Load() != 3 {
		t.Errorf("at most %d handlers working and %d inside Blocking at once, want 1 (the token) and 3", maxWorking.Load(), maxBlocked.Load())
	}

	// Outside a handler (or without Active), Blocking just runs its wait.
	ran := false
	Blocking(context.Background(), func() { ran = true })
	if !ran || Stopping(context.Background()) {
		t.Errorf("outside a handler: Blocking ran %v, Stopping %v; want true, false", ran, Stopping(context.Background()))
	}
}

// TestSharedPool checks two loops sharing a pool of one slot: when the slot frees, the loop that
// has a message waiting in its stream must get to pull it, even when the other loop was waiting
// for a slot too. The executor runs Prefetch 1 at least; Options allows 0.
func TestSharedPool(t *testing.T) {
	for _, prefetch := range []int{1, 0} {
		t.Run(fmt.Sprintf("prefetch %d", prefetch), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			cfgA := consumerConfig("a", event.SubjectExecuted, 10*time.Second)
			cfgB := consumerConfig("b", event.SubjectResume, 10*time.Second)
			release := make(chan struct{})
			var l log
			hA := func(ctx context.Context, msg jetstream.Msg) error {
				defer l.begin(msg)()
				<-release
				return nil
			}
			hB := func(ctx context.Context, msg jetstream.Msg) error {
				defer l.begin(msg)()
				return nil
			}
			opt := Options{Pool: NewPool(1), Prefetch: prefetch, MaxBatch: 1, KeepAlive: time.Second,
				PullExpiry: 200 * time.Millisecond}
			f.start(t.Context(), cfgB, hB, opt)
			f.start(t.Context(), cfgA, hA, opt)
			f.publish(event.SubjectExecuted, "a1")
			testkit.Eventually(t, 5*time.Second, "a1 handled", func() bool { return len(l.of("a1")) == 1 })
			// Both loops have had the time to find the pool full.
			time.Sleep(500 * time.Millisecond)
			f.publish(event.SubjectResume, "b1")
			close(release)
			testkit.Eventually(t, 5*time.Second, "b1 (the other loop's) handled once the only slot is free", func() bool {
				return len(l.of("b1")) == 1
			})
		})
	}
}

// TestParkFree: a message parked with ParkFree gives its slot back while it waits (a pool of one
// then handles another message), is kept alive past the ack wait, takes a slot again and is
// handled again with the wait's context, and is acked once.
func TestParkFree(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := consumerConfig("parkfree", event.SubjectSubmitted, time.Second)
	var (
		l       log
		release = make(chan struct{})
		qDone   = make(chan struct{})
		pAgain  = make(chan any, 1)
	)
	h := func(ctx context.Context, msg jetstream.Msg) error {
		defer l.begin(msg)()
		switch string(msg.Data()) {
		case "p":
			if v := ctx.Value(slotKey{}); v != nil {
				pAgain <- v
				return nil
			}
			return ParkFree(func(ctx context.Context) context.Context {
				<-release
				return context.WithValue(ctx, slotKey{}, "share")
			})
		case "q":
			close(qDone)
		}
		return nil
	}
	pool := NewPool(1)
	f.start(t.Context(), cfg, h, Options{Pool: pool, Prefetch: 0, MaxBatch: 1,
		KeepAlive: 300 * time.Millisecond, PullExpiry: 200 * time.Millisecond})
	f.publish(event.SubjectSubmitted, "p")
	testkit.Eventually(t, 5*time.Second, "p parked", func() bool { return len(l.of("p")) == 1 })
	f.publish(event.SubjectSubmitted, "q")
	select {
	case <-qDone:
	case <-time.After(5 * time.Second):
		t.Fatal("q was not handled while p waited: p kept the only slot")
	}
	time.Sleep(1500 * time.Millisecond) // past the ack wait: p must not be redelivered
	close(release)
	select {
	case v := <-pAgain:
		if v != "share" {
			t.Errorf("p handled again with %v, want the wait's value", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("p was not handled again within 5s")
	}
	testkit.Eventually(t, 5*time.Second, "nothing held", func() bool { return f.info("parkfree").NumAckPending == 0 })
	if ps := l.of("p"); len(ps) != 2 || ps[1].delivered != 1 {
		t.Errorf("p handled %+v, want twice, both of its first delivery", ps)
	}
	if info := f.info("parkfree"); info.NumRedelivered != 0 {
		t.Errorf("%d redelivered, want 0", info.NumRedelivered)
	}
	if pool.Used() != 0 {
		t.Errorf("%d slots used at the end, want 0", pool.Used())
	}
}

// lockedBuffer is a log sink safe for the loop's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsHandlerFailures: a handler that fails (as when NATS is unavailable) is logged as a
// warning with its error; a message handed back on purpose (Retry) is not.
func TestLogsHandlerFailures(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var logs lockedBuffer
	f.log = zerolog.New(&logs)
	var n atomic.Int32
	done := make(chan struct{})
	h := func(_ context.Context, msg jetstream.Msg) error {
		switch n.Add(1) {
		case 1:
			return Retry(10*time.Millisecond, errors.New("handed back on purpose"))
		case 2:
			return errors.New("nats: no response from stream")
		case 3:
			close(done)
		}
		return nil
	}
	f.start(t.Context(), consumerConfig("logs", event.SubjectSubmitted, 5*time.Second), h, Options{Pool: NewPool(1)})
	f.publish(event.SubjectSubmitted, "x")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("handled %d times, want 3", n.Load())
	}
	out := logs.String()
	if !strings.Contains(out, `"level":"warn"`) || !strings.Contains(out, "no response from stream") ||
		!strings.Contains(out, "handler failed") {
		t.Errorf("logs %s: want a warning with the handler's error", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "handed back on purpose") && strings.Contains(line, `"level":"warn"`) {
			t.Errorf("a Retry was logged as a warning: %s", line)
		}
	}
}

type traceKey struct{}

// TestTraceAroundEachMessage: Options.Trace is called once per message handled and its context
// reaches the handler, across a park too; its end is called once, with the message's fate.
func TestTraceAroundEachMessage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := consumerConfig("traced", event.SubjectSubmitted, 5*time.Second)
	var (
		mu     sync.Mutex
		starts = map[string]int{}
		fates  = map[string][]string{}
		seen   = map[string][]any{}
		ended  = make(chan struct{}, 2)
	)
	trace := func(ctx context.Context, msg jetstream.Msg) (context.Context, func(string, error)) {
		data := string(msg.Data())
		mu.Lock()
		starts[data]++
		mu.Unlock()
		return context.WithValue(ctx, traceKey{}, "span of "+data), func(fate string, _ error) {
			mu.Lock()
			fates[data] = append(fates[data], fate)
			mu.Unlock()
			ended <- struct{}{}
		}
	}
	h := func(ctx context.Context, msg jetstream.Msg) error {
		data := string(msg.Data())
		mu.Lock()
		seen[data] = append(seen[data], ctx.Value(traceKey{}))
		mu.Unlock()
		switch {
		case data == "term":
			return Permanent(errors.New("bad message"))
		case ctx.Value(slotKey{}) == nil:
			return Park(func(ctx context.Context) context.Context { return context.WithValue(ctx, slotKey{}, "slot") })
		}
		return nil
	}
	f.start(t.Context(), cfg, h, Options{Pool: NewPool(4), KeepAlive: time.Second, Prefetch: 1, MaxBatch: 4, Trace: trace})
	f.publish(event.SubjectSubmitted, "parked", "term")
	for range 2 {
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the spans did not end within 10s")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if starts["parked"] != 1 || starts["term"] != 1 {
		t.Errorf("Trace called %v times, want once per message", starts)
	}
	if fmt.Sprint(fates) != "map[parked:[ack] term:[term]]" {
		t.Errorf("fates %v, want parked:[ack] term:[term]", fates)
	}
	if fmt.Sprint(seen["parked"]) != "[span of parked span of parked]" || fmt.Sprint(seen["term"]) != "[span of term]" {
		t.Errorf("the handler saw %v, want the span's context on every handling", seen)
	}
}
