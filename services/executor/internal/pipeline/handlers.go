package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/plans"
	"github.com/policyhooks/policyhooks/services/executor/internal/state"
	"github.com/policyhooks/policyhooks/services/executor/internal/timers"
	"github.com/policyhooks/policyhooks/shared/event"
)

// HandleSubmitted takes a privacy.request.submitted message: it records the request, snapshots
// the plan, stores the identity and drives the request. A bad event is reported and acked.
func (m *Machine) HandleSubmitted(ctx context.Context, msg jetstream.Msg) error {
	data := msg.Data()
	var sub event.Submitted
	if err := json.Unmarshal(data, &sub); err != nil {
		reason := "payload is not a valid submitted event: " + jsonProblem(err)
		var probe struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(data, &probe) == nil && event.ValidRequestID(probe.ID) {
			return m.invalid(ctx, event.Submitted{ID: probe.ID}, reason)
		}
		return m.reject(ctx, data, reason)
	}
	if err := sub.Validate(); err != nil {
		if event.ValidRequestID(sub.ID) {
			return m.invalid(ctx, sub, err.Error())
		}
		return m.reject(ctx, data, err.Error())
	}
	r := m.newRun(sub.ID)
	now := m.now()
	rec := &state.Record{Request: event.Request{
		ID: sub.ID, PolicyKey: sub.PolicyKey, ExternalID: sub.ExternalID, Status: event.StatusPending,
		Step: event.StepPreWebhooks, Run: 1, CreatedAt: now, UpdatedAt: now, Webhooks: []event.WebhookRecord{},
	}}
	plan, err := m.plans.Get(ctx, sub.PolicyKey)
	switch {
	case errors.Is(err, plans.ErrNotFound):
	case err != nil:
		return err
	default:
		snapshot(rec, plan)
	}
	rec.SetStatus(event.StatusPending, now, "", "")
	// With a plan, the record is created in_processing (its pending and in_processing events in
	// one write, the first call claimed) and the identity is stored right after; a crash in
	// between is healed by the redelivery of this message, which stores the identity it carries
	// before driving the request (see below). Without a plan, the record is created pending, the
	// identity stored and the error written, so that a retry finds the identity.
	direct := !planMissing(rec)
	if direct {
		exp := now.Add(m.store.IdentityTTL())
		rec.IdentityExpiresAt = &exp
		rec.StartedProcessingAt = &now
		rec.SetStatus(event.StatusInProcessing, now, "", "")
		r.ident = &sub.Identity
		r.lookahead(rec, now)
	}
	rev, err := m.store.Create(ctx, rec)
	if errors.Is(err, state.ErrExists) {
		r.ident = nil
		rec, rev, err = r.load(ctx)
		if err != nil {
			return r.finish(ctx, err)
		}
		switch rec.Status {
		case event.StatusPending:
		case event.StatusInProcessing:
			// A redelivery after a crash (or a second submission while it runs): the submission
			// is not taken again, but the request is driven on; claims keep calls single. The
			// identity is stored unless it is already (a crash right after the creation).
			if err := r.keepIdentity(ctx, sub.Identity); err != nil {
				return r.finish(ctx, err)
			}
			return r.finish(ctx, r.drive(ctx))
		default:
			r.info().Str("status", string(rec.Status)).Msg("submitted again: ignored")
			return r.finish(ctx, nil)
		}
	} else if err != nil {
		return err
	} else {
		for _, p := range rec.Outbox {
			m.metrics.transitions.WithLabelValues(string(p.Event.Status)).Inc()
		}
		r.flush(rec)
		r.last, r.lastRev = rec, rev
		if h := m.hooks.AfterWrite; h != nil {
			if err := h(r.id); err != nil {
				return consume.ErrAbandon
			}
		}
		if direct {
			return r.finish(ctx, r.identityThenDrive(ctx, rec, rev, sub.Identity))
		}
	}
	return r.finish(ctx, r.start(ctx, rec, rev, sub.Identity))
}

// keepIdentity stores ident as the identity of a request created in_processing by a submission
// whose handler stopped before storing it; an identity already stored is kept.
func (r *run) keepIdentity(ctx context.Context, ident event.Identity) error {
	_, created, err := r.m.store.PutIdentity(ctx, r.id, ident, true)
	if err != nil {
		return err
	}
	if created {
		r.ident = &ident
	}
	return nil
}

