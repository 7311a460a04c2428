package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/state"
	"github.com/policyhooks/policyhooks/services/executor/internal/timers"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

// run is the work of one message on one request: it owns the claims it takes and the status
// events it publishes.
type run struct {
	m     *Machine
	id    string
	owner string
	sent  map[int]jetstream.PubAckFuture
	// stored holds the events of sent whose publish the stream confirmed (an ack future delivers
	// its ack once).
	stored map[int]bool
	ident  *event.Identity
	// last and lastRev are the record as this run last wrote it (or created it), so that the next
	// step starts from it without reading it back; a later CAS over lastRev fails if anyone else
	// moved the request meanwhile. nil when unknown (after a conflict).
	last    *state.Record
	lastRev uint64
	// held is the call slot awaited after a suspension, for the call this run claimed.
	held    *webhook.Slot
	heldURL string
}

func (m *Machine) newRun(id string) *run {
	return &run{m: m, id: id, owner: token.NewID(), sent: map[int]jetstream.PubAckFuture{}, stored: map[int]bool{}}
}

// info and warn start a log event about the run's request. The request id is added per event
// rather than kept in a logger per run: with thousands of requests in flight, a logger context
// per run cost memory even at levels that log nothing.
func (r *run) info() *zerolog.Event { return r.m.log.Info().Str("request_id", r.id) }

func (r *run) warn() *zerolog.Event { return r.m.log.Warn().Str("request_id", r.id) }

// load returns the record as this run last wrote it, else reads it and publishes any status event
// in its outbox. A caller that changes the record must write it or end the run with an error.
func (r *run) load(ctx context.Context) (*state.Record, uint64, error) {
	if r.last != nil {
		return r.last, r.lastRev, nil
	}
	rec, rev, err := r.m.store.Load(ctx, r.id)
	if err != nil {
		return nil, 0, err
	}
	r.flush(rec)
	return rec, rev, nil
}

// flush publishes the outbox events not yet published by this run; Nats-Msg-Id de-duplicates the
// ones another worker published too.
func (r *run) flush(rec *state.Record) {
	for _, p := range rec.Outbox {
		if _, ok := r.sent[p.Seq]; ok {
			continue
		}
		b, err := json.Marshal(p.Event)
		if err != nil {
			continue
		}
		f, err := r.m.js.PublishAsync(event.StatusSubject(p.Event.Status), b,
			jetstream.WithMsgID("status:"+r.id+":"+strconv.Itoa(p.Seq)))
		if err != nil {
			r.warn().Err(err).Msg("publish status event")
			continue
		}
		r.sent[p.Seq] = f
	}
}

// write CASes rec over rev and publishes its new status events. It reports false on a conflict.
func (r *run) write(ctx context.Context, rec *state.Record, rev uint64, baseSeq int) (uint64, bool, error) {
	r.last = nil
	r.dropStored(rec)
	nrev, err := r.m.store.Update(ctx, rec, rev)
	if errors.Is(err, state.ErrConflict) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	r.last, r.lastRev = rec, nrev
	for _, p := range rec.Outbox {
		if p.Seq > baseSeq {
			r.m.metrics.transitions.WithLabelValues(string(p.Event.Status)).Inc()
			r.info().Str("status", string(p.Event.Status)).Str("step", string(p.Event.Step)).
				Str("webhook_key", p.Event.WebhookKey).Str("error", p.Event.Error).Msg("request status")
		}
	}
	r.flush(rec)
	if h := r.m.hooks.AfterWrite; h != nil {
		if err := h(r.id); err != nil {
			return 0, false, consume.ErrAbandon
		}
	}
	return nrev, true, nil
}

// dropStored removes from rec's outbox the events the stream already confirmed, so that the write
// of a transition also clears the outbox of the earlier ones without waiting for anything.
func (r *run) dropStored(rec *state.Record) {
	if len(rec.Outbox) == 0 {
		return
	}
	kept := rec.Outbox[:0]
	for _, p := range rec.Outbox {
		if r.isStored(p.Seq) {
			continue
		}
		kept = append(kept, p)
	}
	clear(rec.Outbox[len(kept):])
	rec.Outbox = kept
}

