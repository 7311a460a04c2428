package runner

import (
	"context"
	"errors"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/callbackapi"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
)

// hostBusyDelay is about when a request whose webhook host holds its share of the slots comes back
// the first time; it doubles with each delivery of its message, up to hostBusyMaxDelay, so that a
// backlog for a dead host costs little while it lasts.
const (
	hostBusyDelay    = 50 * time.Millisecond
	hostBusyMaxDelay = 30 * time.Second
)

// busyDelay is when the run's message comes back after its host was busy.
func (u *run) busyDelay() time.Duration {
	d := hostBusyDelay << min(max(u.by.deliveries, 1)-1, 10)
	d = min(d, hostBusyMaxDelay)
	return d/2 + time.Duration(u.r.d.Jitter(int64(d)))
}

// answerWriteTimeout bounds the write of an answer after the handler's context ended (a call cut
// off by a stopping executor is still recorded, so that nobody waits out its claim).
const answerWriteTimeout = 5 * time.Second

// drive moves the request on from its record until it waits (lifecycle.Decide), writing every
// change by compare-and-set; a conflict reads the record again and decides anew. It returns when
// the message must come back (zero: never, it may be acknowledged), or the error that stopped it.
func (u *run) drive(ctx context.Context) (time.Time, error) {
	for {
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
		if err := u.load(ctx); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return time.Time{}, nil
			}
			return time.Time{}, err
		}
		u.tick()
		d := u.settle(u.rev != 0)
		switch d.Action {
		case lifecycle.Wait, lifecycle.Later, lifecycle.StartExecution:
			// StartExecution comes back unapplied only for a record not created yet: create it,
			// then start.
			ok, err := u.write(ctx)
			switch {
			case err != nil:
				return time.Time{}, err
			case !ok || d.Action == lifecycle.StartExecution:
				continue
			case d.Action == lifecycle.Later:
				return d.At, nil
			}
			return time.Time{}, nil
		case lifecycle.Hold:
			if lifecycle.HoldCall(u.rec, d, u.env) {
				u.dirty = true
			}
			if ok, err := u.write(ctx); err != nil || !ok {
				if err != nil {
					return time.Time{}, err
				}
				continue
			}
			return d.At, nil
		case lifecycle.MergeIdentity:
			if err := u.mergeIdentity(ctx); err != nil {
				return time.Time{}, err
			}
		case lifecycle.ForgetIdentity:
			// Only once the record says the request finished: until then a crash may bring back
			// a call that needs the identity.
			if ok, err := u.write(ctx); err != nil || !ok {
				if err != nil {
					return time.Time{}, err
				}
				continue
			}
			if err := u.r.d.Identities.Forget(ctx, u.id, u.rec.IdentityKeptUntil(u.env.Cfg)); err != nil {
				return time.Time{}, err
			}
			if u.rec.ErrorCount > 0 {
				// Retried to the end: its entry in errored_requests is stale.
				if err := u.r.d.Errors.Delete(ctx, u.id); err != nil {
					return time.Time{}, err
				}
			}
			u.ident, u.env.Forgot = nil, true
		case lifecycle.IndexError:
			if ok, err := u.write(ctx); err != nil || !ok {
				if err != nil {
					return time.Time{}, err
				}
				continue
			}
			if err := u.r.d.Errors.Put(ctx, u.rec.Errored()); err != nil {
				return time.Time{}, err
			}
			u.env.Indexed = true
		case lifecycle.Call:
			later, stop, err := u.call(ctx)
			if err != nil || stop {
				return later, err
			}
		}
	}
}

// settle applies the pure decisions to the record (lifecycle.Settle) and returns the next one.
func (u *run) settle(startExecution bool) lifecycle.Decision {
	d, fx, changed := lifecycle.Settle(u.rec, u.env, startExecution)
	u.effects = append(u.effects, fx...)
	u.dirty = u.dirty || changed
	u.r.m.rows.WithLabelValues("decisions", d.Row).Inc()
	return d
}