// identityThenDrive stores the identity of a request just created in_processing and drives it. An identity
// stored before (by an earlier request of that id, whose record is gone) is kept, as start does,
// and its expiry written.
func (r *run) identityThenDrive(ctx context.Context, rec *state.Record, rev uint64, ident event.Identity) error {
	exp, created, err := r.m.store.PutIdentity(ctx, r.id, ident, true)
	if err != nil {
		return err
	}
	if !created {
		r.ident = nil
		for {
			base := rec.EventSeq
			rec.IdentityExpiresAt = &exp
			rec.UpdatedAt = r.m.now()
			_, ok, err := r.write(ctx, rec, rev, base)
			if err != nil {
				return err
			}
			if ok {
				break
			}
			if rec, rev, err = r.load(ctx); err != nil {
				return err
			}
			if rec.Status != event.StatusInProcessing {
				break
			}
		}
	}
	return r.drive(ctx)
}

// start stores the identity of a pending request and sets it in_processing (or error when its
// policy is unknown), then drives it.
func (r *run) start(ctx context.Context, rec *state.Record, rev uint64, ident event.Identity) error {
	m := r.m
	exp, created, err := m.store.PutIdentity(ctx, r.id, ident, true)
	if err != nil {
		return err
	}
	if created {
		r.ident = &ident
	}
	for {
		base := rec.EventSeq
		now := m.now()
		rec.IdentityExpiresAt = &exp
		if planMissing(rec) {
			fail(rec, now, "", fmt.Sprintf("No Policy found for key %s.", rec.PolicyKey))
		} else {
			rec.StartedProcessingAt = &now
			rec.SetStatus(event.StatusInProcessing, now, "", "")
			r.lookahead(rec, now)
		}
		_, ok, err := r.write(ctx, rec, rev, base)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		rec, rev, err = r.load(ctx)
		if err != nil {
			return err
		}
		if rec.Status != event.StatusPending {
			break
		}
	}
	return r.drive(ctx)
}

// invalid reports a submitted event with a valid id that breaks the contract: an error record
// when the id is new (and can be a key), and privacy.request.status.error.
func (m *Machine) invalid(ctx context.Context, sub event.Submitted, reason string) error {
	m.log.Warn().Str("request_id", sub.ID).Str("reason", reason).Msg("invalid submitted event")
	now := m.now()
	if !event.ValidRequestID(sub.ID) {
		b, _ := json.Marshal(event.StatusChanged{ID: sub.ID, Status: event.StatusError, At: now,
			Step: event.StepPreWebhooks, Error: reason})
		if _, err := m.js.Publish(ctx, event.StatusSubject(event.StatusError), b); err != nil {
			return fmt.Errorf("pipeline: publish status: %w", err)
		}
		return nil
	}
	r := m.newRun(sub.ID)
	rec := &state.Record{Request: event.Request{
		ID: sub.ID, PolicyKey: sub.PolicyKey, ExternalID: sub.ExternalID, Step: event.StepPreWebhooks, Run: 1,
		CreatedAt: now, UpdatedAt: now, Webhooks: []event.WebhookRecord{},
	}}
	fail(rec, now, "", reason)
	if _, err := m.store.Create(ctx, rec); errors.Is(err, state.ErrExists) {
		r.info().Msg("invalid submission of a known id: ignored")
		return nil
	} else if err != nil {
		return err
	}
	m.metrics.transitions.WithLabelValues(string(event.StatusError)).Inc()
	r.flush(rec)
	return r.finish(ctx, nil)
}

// reject publishes privacy.request.rejected for an event without a usable id.
func (m *Machine) reject(ctx context.Context, data []byte, reason string) error {
	m.log.Warn().Str("reason", reason).Int("bytes", len(data)).Msg("submitted event rejected")
	const maxPayload = 64 << 10
	if len(data) > maxPayload {
		data = data[:maxPayload]
	}
	b, err := json.Marshal(event.Rejected{Reason: reason, Payload: string(data), At: m.now()})
	if err != nil {
		return err
	}
	if _, err := m.js.Publish(ctx, event.SubjectRejected, b); err != nil {
		return fmt.Errorf("pipeline: publish rejected: %w", err)
	}
	return nil
}

