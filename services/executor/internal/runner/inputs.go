package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/plans"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/policyhooks/policyhooks/services/executor/internal/timers"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/tracing"
)

// HandleSubmitted handles a privacy.request.submitted message (consume.Handler).
func (r *Runner) HandleSubmitted(ctx context.Context, msg jetstream.Msg) error {
	return r.submitted(ctx, originOf(msg), msg.Data())
}

// origin is what a run knows of its message: tag identifies it across its redeliveries (its stream
// sequence; the status events a run writes carry it, see run.flush), deliveries counts them.
type origin struct {
	tag        string
	deliveries uint64
}

func originOf(msg jetstream.Msg) origin {
	md, err := msg.Metadata()
	if err != nil || md == nil {
		return origin{}
	}
	return origin{tag: strconv.FormatUint(md.Sequence.Stream, 10), deliveries: md.NumDelivered}
}

// HandleControl handles executed, resume, retry, pre-approval replies, reviews and fired timers (consume.Handler). A message that
// does not decode (or names no valid request id) is terminated with the reason: it is never worth
// redelivering, and JetStream's terminated-message advisory makes it visible to operators.
func (r *Runner) HandleControl(ctx context.Context, msg jetstream.Msg) error {
	subject, data, by := msg.Subject(), msg.Data(), originOf(msg)
	switch {
	case subject == event.SubjectExecuted:
		var ev event.Executed
		if err := json.Unmarshal(data, &ev); err != nil || !event.ValidRequestID(ev.ID) {
			return undecodable("executed", err)
		}
		return r.input(ctx, by, ev.ID, lifecycle.Input{Kind: lifecycle.InExecuted, ExecutionID: ev.ExecutionID,
			Succeeded: ev.Succeeded, Error: ev.Error}, nil)
	case subject == event.SubjectResume:
		var ev event.Resume
		if err := json.Unmarshal(data, &ev); err != nil || !event.ValidRequestID(ev.RequestID) {
			return undecodable("resume", err)
		}
		if d := ev.DerivedIdentity; d != nil {
			if err := d.Validate(); err != nil {
				return undecodable("resume", err)
			}
			if d.IsZero() {
				ev.DerivedIdentity = nil
			}
		}
		in := lifecycle.Input{Kind: lifecycle.InResume, Pause: ev.Pause, WebhookID: ev.WebhookID}
		if ev.DerivedIdentity != nil {
			in.Patch = patchName(ev.TokenID)
		}
		return r.input(ctx, by, ev.RequestID, in, ev.DerivedIdentity)
	case subject == event.SubjectRetry:
		var ev event.Retry
		if err := json.Unmarshal(data, &ev); err != nil || !event.ValidRequestID(ev.RequestID) {
			return undecodable("retry", err)
		}
		return r.input(ctx, by, ev.RequestID, lifecycle.Input{Kind: lifecycle.InRetry, FromError: ev.FromError}, nil)
	case subject == event.SubjectPreApproval:
		var ev event.PreApprovalReply
		if err := json.Unmarshal(data, &ev); err != nil || !event.ValidRequestID(ev.RequestID) {
			return undecodable("pre-approval reply", err)
		}
		return r.input(ctx, by, ev.RequestID, lifecycle.Input{Kind: lifecycle.InReply, WebhookID: ev.WebhookID, Run: ev.Run,
			Eligible: ev.Eligible}, nil)
	case subject == event.SubjectReview:
		var ev event.Review
		if err := json.Unmarshal(data, &ev); err != nil || !event.ValidRequestID(ev.RequestID) {
			return undecodable("review", err)
		}
		return r.input(ctx, by, ev.RequestID, lifecycle.Input{Kind: lifecycle.InReview, Approved: ev.Approved, Reason: ev.Reason}, nil)
	case timers.IsFire(subject):
		var f timers.Fire
		if err := json.Unmarshal(data, &f); err != nil || !event.ValidRequestID(f.RequestID) {
			return undecodable("timer", err)
		}
		switch f.Kind {
		case lifecycle.TimerPause:
			return r.input(ctx, by, f.RequestID, lifecycle.Input{Kind: lifecycle.InPauseTimer, Pause: f.Pause}, nil)
		case lifecycle.TimerExecution:
			return r.input(ctx, by, f.RequestID, lifecycle.Input{Kind: lifecycle.InExecutionTimer, Run: f.Run}, nil)
		case lifecycle.TimerApproval:
			return r.input(ctx, by, f.RequestID, lifecycle.Input{Kind: lifecycle.InApprovalTimer, Run: f.Run}, nil)
		}
		return undecodable("timer", fmt.Errorf("unknown kind %q", f.Kind))
	}
	return consume.Permanent(fmt.Errorf("runner: no handler for subject %s", subject))
}

