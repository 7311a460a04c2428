package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/runner"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/policyhooks/policyhooks/services/executor/internal/timers"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/breaker"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

// The world is a deterministic model of everything the runner touches — KV, the stream with its
// duplicate window, durable timers, consumers with redelivery, webhook receivers, the callback and
// the data layer — driven one I/O operation at a time by an explorer that picks, at each step,
// which thread goes on, which message is delivered, when time passes and which worker crashes.
// A crash makes every later operation of the worker fail without effect, as a killed process
// would, and its message comes back after the ack wait.

var errCrashed = errors.New("world: the worker crashed")

const (
	ackWait     = 30 * time.Second
	dedupWindow = 2 * time.Minute
	maxWorkers  = 2
	maxStall    = 50 * time.Second
)

// thread is a goroutine of a worker (its handler, or work the handler started beside it).
type thread struct {
	seq    int
	worker int
	op     string // the operation it waits at; "" while running
	grant  chan bool
	join   *thread // the thread a join waits for
	done   chan struct{}
	ended  bool
}

// message is a message of a consumer: delivered to one worker at a time, kept alive while held.
type message struct {
	seq       int
	subject   string
	data      []byte
	deliverAt time.Time
	held      bool
	done      bool
	fired     bool // a timer message that has been delivered (a later schedule makes a new one)
	timerKind lifecycle.TimerKind
}

// call is a webhook call a receiver saw.
type call struct {
	at        time.Time
	key       string
	webhookID string
	identity  event.Identity
	status    int
}

// post is a receiver's post of a reply-to-token to the callback, due at a time: a resume, a
// pre-approval reply (approval set), or an operator's approval (review).
type post struct {
	at       time.Time
	claims   token.ResumeClaims
	jti      string
	approval *token.PreApprovalClaims
	eligible bool
	review   bool
}

// receiverScript answers the n-th call (from 0) of a webhook.
type receiverScript func(key string, n int) (status int, body string)

type world struct {
	t       testing.TB
	mu      sync.Mutex
	cond    *sync.Cond
	running int
	threads []*thread
	byG     map[int64]*thread
	workers int
	active  map[int]*message // worker → the message it handles
	crashed map[int]bool
	now     time.Time
	records map[string][]byte
	revs    map[string]uint64
	idents  map[string]identEntry
	errored map[string]event.Errored // errored_requests
	// health is connection_health; breakers is its settings (Failures 0: breakers off).
	health   map[string]event.ConnectionHealth
	breakers breaker.Config
	msgs     []*message
	seqs     int
	stored   map[string]time.Time // Nats-Msg-Id → when stored (duplicate window)
	events   []event.StatusChanged
	executes []event.Execute
	// callsAtExecute is len(calls) when the first execute was published (the data layer reached),
	// -1 before.
	callsAtExecute int
	calls          []call
	posts          []post
	usedJTI        map[string]bool
	refused        []string
	script         receiverScript
	lateBy         time.Duration // 0: the receiver posts its token right after answering
	// notEligible is the pre-approval webhook that replies not eligible ("" none); reviewAfter is
	// when, after the request went pre_approval_not_eligible, an operator approves it.
	notEligible string
	reviewAfter time.Duration
	// approveEarly makes an operator approve the request as soon as it is awaiting pre-approval,
	// racing its pre-approval calls and replies.
	approveEarly bool
	// deny makes the operator's review a denial.
	deny bool
	// dataDelay is how long the data layer takes to answer execute.
	dataDelay time.Duration
	resumeID  *event.Identity
	plan      event.Plan
	trace     []string
	// start is when the schedule began; inherent is how long its request waits by design; stalled
	// is the time the schedule let pass while something could have gone on.
	start             time.Time
	inherent, stalled time.Duration
	// fates are the fates of the messages handled, in order ("<subject>: ack").
	fates []string
	// decoded is the record at decodedRev, for the checks.
	decoded    *lifecycle.Record
	decodedRev uint64
}

type identEntry struct {
	ident   event.Identity
	expires time.Time
}

