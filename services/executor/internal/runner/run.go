package runner

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

// run is the handling of one message for one request: it owns the claims it takes, the call slot
// and host share it holds, and the status events it publishes.
type run struct {
	r   *Runner
	id  string
	env lifecycle.Env
	// by is the message this run handles; its status events carry its tag.
	by origin
	// rec is the record as this run last read or wrote it, rev its revision (0: not created yet);
	// nil when unknown (after a conflict). dirty reports changes not written yet, effects what
	// must happen before they are.
	rec     *lifecycle.Record
	rev     uint64
	dirty   bool
	effects []lifecycle.Effect
	// ident is the request's identity as this run knows it; nil: not loaded (it is dropped
	// whenever the record is read again, as another worker may have changed it).
	ident *event.Identity
	// merged are identity patches merged by this run, deleted once a write records the merge.
	merged []string
	// sent holds the status events this run published, by sequence number.
	sent map[int]*published
	// keep is when the message must come back, by its input (zero: nothing to keep).
	keep time.Time
	// slot is a call slot held for the call this run claimed ahead; host the host whose share
	// the run holds.
	slot    *webhook.Slot
	slotURL string
	host    string
}

func (r *Runner) newRun(id string, by origin) *run {
	env := lifecycle.Env{Owner: token.NewID(), Cfg: r.cfg.Lifecycle}
	if r.d.Health != nil {
		env.Health = r.d.Health
	}
	return &run{r: r, id: id, by: by, env: env, sent: map[int]*published{}}
}

// tick reads the clock into the run's environment.
func (u *run) tick() time.Time {
	u.env.Now = u.r.now()
	return u.env.Now
}

func (u *run) info() *zerolog.Event { return u.r.log.Info().Str("request_id", u.id) }
func (u *run) warn() *zerolog.Event { return u.r.log.Warn().Str("request_id", u.id) }

// load reads the record unless the run knows it, and publishes the status events of its outbox
// that this run has not (see flush).
func (u *run) load(ctx context.Context) error {
	if u.rec != nil {
		return nil
	}
	rec, rev, err := u.r.d.Records.Load(ctx, u.id)
	if err != nil {
		return err
	}
	u.rec, u.rev, u.dirty, u.effects, u.ident = rec, rev, false, nil, nil
	u.flush(ctx)
	return nil
}

// forget drops what the run knows of the record after a conflict: it is read again.
func (u *run) forget() {
	u.rec, u.rev, u.dirty, u.effects, u.merged = nil, 0, false, nil, nil
	u.ident = nil
	u.releaseSlot()
}

// identity returns the request's identity, loading it once.
func (u *run) identity(ctx context.Context) (event.Identity, error) {
	if u.ident != nil {
		return *u.ident, nil
	}
	ident, err := u.r.d.Identities.Get(ctx, u.id)
	if err != nil {
		return event.Identity{}, err
	}
	u.ident = &ident
	return ident, nil
}

// write performs the pending effects, then writes the record (creates it when new). It reports
// false on a conflict, after which the record is unknown and is read again.
func (u *run) write(ctx context.Context) (bool, error) {
	if !u.dirty {
		return true, nil
	}
	if err := u.perform(ctx); err != nil {
		return false, err
	}
	u.dropStored()
	for i := range u.rec.Outbox {
		if u.rec.Outbox[i].By == "" {
			u.rec.Outbox[i].By = u.by.tag
		}
	}
	var (
		rev uint64
		err error
	)
	if u.rev == 0 {
		rev, err = u.r.d.Records.Create(ctx, u.rec)
	} else {
		rev, err = u.r.d.Records.Update(ctx, u.rec, u.rev)
	}
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrExists):
		u.forget()
		return false, nil
	case errors.Is(err, store.ErrTooLarge):
		return u.tooLarge(ctx, err)
	case err != nil:
		return false, err
	}
	u.rev, u.dirty = rev, false
	u.afterWrite(ctx)
	if h := u.r.d.Hooks.AfterWrite; h != nil {
		if err := h(u.id); err != nil {
			return false, consume.ErrAbandon
		}
	}
	return true, nil
}