// undecodable is the permanent error of a control message that cannot be handled.
func undecodable(what string, err error) error {
	if err == nil {
		err = errors.New("no valid request id")
	}
	return consume.Permanent(fmt.Errorf("undecodable %s event: %w", what, err))
}

// patchName names a resume's derived identity by its token id (a KV-safe hex id from the
// callback; anything else is hashed).
func patchName(tokenID string) string {
	if tokenID != "" && event.ValidKVKey(tokenID) && len(tokenID) <= 64 {
		return "r" + tokenID
	}
	sum := sha256.Sum256([]byte(tokenID))
	return "r" + hex.EncodeToString(sum[:16])
}

// input records an input of request id (lifecycle.ApplyInput) and drives the request on. derived
// is a resume's derived identity, stored as the patch the input names before the input is written.
// by tags the message carrying it.
func (r *Runner) input(ctx context.Context, by origin, id string, in lifecycle.Input, derived *event.Identity) error {
	u := r.newRun(id, by)
	u.adopt(ctx)
	err := u.record(ctx, in, derived)
	var later time.Time
	if err == nil && u.rec != nil {
		later, err = u.drive(ctx)
	}
	return u.finish(ctx, err, later)
}

// record applies the input to the record and writes it, reading the record again on a conflict. An
// input about an unknown request is dropped (u.rec stays nil).
func (u *run) record(ctx context.Context, in lifecycle.Input, derived *event.Identity) (err error) {
	// A patch this input names and the record does not is removed: stored by this run for an input
	// that lost its write, or by an earlier delivery of the message that crashed before writing.
	// After an error it is kept (the write may have gone through): the message comes back.
	patchStored := false
	defer func() {
		if in.Patch != "" && err == nil && (u.rec == nil || !u.patchRecorded(in.Patch)) {
			if derr := u.r.d.Identities.DeletePatch(context.WithoutCancel(ctx), u.id, in.Patch); derr != nil {
				u.warn().Err(derr).Msg("delete unused identity patch")
			}
		}
	}()
	for {
		if err := u.load(ctx); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				u.info().Str("input", string(in.Kind)).Msg("input for an unknown request: dropped")
				return nil
			}
			return err
		}
		u.tick()
		if in.Kind == lifecycle.InRetry && u.rec.PlanMissing() && u.rec.Status == event.StatusError {
			p, err := u.r.d.Plans.Get(ctx, u.rec.PolicyKey)
			switch {
			case errors.Is(err, plans.ErrNotFound):
				in.Plan = nil
			case err != nil:
				return err
			default:
				in.Plan = &p
			}
		}
		res := lifecycle.ApplyInput(u.rec, in, u.env)
		u.r.m.rows.WithLabelValues("inputs", res.Row).Inc()
		u.keep = res.Keep
		if !res.Changed {
			return nil
		}
		u.dirty = true
		if derived != nil && !patchStored {
			if err := u.r.d.Identities.PutPatch(ctx, u.id, in.Patch, *derived); err != nil {
				return err
			}
			patchStored = true
		}
		ok, err := u.write(ctx)
		if err != nil || ok {
			return err
		}
	}
}

// patchRecorded reports whether the record names the patch (queued or held by an early resume).
func (u *run) patchRecorded(name string) bool {
	for _, p := range u.rec.IdentityPatches {
		if p == name {
			return true
		}
	}
	return u.rec.EarlyResume != nil && u.rec.EarlyResume.Patch == name
}

