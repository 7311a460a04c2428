package natsconn

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// KeySubject is the subject a KV bucket stores key under: what a write of the key publishes to when
// it needs message headers the KV API does not set (a per-key TTL on an update).
func KeySubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// Latest returns the live entry of key (nil when there is none) and the revision of the last
// message under it, a delete marker included (0 when the key was never written): the revision a
// compare-and-set write (kv.Update, kv.Delete with LastRevision) of that key must name.
func Latest(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, uint64, error) {
	e, err := kv.Get(ctx, key)
	if err == nil {
		return e, e.Revision(), nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, err
	}
	// Get hides the revision of a delete marker; the history shows it.
	h, err := kv.History(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	last := h[len(h)-1]
	if last.Operation() == jetstream.KeyValuePut {
		return last, last.Revision(), nil
	}
	return nil, last.Revision(), nil
}

// IsConflict reports a compare-and-set write of a KV key that found another revision: Update,
// Create, or Delete/Purge with LastRevision.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Each reads every live entry of kv in one pass of an ordered consumer (deletes left out) and
// calls each on them in key order of their last write; it stops at the first error each returns
// and when ctx ends (ctx's error, wrapped).
func Each(ctx context.Context, kv jetstream.KeyValue, each func(jetstream.KeyValueEntry) error) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read %s: %w", kv.Bucket(), ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				return nil // every entry was delivered
			}
			if err := each(e); err != nil {
				return err
			}
		}
	}
}