// afterWrite counts the new status events, publishes them and deletes the merged patches.
func (u *run) afterWrite(ctx context.Context) {
	for _, p := range u.rec.Outbox {
		if _, ok := u.sent[p.Seq]; !ok {
			u.r.m.transitions.WithLabelValues(string(p.Event.Status)).Inc()
			u.info().Str("status", string(p.Event.Status)).Str("step", string(p.Event.Step)).
				Str("webhook_key", p.Event.WebhookKey).Str("error", p.Event.Error).Msg("request status")
			statusEvent(ctx, p.Event)
		}
	}
	u.flush(ctx)
	for _, name := range u.merged {
		if err := u.r.d.Identities.DeletePatch(ctx, u.id, name); err != nil {
			u.warn().Err(err).Msg("delete merged identity patch")
		}
	}
	u.merged = nil
}

// tooLarge handles a record over the NATS maximum payload (the bounds on inputs and reasons keep
// records far from it, so this is a defect somewhere): the request is set to error with its
// attempt history cut to the last attempt of each webhook, which is written once; if even that is
// too large the message is terminated, never redelivered forever.
func (u *run) tooLarge(ctx context.Context, cause error) (bool, error) {
	u.r.log.Error().Err(cause).Str("request_id", u.id).Msg("request record too large")
	if u.rec.Status == event.StatusError && u.rec.Error != nil && u.rec.Error.Message == msgTooLarge {
		return false, consume.Permanent(fmt.Errorf("runner: record of %s: %w", u.id, cause))
	}
	for i := range u.rec.Webhooks {
		if a := u.rec.Webhooks[i].Attempts; len(a) > 1 {
			u.rec.Webhooks[i].Attempts = a[len(a)-1:]
		}
	}
	u.tick()
	lifecycle.SetError(u.rec, u.env, "", msgTooLarge)
	u.effects = nil
	return u.write(ctx)
}

const msgTooLarge = "the request record exceeds the NATS maximum payload"

// perform does the effects asked for by the changes about to be written.
func (u *run) perform(ctx context.Context) error {
	for _, fx := range u.effects {
		if t := fx.Timer; t != nil {
			if err := u.r.d.Timers.Schedule(ctx, u.id, *t); err != nil {
				return err
			}
		}
		if fx.Execute == 0 {
			continue
		}
		ident, err := u.identity(ctx)
		if errors.Is(err, store.ErrNotFound) {
			lifecycle.SetError(u.rec, u.env, "", lifecycle.MsgIdentityExpired)
			break
		}
		if err != nil {
			return err
		}
		ex := event.Execute{ID: u.id, ExecutionID: event.ExecutionID(u.id, fx.Execute), PolicyKey: u.rec.PolicyKey, Identity: ident}
		if err := u.r.d.Publisher.Execute(ctx, ex); err != nil {
			return err
		}
	}
	u.effects = nil
	return nil
}

// flush publishes the outbox events this run has not published and that may not be stored yet:
// the ones its message wrote (a crash between a write and its publishes is healed by the
// redelivery of the message that wrote them: it is acknowledged only once they are stored), and the
// recent ones (their writer may still be at it; Nats-Msg-Id de-duplicates them within the stream's
// duplicate window). An older event that another message wrote was stored before that message was
// acknowledged, or will be by its redelivery; publishing it again would make a duplicate once the
// window is over.
func (u *run) flush(ctx context.Context) {
	for _, p := range u.rec.Outbox {
		if _, ok := u.sent[p.Seq]; ok {
			continue
		}
		if p.By != "" && p.By != u.by.tag && u.r.now().Sub(p.Event.At) > republishWindow {
			continue
		}
		var ack Ack
		var err error
		if h := u.r.d.Hooks.BeforePublish; h != nil {
			err = h(p.Event)
		}
		if err == nil {
			ack, err = u.r.d.Publisher.Status(ctx, p.Event)
		}
		if err != nil {
			// Not published: the record keeps it in its outbox, and finish makes the message come
			// back so that it is published then (D8).
			u.warn().Err(err).Int("seq", p.Seq).Msg("publish status event")
			u.sent[p.Seq] = &published{done: true, err: err}
			continue
		}
		u.sent[p.Seq] = &published{ack: ack}
	}
}

// dropStored removes from the outbox the events the stream confirmed, so that the next write
// clears them without waiting for anything.
func (u *run) dropStored() {
	if len(u.rec.Outbox) == 0 {
		return
	}
	kept := u.rec.Outbox[:0]
	for _, p := range u.rec.Outbox {
		if a, ok := u.sent[p.Seq]; ok && a.stored() {
			continue
		}
		kept = append(kept, p)
	}
	clear(u.rec.Outbox[len(kept):])
	u.rec.Outbox = kept
}

// republishWindow is how old an event another message wrote may be and still be published again:
// within the stream's duplicate window (2 minutes), with a margin for clocks.
const republishWindow = 90 * time.Second