// submitted takes a privacy.request.submitted payload: a new id creates the request (its record
// and identity written at once), a known one is driven on, and a bad event is reported.
func (r *Runner) submitted(ctx context.Context, by origin, data []byte) error {
	var sub event.Submitted
	if err := json.Unmarshal(data, &sub); err != nil {
		reason := "payload is not a valid submitted event: " + jsonProblem(err)
		var probe struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(data, &probe) == nil && event.ValidRequestID(probe.ID) {
			return r.invalid(ctx, by, probe.ID, reason, data)
		}
		return r.reject(ctx, data, reason)
	}
	if err := sub.Validate(); err != nil {
		if event.ValidRequestID(sub.ID) {
			return r.invalid(ctx, by, sub.ID, err.Error(), data)
		}
		return r.reject(ctx, data, err.Error())
	}
	u := r.newRun(sub.ID, by)
	u.adopt(ctx)
	if u.slot != nil || u.host != "" {
		// Handled again after it was parked (for a call slot or a host's share): the record and the
		// identity are written.
		later, err := u.drive(ctx)
		return u.finish(ctx, err, later)
	}
	u.tick()
	var planp *event.Plan
	switch plan, err := r.d.Plans.Get(ctx, sub.PolicyKey); {
	case errors.Is(err, plans.ErrNotFound):
	case err != nil:
		return err
	default:
		planp = &plan
	}
	u.rec, u.rev, u.dirty = lifecycle.NewRecord(sub, planp, u.env), 0, true
	u.rec.Trace = tracing.Traceparent(ctx) // the request's trace: its later runs join it
	u.ident = &sub.Identity
	u.lookahead(ctx)

	// The record and the identity are written at once. A crash between the two leaves a record
	// whose identity is missing; only a submission can drive a request before its first call, and
	// its redelivery stores the identity it carries (Create keeps one that is there). A request in
	// the pre-approval stage is the exception: an operator may approve it as soon as its record
	// exists (and its approval timer may fire), so its identity is stored before its record, and no
	// one finds a record whose identity is missing (the schedule explorer found both).
	var (
		created   bool
		identErr  error
		ok        bool
		recordErr error
	)
	createIdentity := func() { _, created, identErr = r.d.Identities.Create(ctx, sub.ID, sub.Identity) }
	if u.rec.Step == event.StepPreApproval {
		if createIdentity(); identErr == nil {
			ok, recordErr = u.write(ctx)
		}
	} else {
		wait := r.d.Go(createIdentity)
		ok, recordErr = u.write(ctx)
		wait()
	}
	if recordErr == nil && identErr != nil {
		recordErr = identErr
	}
	if errors.Is(recordErr, store.ErrTooLarge) {
		return consume.Permanent(recordErr)
	}
	if recordErr != nil {
		return u.finish(ctx, recordErr, time.Time{})
	}
	if ok {
		r.m.rows.WithLabelValues("inputs", "new").Inc()
	} else {
		// The id is known (input row I1): the identity is kept where the request may need it
		// (in_processing or in the pre-approval stage: a crash before it was stored; error: a retry
		// needs it), removed if this submission stored it for a request that does not.
		r.m.rows.WithLabelValues("inputs", "I1").Inc()
		if err := u.load(ctx); err != nil && !errors.Is(err, store.ErrNotFound) {
			return u.finish(ctx, err, time.Time{})
		}
		// A finished request's identity is F1's to forget (or keep FINISHED_IDENTITY_RETENTION):
		// the drive below does it.
		if created && (u.rec == nil || !needsIdentity[u.rec.Status] && !u.rec.Finished()) {
			if err := r.d.Identities.Delete(ctx, sub.ID); err != nil {
				return u.finish(ctx, err, time.Time{})
			}
		}
		if u.rec == nil {
			return u.finish(ctx, nil, time.Time{})
		}
	}
	later, err := u.drive(ctx)
	return u.finish(ctx, err, later)
}

// needsIdentity are the statuses of a known request whose identity a redelivered submission stores
// when it is missing.
var needsIdentity = map[event.Status]bool{
	event.StatusInProcessing: true, event.StatusError: true,
	event.StatusAwaitingPreApproval: true, event.StatusPreApprovalNotEligible: true,
}

// invalid handles a submitted event with a valid id that breaks the contract. A request of that
// id that exists is driven on (a bad copy never fails it); otherwise the event is reported on
// privacy.request.status.error, and no record is written, so a corrected submission can still
// take the id (D25).
func (r *Runner) invalid(ctx context.Context, by origin, id, reason string, data []byte) error {
	r.log.Warn().Str("request_id", id).Str("reason", reason).Msg("invalid submitted event")
	u := r.newRun(id, by)
	switch err := u.load(ctx); {
	case err == nil:
		later, err := u.drive(ctx)
		return u.finish(ctx, err, later)
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	sum := sha256.Sum256(data)
	ev := event.StatusChanged{ID: id, TimelineEntry: event.TimelineEntry{Status: event.StatusError, At: r.now(),
		Step: event.StepPreWebhooks, Error: event.Reason(reason)}}
	return r.d.Publisher.Invalid(ctx, ev, "invalid:"+id+":"+hex.EncodeToString(sum[:8]))
}

// reject publishes privacy.request.rejected for an event without a usable id.
func (r *Runner) reject(ctx context.Context, data []byte, reason string) error {
	r.log.Warn().Str("reason", reason).Int("bytes", len(data)).Msg("submitted event rejected")
	const maxPayload = 64 << 10
	if len(data) > maxPayload {
		data = data[:maxPayload]
	}
	return r.d.Publisher.Rejected(ctx, event.Rejected{Reason: event.Reason(reason), Payload: string(data), At: r.now()})
}

// jsonProblem says why a payload did not decode, naming the field, never a value.
func jsonProblem(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	}
	var ident *event.IdentityError
	if errors.As(err, &ident) {
		return ident.Error()
	}
	return "not JSON"
}
