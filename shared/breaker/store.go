package breaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/rs/zerolog"
)

// maxTries bounds the compare-and-set attempts of one input: the breaker is shared by every
// replica calling the connection, so a write may lose to another; past the bound the input is
// dropped (a failure not counted, or counted by the next call), and the caller is told.
const maxTries = 8

// DefaultAnnounceAfter is how old an opening or closing not yet announced must be before any
// Store's watch announces it (Config.AnnounceAfter): its writer announces it at once unless it
// crashed or lost NATS in between.
const DefaultAnnounceAfter = 5 * time.Second

func (s *Store) announceAfter() time.Duration {
	if s.cfg.AnnounceAfter > 0 {
		return s.cfg.AnnounceAfter
	}
	return DefaultAnnounceAfter
}

// ErrContended reports an input dropped after maxTries lost compare-and-sets.
var ErrContended = errors.New("breaker: too many concurrent writes")

// Store keeps the breakers in connection_health and announces their openings and closings on
// privacy.connection.>. Watch keeps a local view for Held, so that deciding whether a call waits
// costs no round trip.
type Store struct {
	kv  jetstream.KeyValue
	js  jetstream.JetStream
	cfg Config
	log zerolog.Logger
	now func() time.Time

	// view is the local view of the bucket (natsconn.Follow keeps it).
	view *natsconn.Map[event.ConnectionHealth]
	// mu guards probes: connection key -> the owner of the probe this store gave out.
	mu     sync.Mutex
	probes map[string]string
}

// NewStore returns the breakers of bucket kv, announced through js.
func NewStore(kv jetstream.KeyValue, js jetstream.JetStream, cfg Config, log zerolog.Logger) *Store {
	return &Store{kv: kv, js: js, cfg: cfg, log: log, now: time.Now, view: natsconn.NewMap[event.ConnectionHealth](log),
		probes: map[string]string{}}
}

// Config returns the store's settings.
func (s *Store) Config() Config { return s.cfg }

// Watch keeps the local view until ctx ends (natsconn.Follow: read whole at start, resumed after
// a short loss of NATS, read whole again after a long one), and announces the openings and
// closings whose writer did not (it stopped in between).
func (s *Store) Watch(ctx context.Context, conn natsconn.Conn) {
	go func() {
		tick := time.NewTicker(s.announceAfter())
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				s.announcePending(ctx)
			}
		}
	}()
	natsconn.Follow(ctx, s.kv, conn, s.view, s.log)
}

// announcePending announces the openings and closings of the view that are not yet announced
// and older than announceAfter.
func (s *Store) announcePending(ctx context.Context) {
	var keys []string
	s.view.Each(func(_ string, h event.ConnectionHealth) {
		if h.Unannounced() && s.now().Sub(h.Since) > s.announceAfter() {
			keys = append(keys, h.ConnectionKey)
		}
	})
	for _, k := range keys {
		if h, rev, err := s.Get(ctx, k); err == nil && h.Unannounced() {
			if err := s.announce(ctx, h, rev); err != nil {
				s.log.Warn().Err(err).Str("connection_key", k).Msg("breaker: announce failed; the next pass tries again")
			}
		}
	}
}

// Loaded reports whether the view holds the bucket's content.
func (s *Store) Loaded() bool { return s.view.Loaded() }

// Held reports, from the local view, whether a call to connection key waits at now and until
// when (see Held); never while breakers are off.
func (s *Store) Held(key string, now time.Time) (until time.Time, probing, held bool) {
	if !s.cfg.On() {
		return time.Time{}, false, false
	}
	h, ok := s.view.Get(event.KVKey(key))
	if !ok {
		return time.Time{}, false, false
	}
	return Held(h, now, s.cfg)
}

// Open reports whether the local view shows the breaker of connection key open (never while
// breakers are off).
func (s *Store) Open(key string) bool {
	if !s.cfg.On() {
		return false
	}
	h, _ := s.view.Get(event.KVKey(key))
	return h.State == event.BreakerOpen
}

// OpenCount returns how many breakers the local view shows open.
func (s *Store) OpenCount() int {
	n := 0
	s.view.Each(func(_ string, h event.ConnectionHealth) {
		if h.State == event.BreakerOpen {
			n++
		}
	})
	return n
}

// Observe records the outcome of a call to connection key made by owner. A success that is not
// a probe this store gave out, on a breaker the loaded view shows closed without failures, writes
// nothing, so that healthy connections cost no write; nothing is written while breakers are off.
func (s *Store) Observe(ctx context.Context, key, owner string, failed bool, reason string) error {
	if !s.cfg.On() {
		return nil
	}
	h, ok := s.view.Get(event.KVKey(key))
	s.mu.Lock()
	probe := s.probes[key] == owner
	if probe {
		delete(s.probes, key)
	}
	s.mu.Unlock()
	if !failed && !probe && s.Loaded() && (!ok || h.State != event.BreakerOpen && h.Failures == 0) {
		return nil
	}
	in := Event{Input: Succeeded, Owner: owner, Now: s.now()}
	if failed {
		in.Input, in.Reason = Failed, reason
	}
	_, err := s.update(ctx, key, in)
	return err
}