// mergeIdentity merges the record's identity patches into the identity, in order.
func (u *run) mergeIdentity(ctx context.Context) error {
	ident, err := u.identity(ctx)
	if errors.Is(err, store.ErrNotFound) {
		lifecycle.SetError(u.rec, u.env, "", lifecycle.MsgIdentityExpired)
		u.dirty = true
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range u.rec.IdentityPatches {
		p, err := u.r.d.Identities.Patch(ctx, u.id, name)
		if errors.Is(err, store.ErrNotFound) {
			u.warn().Str("patch", name).Msg("derived identity to merge is gone (expired): skipped")
			continue
		}
		if err != nil {
			return err
		}
		ident = ident.Merge(p)
	}
	exp, err := u.r.d.Identities.Put(ctx, u.id, ident)
	if err != nil {
		return err
	}
	u.ident = &ident
	u.merged = append(u.merged, u.rec.IdentityPatches...)
	lifecycle.IdentityMerged(u.rec, exp, u.env)
	u.dirty = true
	return nil
}

// latestSecrets returns w with its connection's secrets as last published (SPEC §5.1): those of a
// webhook of the same connection in the policy's current plan, as this replica last saw it, when
// there is one; the snapshot's otherwise (the policy was deleted, or no longer uses the
// connection). So a rotated credential, signing key or client certificate reaches the requests
// already running, while the webhooks, their order and directions stay the snapshot's.
func (u *run) latestSecrets(w event.PlanWebhook) event.PlanWebhook {
	live, ok := u.r.d.Plans.Latest(u.rec.PolicyKey)
	if !ok {
		return w
	}
	lists := [][]event.PlanWebhook{live.Pre, live.Post}
	if live.PreApproval != nil {
		lists = append(lists, live.PreApproval.Webhooks)
	}
	for _, list := range lists {
		for _, lw := range list {
			if lw.ConnectionKey == w.ConnectionKey && lw.Secrets != "" {
				w.Secrets = lw.Secrets
				return w
			}
		}
	}
	return w
}

// call makes the current webhook's call: it takes the host's share and a call slot, writes the
// claim (unless the run claimed it ahead), calls and records the answer. stop reports that the run
// ends here, the message coming back at later.
func (u *run) call(ctx context.Context) (later time.Time, stop bool, err error) {
	rec := u.rec
	w, _, _ := rec.Current()
	mine := rec.Claim != nil && rec.Claim.Owner == u.env.Owner
	secrets, msg := u.r.d.Secrets.Open(u.latestSecrets(w))
	var ident event.Identity
	if msg == "" {
		ident, err = u.identity(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
			msg = lifecycle.MsgIdentityExpired
		case err != nil:
			return time.Time{}, true, err
		}
	}
	if msg != "" {
		u.answer(lifecycle.Answer{Verdict: lifecycle.NotMade, Reason: msg})
		return time.Time{}, false, nil
	}
	// Handing the call back: a stopping executor makes no new call, a host that holds its share
	// waits, and so does a call that got no connection to its host in time. The claim taken ahead
	// for it, if any, is given back so that nobody waits it out.
	handBack := func(after time.Duration) (time.Time, bool, error) {
		if lifecycle.ReleaseClaim(rec, u.env) {
			u.dirty = true
		}
		u.releaseSlot()
		if _, err := u.write(ctx); err != nil {
			return time.Time{}, true, err
		}
		return u.r.now().Add(after), true, nil
	}
	if consume.Stopping(ctx) {
		return handBack(0)
	}
	if host := hostOf(secrets.URL); !u.enterHost(host) {
		// The host holds its share of the slots: wait in its line for one, outside the slot pool,
		// or when the line is full, come back later.
		place := u.r.shares.line(host)
		if place == nil {
			return handBack(u.busyDelay())
		}
		later, stop, err := handBack(0)
		if err != nil {
			if u.r.shares.wait(ctx, closedChan, host, place) { // leave the line
				u.r.shares.leave(host)
			}
			return later, stop, err
		}
		shares, p := u.r.shares, u.parking()
		return time.Time{}, true, consume.ParkFree(func(ctx context.Context) context.Context {
			if shares.wait(ctx, consume.Stop(ctx), host, place) {
				p.host = host
				return context.WithValue(ctx, parkedKey{}, p)
			}
			return ctx
		})
	}
	// A claim taken ahead holds the slot it was taken with; without it (the record was read again)
	// the claim is written afresh, so that it lasts the whole call.
	mine = mine && u.slot != nil && u.slotURL == secrets.URL
	slot, err := u.takeSlot(ctx, secrets.URL)
	if err != nil {
		if lifecycle.ReleaseClaim(rec, u.env) {
			u.dirty = true
		}
		if _, werr := u.write(ctx); werr != nil {
			return time.Time{}, true, werr
		}
		return time.Time{}, true, err
	}
	if err := slot.Err(); err != nil {
		slot.Release()
		if ctx.Err() != nil {
			return time.Time{}, true, ctx.Err()
		}
		return handBack(u.busyDelay())
	}
	if ok, err := u.takeProbe(ctx, w.ConnectionKey); err != nil || !ok {
		slot.Release()
		if err != nil {
			u.warn().Err(err).Str("connection_key", w.ConnectionKey).Msg("circuit breaker probe not taken; looking again later")
		}
		return handBack(max(u.env.Cfg.BreakerRecheck, time.Second))
	}
	if !mine {
		lifecycle.ClaimCall(rec, u.env)
		u.dirty = true
		ok, err := u.write(ctx)
		if err != nil || !ok {
			slot.Release()
			return time.Time{}, err != nil, err
		}
	}
	a, err := u.send(ctx, w, secrets, ident, slot)
	if err != nil {
		return time.Time{}, true, err
	}
	return time.Time{}, false, u.recordAnswer(ctx, a)
}

// takeProbe reports whether the run may call the connection: its breaker is closed as the local
// view shows it, or it is open, its probe due (the lifecycle held the request otherwise), and the
// probe is the run's (breaker.Store.TakeProbe).
func (u *run) takeProbe(ctx context.Context, connectionKey string) (bool, error) {
	h := u.r.d.Health
	if h == nil || !h.Open(connectionKey) {
		return true, nil
	}
	return h.TakeProbe(ctx, connectionKey, u.env.Owner)
}

// takeSlot returns the call slot held for url (taken ahead, or obtained while the message was
// parked), or takes one that is free now. When none is, the message is parked until one is
// (consume.Park): the wait holds a small goroutine, not this handler, and the message is handled
// again with the slot.
func (u *run) takeSlot(ctx context.Context, url string) (*webhook.Slot, error) {
	if u.slot != nil && u.slotURL == url {
		s := u.slot
		u.slot, u.slotURL = nil, ""
		return s, nil
	}
	u.releaseSlot()
	if s := u.r.d.Caller.TryAcquire(url); s != nil {
		return s, nil
	}
	caller, p := u.r.d.Caller, u.parking()
	return nil, consume.Park(func(ctx context.Context) context.Context {
		p.slot, p.url = caller.Acquire(ctx, url), url
		return context.WithValue(ctx, parkedKey{}, p)
	})
}

// parked is what a run hands to the run that handles its message again after it was parked: the
// record as it knew it (a later write checks its revision anyway, so nothing is read again), the
// identity, the owner of its claims, and what the wait obtained: a call slot, or a host's share.
type parked struct {
	owner string
	rec   *lifecycle.Record
	rev   uint64
	ident *event.Identity
	slot  *webhook.Slot
	url   string
	host  string
}

type parkedKey struct{}

// parking returns what the run hands over when it parks its message.
func (u *run) parking() *parked {
	p := &parked{owner: u.env.Owner, ident: u.ident}
	if !u.dirty {
		p.rec, p.rev = u.rec, u.rev
	}
	return p
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// adopt takes over what a run that parked the message handed over (see parked).
func (u *run) adopt(ctx context.Context) {
	p, ok := ctx.Value(parkedKey{}).(*parked)
	if !ok || p.owner == "" {
		return
	}
	u.env.Owner = p.owner
	if p.rec != nil && p.rev != 0 {
		u.rec, u.rev, u.ident = p.rec, p.rev, p.ident
	}
	if p.slot != nil {
		u.slot, u.slotURL = p.slot, p.url
	}
	if p.host != "" {
		u.host = p.host
	}
	*p = parked{} // handed over once
}

// send makes the claimed call in slot and returns its answer for the lifecycle. A derived identity
// in the answer is stored before the answer is recorded: a crash in between repeats the call,
// which is harmless, and never loses the identity.
func (u *run) send(ctx context.Context, w event.PlanWebhook, secrets event.HTTPSSecrets, ident event.Identity,
	slot *webhook.Slot) (lifecycle.Answer, error) {
	rec := u.rec
	c := webhook.Call{
		Slot: slot, ConnectionKey: w.ConnectionKey, Secrets: secrets, WebhookID: rec.CallID(),
		Body: webhook.NewBody(&rec.Request, w.Direction, rec.CallbackType(), ident, u.r.now()),
	}
	var err error
	switch {
	case rec.Pausing():
		c.ReplyTo = u.r.replyTo(callbackapi.ResumePath(u.id))
		c.ReplyToken, err = u.r.d.Seal(&token.ResumeClaims{RequestID: u.id, WebhookID: w.ID, Pause: rec.Pause + 1,
			Scopes: []string{scope.PrivacyRequestResume}}, u.r.cfg.Lifecycle.PauseTimeout)
	case rec.Step == event.StepPreApproval:
		// One token per webhook and run (its jti the call's webhook-id, so that the webhook replies
		// once), valid until the stage's replies are due.
		c.ReplyEligible = u.r.replyTo(callbackapi.PreApproveEligiblePath(u.id))
		c.ReplyNotEligible = u.r.replyTo(callbackapi.PreApproveNotEligiblePath(u.id))
		c.ReplyToken, err = u.r.d.Seal(&token.PreApprovalClaims{Claims: token.Claims{ID: rec.CallID()}, RequestID: u.id,
			WebhookID: w.ID, Run: rec.Run, Scopes: []string{scope.PrivacyRequestReview}}, rec.ApprovalDue.Sub(u.r.now()))
	}
	if err != nil {
		slot.Release()
		return lifecycle.Answer{}, err
	}
	started := u.r.now()
	var res webhook.Result
	outcome := "interrupted"
	callCtx, span := u.startCall(ctx, w, secrets.URL)
	defer func() { endCall(span, res, outcome) }()
	consume.Blocking(ctx, func() { res = u.r.d.Caller.Send(callCtx, c) })
	if ctx.Err() != nil {
		// Cut off by a stopping executor: not an attempt; recorded so that the call is made again
		// at once, with the same webhook-id, by whoever takes the request.
		return lifecycle.Answer{Verdict: lifecycle.Interrupted, At: started}, nil
	}
	if h := u.r.d.Hooks.AfterCall; h != nil {
		if err := h(u.id, w.Key); err != nil {
			return lifecycle.Answer{}, consume.ErrAbandon
		}
	}
	u.r.m.latency.Observe(res.Latency.Seconds())
	direction := w.Direction
	if rec.Step == event.StepPreApproval {
		// A pre-approval webhook replies at its reply-to URLs: its answer's body is not read, and a
		// 3xx/4xx fails the request (lifecycle answer row A10), as it will not reply.
		direction = event.OneWay
	}
	cl := webhook.Classify(direction, res)
	outcome = verdictLabel(cl.Verdict)
	a := lifecycle.Answer{Status: res.Status, Reason: cl.Reason, Halt: cl.Halt, At: started, Latency: res.Latency}
	switch cl.Verdict {
	case webhook.Done:
		a.Verdict = lifecycle.Done
	case webhook.Ignored:
		a.Verdict = lifecycle.Ignored
	case webhook.Retry:
		a.Verdict = lifecycle.Retry
		a.RetryIn = u.r.backoff(rec.Attempts()+1, res.RetryAfter, u.r.d.Jitter)
	default:
		a.Verdict = lifecycle.Refused
	}
	u.r.m.attempts.WithLabelValues(verdictLabel(cl.Verdict)).Inc()
	u.r.m.observeCall(w.ConnectionKey, verdictLabel(cl.Verdict), res.Latency)
	if h := u.r.d.Health; h != nil {
		// The breaker is advice: a write it loses or cannot make leaves the call's answer alone.
		if err := h.Observe(ctx, w.ConnectionKey, u.env.Owner, cl.Verdict == webhook.Retry, cl.Reason); err != nil {
			u.warn().Err(err).Str("connection_key", w.ConnectionKey).Msg("circuit breaker: outcome not recorded")
		}
	}
	if cl.Verdict == webhook.Done && cl.Derived != nil {
		merged := ident.Merge(*cl.Derived)
		exp, err := u.r.d.Identities.Put(ctx, u.id, merged)
		if err != nil {
			return lifecycle.Answer{}, err
		}
		u.ident, a.IdentityExpiresAt = &merged, &exp
	}
	return a, nil
}

// recordAnswer writes the answer of the call this run claimed, together with what follows from it
// without anything from outside (lifecycle.Settle) and the claim of the next call when its host has
// a free slot now. On a conflict the record is read again: the answer is applied again while the
// claim is still this run's, and dropped otherwise (another worker took the call over and records
// its own).
func (u *run) recordAnswer(ctx context.Context, a lifecycle.Answer) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), answerWriteTimeout)
		defer cancel()
	}
	callID := u.rec.CallID()
	for {
		u.answer(a)
		u.lookahead(ctx)
		ok, err := u.writeAnswer(ctx)
		if err != nil || ok {
			return err
		}
		if err := u.load(ctx); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}
		u.tick()
		if c := u.rec.Claim; c == nil || c.Owner != u.env.Owner || c.WebhookID != callID {
			u.info().Str("webhook_id", callID).Msg("answer dropped: the call was taken over")
			return nil
		}
	}
}