// HandleControl handles executed, resume, retry and fired timers. A message that does not decode
// (or names no valid request id) is terminated with the reason: it is never worth redelivering, and
// JetStream's terminated-message advisory makes it visible to operators.
func (m *Machine) HandleControl(ctx context.Context, msg jetstream.Msg) error {
	subject := msg.Subject()
	switch {
	case subject == event.SubjectExecuted:
		var ev event.Executed
		if err := json.Unmarshal(msg.Data(), &ev); err != nil || !event.ValidRequestID(ev.ID) {
			return undecodable("executed", err)
		}
		r := m.newRun(ev.ID)
		return r.finish(ctx, r.executed(ctx, ev))
	case subject == event.SubjectResume:
		var ev event.Resume
		if err := json.Unmarshal(msg.Data(), &ev); err != nil || !event.ValidRequestID(ev.RequestID) {
			return undecodable("resume", err)
		}
		r := m.newRun(ev.RequestID)
		return r.finish(ctx, r.resume(ctx, ev))
	case subject == event.SubjectRetry:
		var ev event.Retry
		if err := json.Unmarshal(msg.Data(), &ev); err != nil || !event.ValidRequestID(ev.RequestID) {
			return undecodable("retry", err)
		}
		r := m.newRun(ev.RequestID)
		return r.finish(ctx, r.retry(ctx, ev))
	case timers.IsFire(subject):
		var f timers.Fire
		if err := json.Unmarshal(msg.Data(), &f); err != nil || !event.ValidRequestID(f.RequestID) {
			return undecodable("timer", err)
		}
		r := m.newRun(f.RequestID)
		return r.finish(ctx, r.timer(ctx, f))
	}
	return nil
}

// executedPolls bounds the short in-process waits for the write of the execution step when an
// executed event overtakes it (the data layer may answer within milliseconds of execute).
var executedPolls = []time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond}

func (r *run) executed(ctx context.Context, ev event.Executed) error {
	polls := 0
	return r.transition(ctx, func(rec *state.Record, now time.Time) (decision, error) {
		switch {
		case rec.Status == event.StatusInProcessing && rec.Step == event.StepExecution:
			if !ev.Succeeded {
				msg := ev.Error
				if msg == "" {
					msg = "execution failed"
				}
				fail(rec, now, "", msg)
				return write, nil
			}
			rec.Step, rec.Next, rec.Run, rec.ExecutionDeadline = event.StepPostWebhooks, 0, 1, nil
			rec.UpdatedAt = now
			if _, err := r.identity(ctx); err != nil && !errors.Is(err, state.ErrNotFound) {
				return leave, err
			}
			r.lookahead(rec, now)
			return write, nil
		case rec.Status == event.StatusInProcessing && rec.Step == event.StepPreWebhooks &&
			rec.Next >= len(rec.Plan.Pre) && r.m.cfg.AwaitExecution:
			// The execute event is out and the step change is being written: read again shortly,
			// then let the message come back.
			if polls == len(executedPolls) {
				return leave, retryLater(200*time.Millisecond, "executed before the execution step was recorded")
			}
			select {
			case <-ctx.Done():
				return leave, ctx.Err()
			case <-time.After(executedPolls[polls]):
			}
			polls++
			return again, nil
		default:
			r.info().Str("status", string(rec.Status)).Str("step", string(rec.Step)).Msg("executed event ignored")
			return leave, nil
		}
	})
}

func (r *run) resume(ctx context.Context, ev event.Resume) error {
	return r.transition(ctx, func(rec *state.Record, now time.Time) (decision, error) {
		switch {
		case rec.Status == event.StatusPaused && rec.Pause == ev.Pause && rec.PausedWebhookID == ev.WebhookID:
		case rec.Status == event.StatusInProcessing && rec.Pause == ev.Pause && rec.Pause > 0:
			return driveOn, nil // this resume was applied; its handler stopped before finishing
		default:
			r.info().Str("status", string(rec.Status)).Int("pause", rec.Pause).Int("resume_pause", ev.Pause).
				Msg("resume event ignored")
			return leave, nil
		}
		ident, err := r.identity(ctx)
		if errors.Is(err, state.ErrNotFound) {
			fail(rec, now, webhookKey(rec, ev.WebhookID), identityExpired)
			return write, nil
		}
		if err != nil {
			return leave, err
		}
		if ev.DerivedIdentity != nil {
			merged := ident.Merge(*ev.DerivedIdentity)
			exp, _, err := r.m.store.PutIdentity(ctx, r.id, merged, false)
			if err != nil {
				return leave, err
			}
			r.ident = &merged
			rec.IdentityExpiresAt = &exp
		}
		rec.PausedWebhookID = ""
		rec.PauseExpiresAt = nil
		rec.SetStatus(event.StatusInProcessing, now, "", "")
		r.lookahead(rec, now)
		return write, nil
	})
}