// isStored reports, without waiting, whether the stream confirmed this run's publish of event seq.
func (r *run) isStored(seq int) bool {
	if r.stored[seq] {
		return true
	}
	f, ok := r.sent[seq]
	if !ok {
		return false
	}
	select {
	case <-f.Ok():
		r.stored[seq] = true
		r.sent[seq] = nil // the future holds the message
		return true
	default:
		return false
	}
}

// finish waits for the status events to be stored and removes them from the outbox.
func (r *run) finish(ctx context.Context, err error) error {
	if err != nil || len(r.sent) == 0 {
		return err
	}
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for seq, f := range r.sent {
		if r.stored[seq] {
			continue
		}
		select {
		case <-f.Ok():
		case perr := <-f.Err():
			return retryLater(time.Second, "publish status event %d: %w", seq, perr)
		case <-wait.Done():
			return retryLater(time.Second, "publish status events: %w", wait.Err())
		}
	}
	for range 10 {
		// The first try clears the outbox over the record as this run last wrote it; a conflict
		// means someone moved the request since, and the record is read again.
		rec, rev := r.last, r.lastRev
		r.last = nil
		if rec == nil {
			var lerr error
			rec, rev, lerr = r.m.store.Load(ctx, r.id)
			if lerr != nil {
				return retryLater(time.Second, "clear outbox: %w", lerr)
			}
		}
		kept := rec.Outbox[:0]
		for _, p := range rec.Outbox {
			if _, ok := r.sent[p.Seq]; !ok {
				kept = append(kept, p)
			}
		}
		if len(kept) == len(rec.Outbox) {
			return nil
		}
		if len(kept) > 0 {
			return nil // another worker's events: it clears them
		}
		rec.Outbox = nil
		_, uerr := r.m.store.Update(ctx, rec, rev)
		if uerr == nil {
			return nil
		}
		if !errors.Is(uerr, state.ErrConflict) {
			return retryLater(time.Second, "clear outbox: %w", uerr)
		}
	}
	return nil
}

// identity returns the request's current identity, loading it once per run.
func (r *run) identity(ctx context.Context) (event.Identity, error) {
	if r.ident != nil {
		return *r.ident, nil
	}
	ident, _, err := r.m.store.Identity(ctx, r.id)
	if err != nil {
		return event.Identity{}, err
	}
	r.ident = &ident
	return ident, nil
}

const identityExpired = "the identity of the request has expired"