func newWorld(t testing.TB, plan event.Plan, script receiverScript) *world {
	w := &world{t: t, byG: map[int64]*thread{}, active: map[int]*message{}, crashed: map[int]bool{}, callsAtExecute: -1,
		now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), records: map[string][]byte{}, revs: map[string]uint64{},
		idents: map[string]identEntry{}, errored: map[string]event.Errored{}, health: map[string]event.ConnectionHealth{}, stored: map[string]time.Time{}, usedJTI: map[string]bool{},
		script: script, plan: plan}
	w.start = w.now
	w.cond = sync.NewCond(&w.mu)
	return w
}

func goid() int64 {
	var b [64]byte
	s := b[:runtime.Stack(b[:], false)]
	s = bytes.TrimPrefix(s, []byte("goroutine "))
	n, _ := strconv.ParseInt(string(s[:bytes.IndexByte(s, ' ')]), 10, 64)
	return n
}

// spawn starts f as a new thread of worker.
func (w *world) spawn(worker int, f func()) *thread {
	w.mu.Lock()
	th := &thread{seq: len(w.threads), worker: worker, grant: make(chan bool), done: make(chan struct{})}
	w.threads = append(w.threads, th)
	w.running++
	w.mu.Unlock()
	go func() {
		g := goid()
		w.mu.Lock()
		w.byG[g] = th
		w.mu.Unlock()
		defer func() {
			w.mu.Lock()
			th.ended = true
			delete(w.byG, g)
			w.running--
			w.cond.Broadcast()
			w.mu.Unlock()
			close(th.done)
		}()
		f()
	}()
	return th
}

func (w *world) self() *thread {
	w.mu.Lock()
	defer w.mu.Unlock()
	th := w.byG[goid()]
	if th == nil {
		panic("world: an operation outside any thread")
	}
	return th
}

// op waits until the explorer lets the calling thread do the operation name, then does it (under
// the world's lock). A crashed worker's operations fail at once and do nothing.
func (w *world) op(name string, do func() error) error {
	th := w.self()
	w.mu.Lock()
	if w.crashed[th.worker] {
		w.mu.Unlock()
		return errCrashed
	}
	th.op = name
	w.running--
	w.cond.Broadcast()
	w.mu.Unlock()
	if crash := <-th.grant; crash {
		return errCrashed
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.crashed[th.worker] {
		return errCrashed
	}
	return do()
}

// join waits for th to end: an operation enabled once it did.
func (w *world) joinThread(th *thread) {
	me := w.self()
	w.mu.Lock()
	if w.crashed[me.worker] {
		w.mu.Unlock()
		<-th.done
		return
	}
	me.op, me.join = "join", th
	w.running--
	w.cond.Broadcast()
	w.mu.Unlock()
	<-me.grant
	<-th.done
}

// quiet waits until every thread waits at an operation or ended.
func (w *world) quiet() {
	w.mu.Lock()
	for w.running > 0 {
		w.cond.Wait()
	}
	w.mu.Unlock()
}

// grant lets th do its operation (or fail it: crash).
func (w *world) grant(th *thread, crash bool) {
	w.mu.Lock()
	th.op, th.join = "", nil
	w.running++
	w.mu.Unlock()
	th.grant <- crash
}

func (w *world) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%6.1fs ", w.now.Sub(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)).Seconds())+fmt.Sprintf(format, args...))
}

// ---- the runner's dependencies ----

type fakeRecords struct{ w *world }

func (f fakeRecords) Load(_ context.Context, id string) (*lifecycle.Record, uint64, error) {
	var rec *lifecycle.Record
	var rev uint64
	err := f.w.op("load", func() error {
		b, ok := f.w.records[id]
		if !ok {
			return store.ErrNotFound
		}
		rec, rev = &lifecycle.Record{}, f.w.revs[id]
		return json.Unmarshal(b, rec)
	})
	return rec, rev, err
}

func (f fakeRecords) Create(_ context.Context, r *lifecycle.Record) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	var rev uint64
	err = f.w.op("create record", func() error {
		if _, ok := f.w.records[r.ID]; ok {
			return store.ErrExists
		}
		f.w.records[r.ID], f.w.revs[r.ID] = b, 1
		rev = 1
		f.w.logf("record created: %s", summary(r))
		return nil
	})
	return rev, err
}