func (r *run) retry(ctx context.Context, ev event.Retry) error {
	m := r.m
	return r.transition(ctx, func(rec *state.Record, now time.Time) (decision, error) {
		switch {
		case rec.Status == event.StatusError && rec.ErrorCount == ev.FromError:
		case rec.Status == event.StatusInProcessing && rec.ErrorCount == ev.FromError:
			return driveOn, nil // this retry was applied; its handler stopped before finishing
		default:
			r.info().Str("status", string(rec.Status)).Int("error_count", rec.ErrorCount).
				Int("from_error", ev.FromError).Msg("retry event ignored")
			return leave, nil
		}
		if planMissing(rec) {
			plan, err := m.plans.Get(ctx, rec.PolicyKey)
			if err != nil && !errors.Is(err, plans.ErrNotFound) {
				return leave, err
			}
			if err == nil {
				snapshot(rec, plan)
				rec.Step, rec.Run = event.StepPreWebhooks, 0
			}
		}
		rec.Error = nil
		rec.Claim, rec.RetryAt = nil, nil
		rec.Run++
		rec.UpdatedAt = now
		if rec.StartedProcessingAt == nil {
			rec.StartedProcessingAt = &now
		}
		msg := ""
		if planMissing(rec) {
			msg = fmt.Sprintf("No Policy found for key %s.", rec.PolicyKey)
		} else if rec.Step == event.StepExecution {
			var err error
			if msg, err = r.startExecution(ctx, rec); err != nil {
				return leave, err
			}
		} else {
			rec.Next = 0
			hooks, offset, _ := stepWebhooks(rec)
			for i := range hooks {
				rec.Webhooks[offset+i].Outcome = event.OutcomePending
			}
		}
		rec.SetStatus(event.StatusInProcessing, now, "", "")
		if msg != "" {
			fail(rec, now, "", msg)
		}
		return write, nil
	})
}

func (r *run) timer(ctx context.Context, f timers.Fire) error {
	m := r.m
	return r.transition(ctx, func(rec *state.Record, now time.Time) (decision, error) {
		switch f.Kind {
		case timers.PauseExpiry:
			if rec.Status != event.StatusPaused || rec.Pause != f.Pause || rec.PauseExpiresAt == nil {
				return leave, nil
			}
			due, msg := *rec.PauseExpiresAt, "the request was not resumed before its resume token expired"
			if e := rec.IdentityExpiresAt; e != nil && e.Before(due) {
				due, msg = *e, identityExpired
			}
			if now.Before(due) {
				return leave, retryLater(due.Sub(now), "pause expires later")
			}
			fail(rec, now, webhookKey(rec, rec.PausedWebhookID), msg)
			return write, nil
		case timers.ExecutionTimeout:
			if rec.Status != event.StatusInProcessing || rec.Step != event.StepExecution || rec.Run != f.Run ||
				rec.ExecutionDeadline == nil {
				return leave, nil
			}
			if now.Before(*rec.ExecutionDeadline) {
				return leave, retryLater(rec.ExecutionDeadline.Sub(now), "execution deadline later")
			}
			fail(rec, now, "", "execution did not finish within "+m.cfg.ExecutionTimeout.String())
			return write, nil
		default:
			return leave, nil
		}
	})
}

// decision is what an event handler decided after reading the request's record.
type decision int

const (
	// leave: nothing to do (a stale or mismatched event), or the error returned says why not now.
	leave decision = iota
	// driveOn: the event was applied before (its handler stopped before finishing): drive on.
	driveOn
	// again: read the record again and decide anew.
	again
	// write: the record was changed; CAS it and drive the request on.
	write
)

// transition is the loop of ARCHITECTURE.md's state machine that every event handler shares: read
// the record, let decide look at it and change it, CAS the change over the revision that was read
// (on a conflict someone else moved the request: read again and decide anew), then drive the
// request on from its new state. An unknown request is left alone.
func (r *run) transition(ctx context.Context, decide func(rec *state.Record, now time.Time) (decision, error)) error {
	for {
		rec, rev, err := r.load(ctx)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		base := rec.EventSeq
		d, err := decide(rec, r.m.now())
		if err != nil {
			return err
		}
		switch d {
		case leave:
			return nil
		case driveOn:
			return r.drive(ctx)
		case again:
			continue
		}
		_, ok, err := r.write(ctx, rec, rev, base)
		if err != nil {
			return err
		}
		if ok {
			return r.drive(ctx)
		}
	}
}

// undecodable is the permanent error of a control message that cannot be handled.
func undecodable(what string, err error) error {
	if err == nil {
		err = errors.New("no valid request id")
	}
	return consume.Permanent(fmt.Errorf("undecodable %s event: %w", what, err))
}

func webhookKey(rec *state.Record, id string) string {
	for _, w := range rec.Plan.Pre {
		if w.ID == id {
			return w.Key
		}
	}
	return ""
}

func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return "not JSON"
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	default:
		return "not JSON"
	}
}