// drive moves an in_processing request on until it pauses, waits for the data layer, fails or
// completes. Every action is preceded or followed by a CAS; a conflict re-reads and re-decides.
func (r *run) drive(ctx context.Context) error {
	m := r.m
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, rev, err := r.load(ctx)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if rec.Status != event.StatusInProcessing {
			return nil
		}
		base := rec.EventSeq
		now := m.now()
		if rec.Step == event.StepExecution {
			if rec.ExecutionDeadline == nil || now.Before(*rec.ExecutionDeadline) {
				return nil // the data layer answers, or the timer fires
			}
			fail(rec, now, "", "execution did not finish within "+m.cfg.ExecutionTimeout.String())
			if _, _, err := r.write(ctx, rec, rev, base); err != nil {
				return err
			}
			continue
		}
		hooks, offset, ct := stepWebhooks(rec)
		if rec.Next >= len(hooks) {
			if err := r.advance(ctx, rec, rev, base); err != nil {
				return err
			}
			continue
		}
		w := hooks[rec.Next]
		wr := &rec.Webhooks[offset+rec.Next]
		if w.ConnectionDisabled {
			wr.Outcome = event.OutcomeSkipped
			rec.Next++
			rec.UpdatedAt = now
			if _, _, err := r.write(ctx, rec, rev, base); err != nil {
				return err
			}
			continue
		}
		if rec.RetryAt != nil && now.Before(*rec.RetryAt) {
			consume.Blocking(ctx, func() {
				t := time.NewTimer(rec.RetryAt.Sub(now))
				defer t.Stop()
				select {
				case <-ctx.Done():
				case <-t.C:
				}
			})
			if err := ctx.Err(); err != nil {
				return err
			}
			continue
		}
		callID := webhook.WebhookID(r.id, ct, w.ID, rec.Run)
		if c := rec.Claim; c != nil && c.Owner == r.owner && c.WebhookID == callID {
			// Claimed by this run in the write that recorded the previous step (lookahead): make
			// the call now.
			secrets, _ := r.secretsOf(w)
			ident, err := r.identity(ctx)
			if err != nil {
				return err
			}
			slot, err := r.slot(ctx, secrets.URL)
			if err != nil {
				return err
			}
			if err := r.call(ctx, rec, rev, w, ct, callID, secrets, ident, countAttempts(wr, callID), slot); err != nil {
				return err
			}
			continue
		}
		if c := rec.Claim; c != nil {
			if now.Before(c.Until) {
				return retryLater(c.Until.Sub(now)+100*time.Millisecond, "%w", errClaimed)
			}
			// The worker that claimed the call stopped before writing its answer: record the
			// attempt it made and make it again, with the same webhook-id.
			wr.Attempts = append(wr.Attempts, event.Attempt{At: c.At, WebhookID: c.WebhookID,
				Error: "no answer recorded: the executor stopped during the call"})
			rec.Claim = nil
		}
		attempts := countAttempts(wr, callID)
		if attempts >= m.cfg.MaxAttempts {
			wr.Outcome = event.OutcomeFailed
			fail(rec, now, w.Key, fmt.Sprintf("webhook %s failed after %d attempts: %s", w.Key, attempts, lastError(wr)))
			if _, _, err := r.write(ctx, rec, rev, base); err != nil {
				return err
			}
			continue
		}
		secrets, msg := r.secretsOf(w)
		ident, ierr := r.identity(ctx)
		if errors.Is(ierr, state.ErrNotFound) {
			msg = identityExpired
		} else if ierr != nil {
			return ierr
		}
		if msg != "" {
			wr.Outcome = event.OutcomeFailed
			fail(rec, now, w.Key, msg)
			if _, _, err := r.write(ctx, rec, rev, base); err != nil {
				return err
			}
			continue
		}
		rec.Claim = &state.Claim{Owner: r.owner, At: now, Until: now.Add(m.cfg.WebhookTimeout + m.cfg.LeaseMargin), WebhookID: callID}
		rec.RetryAt = nil
		rec.UpdatedAt = now
		rev, ok, err := r.write(ctx, rec, rev, base)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		slot, err := r.slot(ctx, secrets.URL)
		if err != nil {
			return err
		}
		if err := r.call(ctx, rec, rev, w, ct, callID, secrets, ident, attempts, slot); err != nil {
			return err
		}
	}
}

// slot takes a call slot of the webhook host of url for the call this run claimed. When none is
// free, the run suspends (see consume.Suspend): a fresh goroutine with a small stack lets go of the
// messages of the run's confirmed status events, awaits the slot, and then drives
// the request on. The record says everything drive needs: it finds the claim of this run (the last
// record it wrote) and makes the call in the slot awaited for it. Every handler that drives a
// request returns drive's result to finish, which is what the continuation does.
func (r *run) slot(ctx context.Context, url string) (*webhook.Slot, error) {
	if sl := r.held; sl != nil {
		r.held = nil
		if r.heldURL == url {
			return sl, nil
		}
		sl.Release()
	}
	if sl := r.m.sender.TryAcquire(url); sl != nil {
		return sl, nil
	}
	return nil, consume.Suspend(func(ctx context.Context) {
		r.settle(ctx, 2*time.Second)
		r.held, r.heldURL = r.m.sender.Acquire(ctx, url), url
	}, func(ctx context.Context) error {
		defer func() {
			if r.held != nil {
				r.held.Release()
				r.held = nil
			}
		}()
		return r.finish(ctx, r.drive(ctx))
	})
}