// published is a status event this run published: its Ack's outcome, once known (an Ack delivers
// it once).
type published struct {
	ack  Ack
	done bool
	err  error
}

// stored reports, without waiting, whether the stream stored the event.
func (p *published) stored() bool {
	p.await(closedChan)
	return p.done && p.err == nil
}

// wait waits until the stream stored the event or refused it.
func (p *published) wait(ctx context.Context) error {
	if !p.await(ctx.Done()) {
		return ctx.Err()
	}
	return p.err
}

// await takes the Ack's outcome unless it has it, waiting until it arrives or until giveUp is
// closed (a closed channel: not at all); it reports whether the outcome is known.
func (p *published) await(giveUp <-chan struct{}) bool {
	if p.done {
		return true
	}
	// An outcome that has arrived is taken before giving up is considered (a select picks at
	// random among ready cases).
	select {
	case <-p.ack.Ok():
		p.done = true
	case err := <-p.ack.Err():
		p.done, p.err = true, err
	default:
		select {
		case <-p.ack.Ok():
			p.done = true
		case err := <-p.ack.Err():
			p.done, p.err = true, err
		case <-giveUp:
		}
	}
	return p.done
}

// finish waits for this run's status events to be stored, then turns the run's end into the
// message's fate: err as it is, or nil (acknowledge), or a delay after which the message must come
// back (a Later decision, or the input's keep). Once the events are stored, an outbox they are
// still in is cleared in the background: the message is acknowledged already, and a reader of the
// record would only publish them again under the same Nats-Msg-Id.
func (u *run) finish(ctx context.Context, err error, later time.Time) error {
	defer u.release()
	if err != nil {
		return err
	}
	if werr := u.waitStored(ctx); werr != nil {
		return consume.Retry(time.Second, werr)
	}
	if u.rec != nil && u.rev != 0 && len(u.rec.Outbox) > 0 {
		u.r.clearOutbox(u.rec, u.rev, u.sent)
	}
	if !u.keep.IsZero() && (later.IsZero() || u.keep.Before(later)) {
		later = u.keep
	}
	if later.IsZero() {
		return nil
	}
	return consume.Retry(max(later.Sub(u.r.now()), 0)+laterSlack, errLater)
}

// laterSlack lets a message come back just after what it waits for is due, not just before.
const laterSlack = 50 * time.Millisecond

var errLater = errors.New("runner: the request has something to do later")

// waitStored waits (up to 10 s) until the stream stored every status event this run published.
func (u *run) waitStored(ctx context.Context) error {
	if len(u.sent) == 0 {
		return nil
	}
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for seq, a := range u.sent {
		if err := a.wait(wait); err != nil {
			return fmt.Errorf("runner: publish status event %d of %s: %w", seq, u.id, err)
		}
	}
	return nil
}

// release gives back the slot and the host share the run holds.
func (u *run) release() {
	u.releaseSlot()
	if u.host != "" {
		u.r.shares.leave(u.host)
		u.host = ""
	}
}

func (u *run) releaseSlot() {
	if u.slot != nil {
		u.slot.Release()
		u.slot, u.slotURL = nil, ""
	}
}

// enterHost takes a share of host for the run (giving back another host's).
func (u *run) enterHost(host string) bool {
	if u.host == host {
		return true
	}
	if u.host != "" {
		u.r.shares.leave(u.host)
		u.host = ""
	}
	if !u.r.shares.enter(host) {
		return false
	}
	u.host = host
	return true
}

// clearOutbox removes the confirmed events from the outbox of a record a finished run wrote last,
// in the background, over the revision it wrote: a conflict means someone wrote since and carries
// the outbox on.
func (r *Runner) clearOutbox(rec *lifecycle.Record, rev uint64, sent map[int]*published) {
	kept := rec.Outbox[:0]
	for _, p := range rec.Outbox {
		if a, ok := sent[p.Seq]; ok && a.stored() {
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == len(rec.Outbox) {
		return
	}
	rec.Outbox = kept
	select {
	case r.clearing <- struct{}{}:
	default:
		return // enough clears under way; the next reader publishes them again, de-duplicated
	}
	_ = r.d.Go(func() {
		defer func() { <-r.clearing }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := r.d.Records.Update(ctx, rec, rev); err != nil && !errors.Is(err, store.ErrConflict) {
			r.log.Debug().Err(err).Str("request_id", rec.ID).Msg("clear outbox")
		}
	})
}

// jitter returns a random duration in [0, n).
func jitter(n int64) int64 { return rand.Int64N(n) }