// TakeProbe asks to make the probe call of connection key for owner; it reports whether owner
// may call (the breaker is closed after all, or the probe is owner's).
func (s *Store) TakeProbe(ctx context.Context, key, owner string) (bool, error) {
	h, err := s.update(ctx, key, Event{Input: TakeProbe, Owner: owner, Now: s.now()})
	if err != nil {
		return false, err
	}
	if h.Probe != nil && h.Probe.Owner == owner {
		s.mu.Lock()
		s.probes[key] = owner
		s.mu.Unlock()
	}
	return MayCall(h, owner), nil
}

// Close closes the breaker of connection key by hand and returns it.
func (s *Store) Close(ctx context.Context, key string) (event.ConnectionHealth, error) {
	return s.update(ctx, key, Event{Input: CloseByHand, Now: s.now()})
}

// Get returns the breaker of connection key and its revision (0 when it has no entry: closed).
func (s *Store) Get(ctx context.Context, key string) (event.ConnectionHealth, uint64, error) {
	zero := event.ConnectionHealth{ConnectionKey: key, State: event.BreakerClosed}
	e, err := s.kv.Get(ctx, event.KVKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return zero, 0, nil
	}
	if err != nil {
		return zero, 0, fmt.Errorf("breaker: read %s: %w", key, err)
	}
	var h event.ConnectionHealth
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return zero, 0, fmt.Errorf("breaker: decode %s: %w", key, err)
	}
	return h, e.Revision(), nil
}

// All returns every breaker with an entry, in connection key order, read from the bucket in one
// pass (a connection whose calls never failed has none: it is closed).
func (s *Store) All(ctx context.Context) ([]event.ConnectionHealth, error) {
	var out []event.ConnectionHealth
	err := natsconn.Each(ctx, s.kv, func(e jetstream.KeyValueEntry) error {
		var h event.ConnectionHealth
		if err := json.Unmarshal(e.Value(), &h); err != nil {
			return fmt.Errorf("breaker: decode %s: %w", e.Key(), err)
		}
		out = append(out, h)
		return nil
	})
	if err != nil {
		return nil, err // a decode error says breaker; Each's own name the bucket
	}
	slices.SortFunc(out, func(a, b event.ConnectionHealth) int { return strings.Compare(a.ConnectionKey, b.ConnectionKey) })
	return out, nil
}

// Delete removes the breaker of connection key (the connection was deleted).
func (s *Store) Delete(ctx context.Context, key string) error {
	err := s.kv.Purge(ctx, event.KVKey(key))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("breaker: delete %s: %w", key, err)
	}
	return nil
}

// update applies in to the breaker of key by compare-and-set and returns the breaker as written
// (or as it was, when in changed nothing). An opening or closing is announced at once; when the
// announcement fails, a Store's watch announces it later.
func (s *Store) update(ctx context.Context, key string, in Event) (event.ConnectionHealth, error) {
	for range maxTries {
		h, rev, err := s.Get(ctx, key)
		if err != nil {
			return h, err
		}
		next, _, changed := Apply(h, in, s.cfg)
		if !changed {
			return h, nil
		}
		b, err := json.Marshal(next)
		if err != nil {
			return h, fmt.Errorf("breaker: encode %s: %w", key, err)
		}
		if rev == 0 {
			rev, err = s.kv.Create(ctx, event.KVKey(key), b)
		} else {
			rev, err = s.kv.Update(ctx, event.KVKey(key), b, rev)
		}
		if natsconn.IsConflict(err) {
			continue
		}
		if err != nil {
			return h, fmt.Errorf("breaker: write %s: %w", key, err)
		}
		if next.Seq != h.Seq {
			if err := s.announce(ctx, next, rev); err != nil {
				s.log.Warn().Err(err).Str("connection_key", key).Msg("breaker: announce failed; a watch announces it later")
			}
		}
		return next, nil
	}
	return event.ConnectionHealth{}, fmt.Errorf("breaker: %s %s: %w", in.Input, key, ErrContended)
}

// announce publishes h's last opening or closing (de-duplicated by its Nats-Msg-Id) and marks it
// announced at revision rev; a lost mark only announces it again.
func (s *Store) announce(ctx context.Context, h event.ConnectionHealth, rev uint64) error {
	ev := h.Changed()
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: ev.Subject(), Data: b, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, ev.MsgID())
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("breaker: publish %s: %w", ev.Subject(), err)
	}
	h.Announced = true
	b, err = json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := s.kv.Update(ctx, event.KVKey(h.ConnectionKey), b, rev); err != nil && !natsconn.IsConflict(err) {
		return fmt.Errorf("breaker: mark %s announced: %w", h.ConnectionKey, err)
	}
	return nil
}