func (f fakeRecords) Update(_ context.Context, r *lifecycle.Record, rev uint64) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	err = f.w.op("update record", func() error {
		if f.w.revs[r.ID] != rev {
			return store.ErrConflict
		}
		f.w.revs[r.ID]++
		f.w.records[r.ID], nrev = b, f.w.revs[r.ID]
		f.w.logf("record written: %s", summary(r))
		return nil
	})
	return nrev, err
}

func summary(r *lifecycle.Record) string {
	s := fmt.Sprintf("%s %s next=%d run=%d pause=%d", r.Status, r.Step, r.Next, r.Run, r.Pause)
	if r.Claim != nil {
		s += " claim=" + r.Claim.Owner[:6]
	}
	if r.EarlyResume != nil {
		s += " early-resume"
	}
	if r.Executed != nil {
		s += " executed"
	}
	return s
}

type fakeIdentities struct {
	w   *world
	ttl time.Duration
}

func (f fakeIdentities) get(key string) (event.Identity, error) {
	e, ok := f.w.idents[key]
	if !ok || !f.w.now.Before(e.expires) {
		return event.Identity{}, store.ErrNotFound
	}
	return e.ident, nil
}

func (f fakeIdentities) Get(_ context.Context, id string) (event.Identity, error) {
	var ident event.Identity
	err := f.w.op("get identity", func() (err error) { ident, err = f.get(id); return err })
	return ident, err
}

func (f fakeIdentities) Create(_ context.Context, id string, ident event.Identity) (time.Time, bool, error) {
	var exp time.Time
	var created bool
	err := f.w.op("create identity", func() error {
		if _, err := f.get(id); err == nil {
			return nil
		}
		exp, created = f.w.now.Add(f.ttl), true
		f.w.idents[id] = identEntry{ident, exp}
		return nil
	})
	return exp, created, err
}

func (f fakeIdentities) Put(_ context.Context, id string, ident event.Identity) (time.Time, error) {
	return f.put("put identity", id, ident)
}

func (f fakeIdentities) put(op, key string, ident event.Identity) (time.Time, error) {
	var exp time.Time
	err := f.w.op(op, func() error {
		exp = f.w.now.Add(f.ttl)
		f.w.idents[key] = identEntry{ident, exp}
		return nil
	})
	return exp, err
}

func (f fakeIdentities) Delete(_ context.Context, id string) error {
	return f.w.op("delete identity", func() error { delete(f.w.idents, id); return nil })
}

func (f fakeIdentities) PutPatch(_ context.Context, id, name string, ident event.Identity) error {
	_, err := f.put("put patch", id+".patch."+name, ident)
	return err
}

func (f fakeIdentities) Patch(_ context.Context, id, name string) (event.Identity, error) {
	var ident event.Identity
	err := f.w.op("get patch", func() (err error) { ident, err = f.get(id + ".patch." + name); return err })
	return ident, err
}

func (f fakeIdentities) DeletePatch(_ context.Context, id, name string) error {
	return f.w.op("delete patch", func() error { delete(f.w.idents, id+".patch."+name); return nil })
}

// Forget is store.Identities.Forget: the identity kept until until with a shorter TTL, or removed.
func (f fakeIdentities) Forget(_ context.Context, id string, until time.Time) error {
	return f.w.op("forget identity", func() error {
		if e, ok := f.w.idents[id]; ok && until.Sub(f.w.now) >= time.Second {
			f.w.idents[id] = identEntry{e.ident, until}
			return nil
		}
		delete(f.w.idents, id)
		return nil
	})
}

// fakeErrors is errored_requests.
type fakeErrors struct{ w *world }

func (f fakeErrors) Put(_ context.Context, e event.Errored) error {
	return f.w.op("index error", func() error { f.w.errored[e.ID] = e; return nil })
}

func (f fakeErrors) Delete(_ context.Context, id string) error {
	return f.w.op("unindex error", func() error { delete(f.w.errored, id); return nil })
}

// storedAck is an Ack the stream already answered.
type storedAck struct {
	ok  chan *jetstream.PubAck
	err chan error
}

func (a storedAck) Ok() <-chan *jetstream.PubAck { return a.ok }
func (a storedAck) Err() <-chan error            { return a.err }

type fakePublisher struct{ w *world }

// store appends to the stream unless msgID was stored within the duplicate window.
func (w *world) store(msgID string) bool {
	if at, ok := w.stored[msgID]; ok && w.now.Sub(at) < dedupWindow {
		return false
	}
	w.stored[msgID] = w.now
	return true
}