// answerWriteRetry bounds how long writeAnswer tries again: a KV bucket or stream whose leader died
// elects another within seconds (issue 11); about the claim's lifetime (WEBHOOK_TIMEOUT + 15 s),
// after which another worker may take the call over anyway.
const answerWriteRetry = 15 * time.Second

// writeAnswer is write, tried again while it fails with a transient NATS error (natsconn.Transient:
// a timeout, no responders, JetStream unavailable, as while a leader is elected), with backoff up
// to answerWriteRetry. The call was made: an answer not written is only found again when the claim
// lapses, and the call is then made again, after the effects this write already performed (an
// execute published before a pre-execution webhook is called again). A write whose ack was lost
// but that was stored comes back as a conflict, which recordAnswer handles.
func (u *run) writeAnswer(ctx context.Context) (bool, error) {
	deadline := time.Now().Add(answerWriteRetry)
	wait := 100 * time.Millisecond
	for n := 1; ; n++ {
		ok, err := u.write(ctx)
		if err == nil || ctx.Err() != nil || !natsconn.Transient(err) || time.Now().Add(wait).After(deadline) {
			return ok, err
		}
		u.warn().Err(err).Int("attempt", n).Msg("write of a call's answer failed, trying again")
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// answer applies an answer to the record.
func (u *run) answer(a lifecycle.Answer) {
	row, fx := lifecycle.ApplyAnswer(u.rec, a, u.env)
	u.r.m.rows.WithLabelValues("answers", row).Inc()
	u.effects = append(u.effects, fx...)
	u.dirty = true
}

// lookahead applies what follows an answer without outside input and, when that is the next call
// and its host's share and a call slot are free now, claims it in the same write (the call is then
// made right after the write). It stops before starting the execution: execute is published only
// once a write has recorded the answer of the last pre-execution webhook, so that a crash between
// the publish and the write can repeat the publish (the same execution id) but never that webhook's
// call after the data layer was reached (found by the schedule explorer's stage-order check).
func (u *run) lookahead(ctx context.Context) {
	d := u.settle(false)
	if d.Action != lifecycle.Call || u.rec.Claim != nil || u.ident == nil || consume.Stopping(ctx) {
		return
	}
	w, _, _ := u.rec.Current()
	secrets, msg := u.r.d.Secrets.Open(u.latestSecrets(w))
	if msg != "" || !u.enterHost(hostOf(secrets.URL)) {
		return
	}
	if u.slot == nil || u.slotURL != secrets.URL {
		slot := u.r.d.Caller.TryAcquire(secrets.URL)
		if slot == nil {
			return
		}
		u.releaseSlot()
		u.slot, u.slotURL = slot, secrets.URL
	}
	lifecycle.ClaimCall(u.rec, u.env)
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