// settle waits up to limit for the stream to confirm this run's status events, and drops the
// confirmed ones' futures (each holds its message); finish and the next write know them as stored.
func (r *run) settle(ctx context.Context, limit time.Duration) {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for seq, f := range r.sent {
		if f == nil || r.stored[seq] {
			r.sent[seq] = nil
			continue
		}
		if t == nil {
			t = time.NewTimer(limit)
		}
		select {
		case <-f.Ok():
			r.stored[seq] = true
			r.sent[seq] = nil
		case <-f.Err():
			return // finish reports it
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// call makes the claimed call in slot and writes its answer.
func (r *run) call(ctx context.Context, rec *state.Record, rev uint64, w event.PlanWebhook, ct event.CallbackType,
	callID string, secrets event.HTTPSSecrets, ident event.Identity, attempts int, slot *webhook.Slot) error {
	m := r.m
	defer slot.Release()
	c := webhook.Call{
		Slot:      slot,
		Secrets:   secrets,
		WebhookID: callID,
		Body: webhook.Body{PrivacyRequestID: r.id, PolicyKey: rec.PolicyKey, Direction: w.Direction,
			CallbackType: ct, Identity: ident},
	}
	pausing := ct == event.Pre && w.Direction == event.TwoWay
	if pausing {
		tok, err := m.tokens.Seal(&token.ResumeClaims{RequestID: r.id, WebhookID: w.ID, Pause: rec.Pause + 1,
			Scopes: []string{token.ScopeResume}}, m.cfg.PauseTimeout)
		if err != nil {
			return err
		}
		c.ReplyTo, c.ReplyToken = m.replyTo(r.id), tok
	}
	started := rec.Claim.At
	var res webhook.Result
	consume.Blocking(ctx, func() { res = m.sender.Send(ctx, c) })
	if ctx.Err() != nil {
		return ctx.Err() // stopping: the claim expires and the call is made again
	}
	if h := m.hooks.AfterCall; h != nil {
		if err := h(r.id, w.Key); err != nil {
			return consume.ErrAbandon
		}
	}
	ans := webhook.Classify(w.Direction, res)
	m.metrics.latency.Observe(res.Latency.Seconds())
	att := event.Attempt{At: started, WebhookID: callID, Status: res.Status,
		LatencyMS: float64(res.Latency.Microseconds()) / 1000}
	if ans.Verdict != webhook.Done {
		att.Error = ans.Reason
	}
	m.metrics.attempts.WithLabelValues(verdictLabel(ans.Verdict)).Inc()

	// A two-way answer's derived identity is stored before the state moves on: a crash in between
	// repeats the call, which is harmless, and never loses the identity.
	var identExp *time.Time
	if ans.Verdict == webhook.Done && ans.Derived != nil {
		merged := ident.Merge(*ans.Derived)
		exp, _, err := m.store.PutIdentity(ctx, r.id, merged, false)
		if err != nil {
			return err
		}
		r.ident, identExp = &merged, &exp
	}
	halt := ans.Verdict == webhook.Done && ans.Halt && pausing
	if halt {
		due := started.Add(m.cfg.PauseTimeout)
		if identExp == nil {
			identExp = rec.IdentityExpiresAt
		}
		if identExp != nil && identExp.Before(due) {
			due = *identExp
		}
		if err := timers.Schedule(ctx, m.js, timers.Fire{RequestID: r.id, Kind: timers.PauseExpiry, Pause: rec.Pause + 1, Due: due}); err != nil {
			return err
		}
	}
	for {
		base := rec.EventSeq
		if rec.Claim == nil || rec.Claim.Owner != r.owner || rec.Claim.WebhookID != callID {
			return nil // someone took the call over; it records its own answer
		}
		now := m.now()
		_, offset, _ := stepWebhooks(rec)
		wr := &rec.Webhooks[offset+rec.Next]
		wr.Attempts = append(wr.Attempts, att)
		rec.Claim = nil
		rec.UpdatedAt = now
		if identExp != nil {
			rec.IdentityExpiresAt = identExp
		}
		switch ans.Verdict {
		case webhook.Done:
			wr.Outcome = event.OutcomeSucceeded
			rec.Next++
			if halt {
				wr.Outcome = event.OutcomeHalted
				exp := started.Add(m.cfg.PauseTimeout)
				rec.Pause++
				rec.PausedWebhookID = w.ID
				rec.PausedAt = &now
				rec.PauseExpiresAt = &exp
				rec.SetStatus(event.StatusPaused, now, w.Key, "")
			}
		case webhook.Ignored:
			wr.Outcome = event.OutcomeIgnoredStatus
			rec.Next++
		case webhook.Retry:
			if attempts+1 >= m.cfg.MaxAttempts {
				wr.Outcome = event.OutcomeFailed
				fail(rec, now, w.Key, fmt.Sprintf("webhook %s failed after %d attempts: %s", w.Key, attempts+1, ans.Reason))
			} else {
				at := now.Add(m.backoff(attempts+1, res.RetryAfter))
				rec.RetryAt = &at
			}
		case webhook.Refused:
			wr.Outcome = event.OutcomeFailed
			fail(rec, now, w.Key, fmt.Sprintf("webhook %s: %s", w.Key, ans.Reason))
		}
		r.lookahead(rec, now)
		_, ok, err := r.write(ctx, rec, rev, base)
		if err != nil || ok {
			return err
		}
		rec, rev, err = r.load(ctx)
		if err != nil {
			return err
		}
	}
}

// lookahead applies to rec, before it is written, the transitions that drive would make next and
// that need nothing outside the record: skipping disabled connections, moving to the post-execution
// step (skip mode), completing, and claiming the next webhook call. One CAS then records an answer
// together with what follows it. Anything with another effect (publishing execute, a failure, a
// backoff) is left to drive, which reads the record this run wrote.
func (r *run) lookahead(rec *state.Record, now time.Time) {
	m := r.m
	for rec.Status == event.StatusInProcessing && rec.Claim == nil && rec.RetryAt == nil {
		hooks, offset, ct := stepWebhooks(rec)
		if rec.Next >= len(hooks) {
			switch {
			case rec.Step == event.StepPostWebhooks:
				rec.UpdatedAt = now
				rec.FinishedProcessingAt = &now
				rec.SetStatus(event.StatusComplete, now, "", "")
				return
			case rec.Step == event.StepPreWebhooks && !m.cfg.AwaitExecution:
				rec.Step, rec.Next, rec.Run = event.StepPostWebhooks, 0, 1
				rec.UpdatedAt = now
				continue
			default:
				return
			}
		}
		w := hooks[rec.Next]
		wr := &rec.Webhooks[offset+rec.Next]
		if w.ConnectionDisabled {
			wr.Outcome = event.OutcomeSkipped
			rec.Next++
			rec.UpdatedAt = now
			continue
		}
		callID := webhook.WebhookID(r.id, ct, w.ID, rec.Run)
		if r.ident == nil || countAttempts(wr, callID) >= m.cfg.MaxAttempts {
			return
		}
		if _, msg := r.secretsOf(w); msg != "" {
			return
		}
		rec.Claim = &state.Claim{Owner: r.owner, At: now, Until: now.Add(m.cfg.WebhookTimeout + m.cfg.LeaseMargin), WebhookID: callID}
		rec.UpdatedAt = now
		return
	}
}

// advance moves a request whose step's webhooks are done to the next step.
func (r *run) advance(ctx context.Context, rec *state.Record, rev uint64, base int) error {
	m := r.m
	now := m.now()
	rec.UpdatedAt = now
	switch {
	case rec.Step == event.StepPostWebhooks:
		rec.FinishedProcessingAt = &now
		rec.SetStatus(event.StatusComplete, now, "", "")
	case !m.cfg.AwaitExecution:
		rec.Step, rec.Next, rec.Run = event.StepPostWebhooks, 0, 1
	default:
		rec.Step, rec.Next, rec.Run = event.StepExecution, 0, 1
		if msg, err := r.startExecution(ctx, rec); err != nil {
			return err
		} else if msg != "" {
			fail(rec, now, "", msg)
		}
	}
	_, _, err := r.write(ctx, rec, rev, base)
	return err
}

// startExecution schedules the execution timeout and publishes execute for rec.Run; the caller
// writes rec. Publishing before the write means a crash repeats the publish, which Nats-Msg-Id
// de-duplicates, instead of losing it. It returns a message when the request must fail instead.
func (r *run) startExecution(ctx context.Context, rec *state.Record) (string, error) {
	m := r.m
	ident, err := r.identity(ctx)
	if errors.Is(err, state.ErrNotFound) {
		return identityExpired, nil
	}
	if err != nil {
		return "", err
	}
	deadline := m.now().Add(m.cfg.ExecutionTimeout)
	rec.ExecutionDeadline = &deadline
	if err := timers.Schedule(ctx, m.js, timers.Fire{RequestID: r.id, Kind: timers.ExecutionTimeout, Run: rec.Run, Due: deadline}); err != nil {
		return "", err
	}
	b, err := json.Marshal(event.Execute{ID: r.id, PolicyKey: rec.PolicyKey, Identity: ident})
	if err != nil {
		return "", err
	}
	if _, err := m.js.Publish(ctx, event.SubjectExecute, b,
		jetstream.WithMsgID("execute:"+r.id+":"+strconv.Itoa(rec.Run))); err != nil {
		return "", fmt.Errorf("pipeline: publish execute: %w", err)
	}
	return "", nil
}

// secretsOf opens the connection secrets of w. The opened secrets are shared by every run whose
// plan snapshot holds the same sealed value (see Machine.openedSecrets); callers only read them.
func (r *run) secretsOf(w event.PlanWebhook) (event.HTTPSSecrets, string) {
	return r.m.openedSecrets(w)
}

// maxOpenedSecrets bounds the cache of opened connection secrets; it is emptied when full.
const maxOpenedSecrets = 1024

type openedSecrets struct {
	secrets event.HTTPSSecrets
	msg     string
}

// openedSecrets returns the opened secrets of w from the cache, keyed by its connection key and
// sealed value (a sealed value opens to the same secrets every time), opening them on a miss.
func (m *Machine) openedSecrets(w event.PlanWebhook) (event.HTTPSSecrets, string) {
	key := w.ConnectionKey + "\x00" + w.Secrets
	m.openedMu.Lock()
	o, ok := m.opened[key]
	m.openedMu.Unlock()
	if ok {
		return o.secrets, o.msg
	}
	s, msg := m.openSecrets(w)
	m.openedMu.Lock()
	if len(m.opened) >= maxOpenedSecrets {
		clear(m.opened)
	}
	m.opened[key] = openedSecrets{secrets: s, msg: msg}
	m.openedMu.Unlock()
	return s, msg
}

func (m *Machine) openSecrets(w event.PlanWebhook) (event.HTTPSSecrets, string) {
	var s event.HTTPSSecrets
	if w.Secrets == "" {
		return s, fmt.Sprintf("connection %s has no secrets", w.ConnectionKey)
	}
	plain, err := m.secrets.Open(w.Secrets, []byte(w.ConnectionKey))
	if err != nil {
		return s, fmt.Sprintf("connection %s: secrets cannot be opened with the current keys", w.ConnectionKey)
	}
	if err := json.Unmarshal(plain, &s); err != nil {
		return s, fmt.Sprintf("connection %s: secrets are malformed", w.ConnectionKey)
	}
	return s, ""
}

func countAttempts(wr *event.WebhookRecord, callID string) int {
	n := 0
	for _, a := range wr.Attempts {
		if a.WebhookID == callID {
			n++
		}
	}
	return n
}

func lastError(wr *event.WebhookRecord) string {
	if len(wr.Attempts) == 0 {
		return ""
	}
	a := wr.Attempts[len(wr.Attempts)-1]
	if a.Error != "" {
		return a.Error
	}
	return "status " + strconv.Itoa(a.Status)
}

func verdictLabel(v webhook.Verdict) string {
	switch v {
	case webhook.Done:
		return "done"
	case webhook.Retry:
		return "retry"
	case webhook.Ignored:
		return "ignored_status"
	default:
		return "refused"
	}
}