func (f fakePublisher) Status(_ context.Context, ev event.StatusChanged) (runner.Ack, error) {
	err := f.w.op("publish status", func() error {
		if f.w.store(fmt.Sprintf("status:%s:%d", ev.ID, ev.Seq)) {
			f.w.events = append(f.w.events, ev)
			f.w.logf("status event %d: %s %s", ev.Seq, ev.Status, ev.Action)
			if ev.Status == event.StatusAwaitingPreApproval && ev.Action == "" && f.w.approveEarly {
				f.w.posts = append(f.w.posts, post{at: f.w.now, review: true})
			}
			if ev.Status == event.StatusPreApprovalNotEligible {
				// An operator reads it and approves the request a while later.
				f.w.posts = append(f.w.posts, post{at: f.w.now.Add(f.w.reviewAfter), review: true})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a := storedAck{ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	a.ok <- &jetstream.PubAck{}
	return a, nil
}

func (f fakePublisher) Execute(_ context.Context, ev event.Execute) error {
	return f.w.op("publish execute", func() error {
		if f.w.store(ev.ExecutionID) {
			if len(f.w.executes) == 0 {
				f.w.callsAtExecute = len(f.w.calls)
			}
			f.w.executes = append(f.w.executes, ev)
			f.w.logf("execute %s", ev.ExecutionID[:10])
			// The data layer runs it (once per execution id) and answers.
			b, _ := json.Marshal(event.Executed{ID: ev.ID, ExecutionID: ev.ExecutionID, Succeeded: true})
			f.w.enqueue(event.SubjectExecuted, b, f.w.now.Add(f.w.dataDelay))
		}
		return nil
	})
}

func (f fakePublisher) Invalid(context.Context, event.StatusChanged, string) error { return nil }
func (f fakePublisher) Rejected(context.Context, event.Rejected) error             { return nil }

type fakeTimers struct{ w *world }

func (f fakeTimers) Schedule(_ context.Context, id string, t lifecycle.Timer) error {
	return f.w.op("schedule timer", func() error {
		b, _ := json.Marshal(timers.Fire{RequestID: id, Kind: t.Kind, Pause: t.Pause, Run: t.Run, Due: t.Due})
		for _, m := range f.w.msgs {
			if m.timerKind == t.Kind && !m.fired && !m.done {
				m.data, m.deliverAt = b, t.Due // a later schedule replaces the earlier
				return nil
			}
		}
		m := f.w.enqueue("privacy.request.timer.fire."+string(t.Kind)+".x", b, t.Due)
		m.timerKind = t.Kind
		f.w.logf("timer %s scheduled at +%s", t.Kind, t.Due.Sub(f.w.now))
		return nil
	})
}

// fakeHealth is connection_health over the world, with the real breaker table: its writes are
// operations (they interleave with the others), Held and Open read it as a replica's view would.
type fakeHealth struct{ w *world }

func (f fakeHealth) Held(key string, now time.Time) (time.Time, bool, bool) {
	if !f.w.breakers.On() {
		return time.Time{}, false, false
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	return breaker.Held(f.w.health[key], now, f.w.breakers)
}

func (f fakeHealth) Open(key string) bool {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	return f.w.breakers.On() && f.w.health[key].State == event.BreakerOpen
}

func (f fakeHealth) apply(key string, ev breaker.Event) (event.ConnectionHealth, error) {
	var h event.ConnectionHealth
	err := f.w.op("breaker "+string(ev.Input)+" "+key, func() error {
		cur := f.w.health[key]
		cur.ConnectionKey = key
		next, row, changed := breaker.Apply(cur, ev, f.w.breakers)
		if changed {
			f.w.health[key] = next
			f.w.logf("breaker %s %s: %s → %s", key, ev.Input, row, next.State)
		}
		h = next
		return nil
	})
	return h, err
}

func (f fakeHealth) TakeProbe(_ context.Context, key, owner string) (bool, error) {
	h, err := f.apply(key, breaker.Event{Input: breaker.TakeProbe, Owner: owner, Now: f.w.clock()})
	return err == nil && breaker.MayCall(h, owner), err
}

func (f fakeHealth) Observe(_ context.Context, key, owner string, failed bool, reason string) error {
	if !f.w.breakers.On() {
		return nil
	}
	ev := breaker.Event{Input: breaker.Succeeded, Owner: owner, Now: f.w.clock()}
	if failed {
		ev.Input, ev.Reason = breaker.Failed, reason
	}
	_, err := f.apply(key, ev)
	return err
}

// clock reads the world's time.
func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

type fakePlans struct{ w *world }

func (f fakePlans) Get(context.Context, string) (event.Plan, error) { return f.w.plan, nil }
func (f fakePlans) Latest(string) (event.Plan, bool)                { return f.w.plan, true }

type fakeSecrets struct{}

func (fakeSecrets) Open(w event.PlanWebhook) (event.HTTPSSecrets, string) {
	return event.HTTPSSecrets{URL: "https://receiver.example/" + w.Key}, ""
}

type fakeCaller struct{ w *world }

func (fakeCaller) TryAcquire(string) *webhook.Slot               { return &webhook.Slot{} }
func (fakeCaller) Acquire(context.Context, string) *webhook.Slot { return &webhook.Slot{} }
func (f fakeCaller) Send(_ context.Context, c webhook.Call) webhook.Result {
	key := strings.TrimPrefix(c.Secrets.URL, "https://receiver.example/")
	var res webhook.Result
	err := f.w.op("call "+key, func() error {
		n := 0
		for _, prev := range f.w.calls {
			if prev.key == key {
				n++
			}
		}
		status, body := f.w.script(key, n)
		f.w.calls = append(f.w.calls, call{at: f.w.now, key: key, webhookID: c.WebhookID, identity: c.Body.Identity, status: status})
		f.w.logf("call %s #%d → %d %s", key, n, status, body)
		res = webhook.Result{Status: status, Body: []byte(body)}
		if c.ReplyEligible != "" {
			claims := &token.PreApprovalClaims{}
			_ = json.Unmarshal([]byte(c.ReplyToken), claims)
			f.w.posts = append(f.w.posts, post{at: f.w.now.Add(f.w.lateBy), approval: claims, jti: claims.ID, eligible: key != f.w.notEligible})
			f.w.postDue()
		} else if c.ReplyToken != "" && strings.Contains(body, `"halt": true`) {
			var claims token.ResumeClaims
			_ = json.Unmarshal([]byte(c.ReplyToken), &claims)
			f.w.posts = append(f.w.posts, post{at: f.w.now.Add(f.w.lateBy), claims: claims, jti: claims.ID})
			f.w.postDue()
		}
		return nil
	})
	if err != nil {
		return webhook.Result{Err: err}
	}
	return res
}

// seal is the fake token sealer: the claims in clear (the receiver reads them back), with a jti
// when they have none.
func seal(c token.Claimer, _ time.Duration) (string, error) {
	if rc, ok := c.(*token.ResumeClaims); ok && rc.ID == "" {
		rc.ID = token.NewID()
	}
	b, err := json.Marshal(c)
	return string(b), err
}

// postDue runs the receivers' posts that are due: the callback accepts a token (SPEC §7) when the
// request is paused for it or still awaits the answer of its call, once.
func (w *world) postDue() {
	kept := w.posts[:0]
	for _, p := range w.posts {
		if w.now.Before(p.at) {
			kept = append(kept, p)
			continue
		}
		rec := *w.record()
		switch {
		case p.review:
			w.acceptReview(rec)
			continue
		case p.approval != nil:
			w.acceptReply(rec, p)
			continue
		}
		cur, _, ok := rec.Current()
		accept := !w.usedJTI[p.jti] && (rec.Status == event.StatusPaused && rec.Pause == p.claims.Pause && rec.PausedWebhookID == p.claims.WebhookID ||
			rec.Status == event.StatusInProcessing && rec.Step == event.StepPreWebhooks && ok && cur.ID == p.claims.WebhookID && rec.Pause+1 == p.claims.Pause)
		if !accept {
			w.refused = append(w.refused, fmt.Sprintf("pause %d refused in %s", p.claims.Pause, summary(&rec)))
			w.logf("callback refused the token of pause %d", p.claims.Pause)
			continue
		}
		w.usedJTI[p.jti] = true
		b, _ := json.Marshal(event.Resume{RequestID: p.claims.RequestID, WebhookID: p.claims.WebhookID, Pause: p.claims.Pause,
			TokenID: p.jti, DerivedIdentity: w.resumeID})
		w.enqueue(event.SubjectResume, b, w.now)
		w.logf("callback accepted the token of pause %d", p.claims.Pause)
	}
	w.posts = kept
}

// acceptReply is the callback taking a pre-approval reply (SPEC §7): once per token, while the
// request awaits the replies of the run the token names.
func (w *world) acceptReply(rec lifecycle.Record, p post) {
	c := p.approval
	if w.usedJTI[p.jti] || rec.Status != event.StatusAwaitingPreApproval || rec.Run != c.Run {
		w.refused = append(w.refused, fmt.Sprintf("reply of %s run %d refused in %s", c.WebhookID, c.Run, summary(&rec)))
		w.logf("callback refused the reply of %s", c.WebhookID)
		return
	}
	w.usedJTI[p.jti] = true
	b, _ := json.Marshal(event.PreApprovalReply{RequestID: c.RequestID, WebhookID: c.WebhookID, Run: c.Run, Eligible: p.eligible, TokenID: p.jti})
	w.enqueue(event.SubjectPreApproval, b, w.now)
	w.logf("callback accepted the reply of %s (eligible %v)", c.WebhookID, p.eligible)
}

// acceptReview is the callback taking an operator's approval of a request in the pre-approval stage.
func (w *world) acceptReview(rec lifecycle.Record) {
	if rec.Status != event.StatusAwaitingPreApproval && rec.Status != event.StatusPreApprovalNotEligible {
		w.refused = append(w.refused, "review refused in "+summary(&rec))
		return
	}
	b, _ := json.Marshal(event.Review{RequestID: rec.ID, Approved: !w.deny})
	if w.store(fmt.Sprintf("review-%s-%d", rec.ID, rec.Run)) {
		w.enqueue(event.SubjectReview, b, w.now)
		w.logf("an operator reviews (deny %v)", w.deny)
	}
}

func (w *world) enqueue(subject string, data []byte, at time.Time) *message {
	w.seqs++
	m := &message{seq: w.seqs, subject: subject, data: data, deliverAt: at}
	w.msgs = append(w.msgs, m)
	return m
}

// fakeMsg is what the runner reads of a message.
type fakeMsg struct {
	jetstream.Msg
	seq     int
	subject string
	data    []byte
}

func (m fakeMsg) Subject() string { return m.subject }
func (m fakeMsg) Data() []byte    { return m.data }
func (m fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: uint64(m.seq)}}, nil
}

// newRunner returns a runner over the world's fakes.
func (w *world) newRunner(cfg lifecycle.Config) *runner.Runner {
	return runner.New(runner.Config{Lifecycle: cfg, RetryBaseDelay: time.Second, RetryMaxDelay: 4 * time.Second}, runner.Deps{
		Records: fakeRecords{w}, Identities: fakeIdentities{w, cfg.IdentityTTL}, Errors: fakeErrors{w}, Publisher: fakePublisher{w},
		Timers: fakeTimers{w}, Plans: fakePlans{w}, Caller: fakeCaller{w}, Secrets: fakeSecrets{}, Health: fakeHealth{w}, Seal: seal,
		Log: zerolog.Nop(), Now: func() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.now },
		Go: func(f func()) func() {
			me := w.self()
			th := w.spawn(me.worker, f)
			return func() { w.joinThread(th) }
		},
		Jitter: func(n int64) int64 { return 0 },
	})
}

// ---- the explorer's moves ----

type moveKind int

const (
	moveStep    moveKind = iota // let a thread do its operation
	moveDeliver                 // deliver a message to a new worker
	moveTick                    // let time pass to the next due event
	moveCrash                   // crash a worker
	moveDup                     // publish the submission again (another Nats-Msg-Id)
)

type move struct {
	kind   moveKind
	thread *thread
	msg    *message
	worker int
}

func (m move) String() string {
	switch m.kind {
	case moveStep:
		return fmt.Sprintf("worker %d: %s", m.thread.worker, m.thread.op)
	case moveDeliver:
		return fmt.Sprintf("deliver %s", m.msg.subject)
	case moveTick:
		return "time passes"
	case moveCrash:
		return fmt.Sprintf("crash worker %d", m.worker)
	default:
		return "submit again"
	}
}

// moves returns the possible moves, the default first: run the oldest waiting thread, else deliver
// the oldest due message, else let time pass.
func (w *world) moves(crashes, dups int) []move {
	w.mu.Lock()
	defer w.mu.Unlock()
	var steps, delivers []move
	for _, th := range w.threads {
		if th.ended || th.op == "" || th.join != nil && !th.join.ended {
			continue
		}
		steps = append(steps, move{kind: moveStep, thread: th})
	}
	if len(w.active) < maxWorkers {
		for _, m := range w.dueMsgs() {
			delivers = append(delivers, move{kind: moveDeliver, msg: m})
		}
	}
	var out []move
	out = append(out, steps...)
	out = append(out, delivers...)
	// Time passes to the next due event; while a thread or a due message could go on, only as far
	// as a worker or a consumer may stall (a slow call, a pause for garbage collection, a consumer
	// catching up): long enough for claims, ack waits and backoffs to run out under it, not for the
	// request's own timeouts (an outage that long fails requests by design).
	if next, ok := w.nextDue(); ok && (len(steps) == 0 && len(w.dueMsgs()) == 0 || next.Sub(w.now) <= maxStall) {
		out = append(out, move{kind: moveTick})
	}
	if crashes > 0 {
		seen := map[int]bool{}
		for _, s := range steps {
			if !seen[s.thread.worker] && !w.crashed[s.thread.worker] && s.thread.worker > 0 {
				seen[s.thread.worker] = true
				out = append(out, move{kind: moveCrash, worker: s.thread.worker})
			}
		}
	}
	if dups > 0 {
		out = append(out, move{kind: moveDup})
	}
	return out
}

func (w *world) dueMsgs() []*message {
	var due []*message
	for _, m := range w.msgs {
		if !m.held && !m.done && !m.deliverAt.After(w.now) {
			due = append(due, m)
		}
	}
	sort.SliceStable(due, func(i, j int) bool { return due[i].deliverAt.Before(due[j].deliverAt) })
	return due
}

// nextDue is the next time something is due: a message, or a receiver's post.
func (w *world) nextDue() (time.Time, bool) {
	var next time.Time
	for _, m := range w.msgs {
		if !m.held && !m.done && m.deliverAt.After(w.now) && (next.IsZero() || m.deliverAt.Before(next)) {
			next = m.deliverAt
		}
	}
	for _, p := range w.posts {
		if p.at.After(w.now) && (next.IsZero() || p.at.Before(next)) {
			next = p.at
		}
	}
	return next, !next.IsZero()
}

// deliver hands m to a new worker running the runner's handler.
func (w *world) deliver(r *runner.Runner, m *message) {
	w.mu.Lock()
	w.workers++
	worker := w.workers
	m.held = true
	if m.timerKind != "" {
		m.fired = true
	}
	w.active[worker] = m
	w.logf("worker %d takes %s", worker, m.subject)
	w.mu.Unlock()
	w.spawn(worker, func() {
		ctx := context.Background()
		var err error
		if m.subject == event.SubjectSubmitted {
			err = r.HandleSubmitted(ctx, fakeMsg{seq: m.seq, subject: m.subject, data: m.data})
		} else {
			err = r.HandleControl(ctx, fakeMsg{seq: m.seq, subject: m.subject, data: m.data})
		}
		w.settle(worker, m, err)
	})
}

// settle turns a handler's end into its message's fate; a crashed worker's message comes back
// after the ack wait.
func (w *world) settle(worker int, m *message, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.active, worker)
	m.held = false
	if w.crashed[worker] {
		m.deliverAt = w.now.Add(ackWait)
		w.logf("worker %d crashed: %s back at +%s", worker, m.subject, ackWait)
		return
	}
	fate, delay := consume.Fate(err)
	w.fates = append(w.fates, m.subject+": "+fate)
	switch fate {
	case "ack", "term":
		m.done = true
		w.logf("worker %d: %s %s (%v)", worker, fate, m.subject, err)
	case "abandon":
		m.deliverAt = w.now.Add(ackWait)
	default:
		m.deliverAt = w.now.Add(delay)
		w.logf("worker %d: nak %s for %s (%v)", worker, m.subject, delay, err)
	}
}
