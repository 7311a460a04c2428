package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
)

// Errored keeps errored_requests: one event.Errored per request in error, under event.KVKey of
// its id, for callback's scoped retry (SPEC §7).
type Errored struct {
	kv    jetstream.KeyValue
	count Counter
}

// NewErrored returns the index of requests in error in bucket kv.
func NewErrored(kv jetstream.KeyValue, count Counter) *Errored {
	if count == nil {
		count = func(string) {}
	}
	return &Errored{kv: kv, count: count}
}

// Put indexes e (replacing the entry of an earlier error of the request).
func (s *Errored) Put(ctx context.Context, e event.Errored) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("store: encode errored %s: %w", e.ID, err)
	}
	s.count("kv_put")
	if _, err := s.kv.Put(ctx, event.KVKey(e.ID), b); err != nil {
		return fmt.Errorf("store: index error of %s: %w", e.ID, writeError(err))
	}
	return nil
}

// Delete removes the entry of request id, if any.
func (s *Errored) Delete(ctx context.Context, id string) error {
	return s.purge(ctx, id)
}

// DeleteAt removes the entry of request id if it is still at revision rev (not replaced since by a
// later error of the request); ErrConflict otherwise.
func (s *Errored) DeleteAt(ctx context.Context, id string, rev uint64) error {
	return s.purge(ctx, id, jetstream.LastRevision(rev))
}

// purge removes an entry, leaving a marker that lives a minute.
func (s *Errored) purge(ctx context.Context, id string, opts ...jetstream.KVDeleteOpt) error {
	s.count("kv_purge")
	err := s.kv.Purge(ctx, event.KVKey(id), append(opts, jetstream.PurgeTTL(time.Minute))...)
	switch {
	case err == nil, errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case natsconn.IsConflict(err):
		return fmt.Errorf("store: unindex error of %s: %w", id, ErrConflict)
	}
	return fmt.Errorf("store: unindex error of %s: %w", id, err)
}

// Entry is an entry of errored_requests with its revision.
type Entry struct {
	event.Errored
	Revision uint64
}

// Entries returns every entry, in one pass of an ordered consumer.
func (s *Errored) Entries(ctx context.Context) ([]Entry, error) {
	s.count("kv_watch")
	var out []Entry
	err := natsconn.Each(ctx, s.kv, func(kve jetstream.KeyValueEntry) error {
		e := Entry{Revision: kve.Revision()}
		if err := json.Unmarshal(kve.Value(), &e.Errored); err != nil {
			return fmt.Errorf("decode errored entry %s: %w", kve.Key(), err)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return out, nil
}
