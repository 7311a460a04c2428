package policy

import (
	"slices"

	"github.com/policyhooks/policyhooks/shared/token"
)

// Replace returns the new list for items: the array position is the order, the id of a key
// already on the list is kept, a new key gets a new id. Two items with the same key or name are
// ErrDuplicate.
func Replace(existing []Webhook, items []WebhookInput) ([]Webhook, error) {
	ids := map[string]string{}
	for _, w := range existing {
		ids[w.Key] = w.ID
	}
	keys, names := map[string]bool{}, map[string]bool{}
	out := make([]Webhook, 0, len(items))
	for _, in := range items {
		if keys[in.Key] || names[in.Name] {
			return nil, ErrDuplicate
		}
		keys[in.Key], names[in.Name] = true, true
		id, ok := ids[in.Key]
		if !ok {
			id = token.NewID()
		}
		out = append(out, Webhook{ID: id, Key: in.Key, Name: in.Name, Direction: in.Direction, ConnectionKey: in.ConnectionKey})
	}
	return out, nil
}

// Patch applies ch to the webhook key of ws and returns the new list, the webhook's new index and
// whether its order changed. A new order takes the webhook out and inserts it at that index; out
// of range is an *OrderError. A name already used by another webhook is ErrDuplicate. ws is not
// modified.
func Patch(ws []Webhook, kind Kind, policyKey, key string, ch Change) ([]Webhook, int, bool, error) {
	i := slices.IndexFunc(ws, func(w Webhook) bool { return w.Key == key })
	if i < 0 {
		return nil, 0, false, &WebhookNotFoundError{Kind: kind, Key: key, Policy: policyKey}
	}
	if ch.Order != nil && (*ch.Order < 0 || *ch.Order >= len(ws)) {
		return nil, 0, false, &OrderError{Kind: kind, Order: *ch.Order, Count: len(ws)}
	}
	w := ws[i]
	if ch.Name != nil {
		for j, o := range ws {
			if j != i && o.Name == *ch.Name {
				return nil, 0, false, ErrDuplicate
			}
		}
		w.Name = *ch.Name
	}
	if ch.Direction != nil {
		w.Direction = *ch.Direction
	}
	if ch.ConnectionKey != nil {
		w.ConnectionKey = *ch.ConnectionKey
	}
	out := slices.Clone(ws)
	out[i] = w
	if ch.Order == nil || *ch.Order == i {
		return out, i, false, nil
	}
	out = slices.Delete(out, i, i+1)
	out = slices.Insert(out, *ch.Order, w)
	return out, *ch.Order, true, nil
}

// Remove returns ws without the webhook key and whether any other webhook moved up.
func Remove(ws []Webhook, kind Kind, policyKey, key string) ([]Webhook, bool, error) {
	i := slices.IndexFunc(ws, func(w Webhook) bool { return w.Key == key })
	if i < 0 {
		return nil, false, &WebhookNotFoundError{Kind: kind, Key: key, Policy: policyKey}
	}
	return slices.Delete(slices.Clone(ws), i, i+1), i < len(ws)-1, nil
}

// Orders lists every webhook's key and order.
func Orders(ws []Webhook) []OrderEntry {
	out := make([]OrderEntry, len(ws))
	for i, w := range ws {
		out[i] = OrderEntry{Key: w.Key, Order: i}
	}
	return out
}
