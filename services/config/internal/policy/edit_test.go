package policy

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func list(keys ...string) []Webhook {
	out := make([]Webhook, len(keys))
	for i, k := range keys {
		out[i] = Webhook{ID: "id-" + k, Key: k, Name: "name-" + k}
	}
	return out
}

func keysOf(ws []Webhook) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Key
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestPatch(t *testing.T) {
	tests := []struct {
		name  string
		key   string
		ch    Change
		want  []string
		moved bool
		errIs error
		order *OrderError
	}{
		{name: "move first to last", key: "a", ch: Change{Order: ptr(2)}, want: []string{"b", "c", "a"}, moved: true},
		{name: "move last to first", key: "c", ch: Change{Order: ptr(0)}, want: []string{"c", "a", "b"}, moved: true},
		{name: "move to the same place", key: "b", ch: Change{Order: ptr(1)}, want: []string{"a", "b", "c"}},
		{name: "rename only", key: "b", ch: Change{Name: ptr("new")}, want: []string{"a", "b", "c"}},
		{name: "out of range", key: "a", ch: Change{Order: ptr(3), Name: ptr("x")}, errIs: ErrBadOrder,
			order: &OrderError{Kind: Pre, Order: 3, Count: 3}},
		{name: "duplicate name", key: "a", ch: Change{Name: ptr("name-b")}, errIs: ErrDuplicate},
		{name: "unknown key", key: "z", ch: Change{}, errIs: ErrWebhookNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := list("a", "b", "c")
			got, _, moved, err := Patch(in, Pre, "p", tc.key, tc.ch)
			if !slices.Equal(keysOf(in), []string{"a", "b", "c"}) {
				t.Fatalf("input modified: %v", keysOf(in))
			}
			if tc.errIs != nil {
				if !errors.Is(err, tc.errIs) {
					t.Fatalf("error: got %v, want %v", err, tc.errIs)
				}
				var order *OrderError
				if tc.order != nil && (!errors.As(err, &order) || *order != *tc.order) {
					t.Fatalf("error: got %#v, want %#v", err, tc.order)
				}
				return
			}
			if err != nil || !slices.Equal(keysOf(got), tc.want) || moved != tc.moved {
				t.Fatalf("got %v moved %v err %v, want %v moved %v", keysOf(got), moved, err, tc.want, tc.moved)
			}
		})
	}
}

func TestReplaceKeepsIDs(t *testing.T) {
	got, err := Replace(list("a", "b"), []WebhookInput{{Key: "b", Name: "B"}, {Key: "c", Name: "C"}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].ID != "id-b" || got[1].ID == "" || got[1].ID == "id-c" {
		t.Fatalf("ids: got %+v, want b's kept and a new one for c", got)
	}
	if _, err := Replace(nil, []WebhookInput{{Key: "x", Name: "N"}, {Key: "y", Name: "N"}}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate names: got %v, want ErrDuplicate", err)
	}
}

// FuzzWebhookOrder drives Replace, Patch and Remove (the PUT, PATCH and DELETE of SPEC §4) with
// edit sequences decoded from the fuzz input, three bytes an edit, and checks each result against
// a plain model of the list: the orders stay 0..n-1 with no gap and no duplicate, keys, names and
// ids stay unique, a moved webhook lands at the requested order with the others in their relative
// order, ids survive, errors come exactly when the model expects them, and the input list is never
// modified.
func FuzzWebhookOrder(f *testing.F) {
	f.Add([]byte{0, 0, 2, 0, 2, 0, 2, 1, 0})
	f.Add([]byte{0, 0, 3, 0, 1, 0xff, 1, 0, 1, 2, 0, 0, 2, 9, 0})
	f.Add([]byte{3, 0x25, 0x13, 0, 1, 4, 2, 3, 0, 1, 2, 0})
	f.Add([]byte{3, 0, 0, 0, 0, 0, 2, 0, 0, 3, 0xff, 0xff, 1, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		ws := list("a", "b", "c")
		for ; len(data) >= 3; data = data[3:] {
			op, x, y := data[0]%4, int(data[1]), int(data[2])
			input, before := ws, slices.Clone(ws)
			var key string
			if i := x % (len(ws) + 1); i < len(ws) {
				key = ws[i].Key
			} else {
				key = "missing"
			}
			switch op {
			case 0, 1: // PATCH: a new order (in or out of range) or a new name (maybe taken)
				ch := Change{}
				if op == 0 {
					ch.Order = ptr(int(int8(y)) % (len(ws) + 2))
				} else {
					ch.Name = ptr(fmt.Sprintf("name-%c", 'a'+y%8))
				}
				got, index, moved, err := Patch(ws, Pre, "p", key, ch)
				want, wantIndex, wantErr := modelPatch(ws, key, ch)
				if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
					t.Fatalf("Patch(%v, %q, %+v): err %v, want %v", keysOf(ws), key, ch, err, wantErr)
				}
				if err == nil {
					if !slices.Equal(keysOf(got), want) || index != wantIndex || moved != (index != slices.Index(keysOf(ws), key)) {
						t.Fatalf("Patch(%v, %q, %+v) = %v at %d moved %v, want %v at %d",
							keysOf(ws), key, ch, keysOf(got), index, moved, want, wantIndex)
					}
					ws = got
				}
			case 2: // DELETE
				got, moved, err := Remove(ws, Pre, "p", key)
				i := slices.Index(keysOf(ws), key)
				if i < 0 {
					if !errors.Is(err, ErrWebhookNotFound) {
						t.Fatalf("Remove(%v, %q): err %v, want ErrWebhookNotFound", keysOf(ws), key, err)
					}
					break
				}
				want := slices.Delete(keysOf(ws), i, i+1)
				if err != nil || !slices.Equal(keysOf(got), want) || moved != (i < len(ws)-1) {
					t.Fatalf("Remove(%v, %q) = %v moved %v err %v, want %v moved %v", keysOf(ws), key, keysOf(got), moved, err, want, i < len(ws)-1)
				}
				ws = got
			case 3: // PUT: up to 5 items with keys and names from small pools (so some repeat)
				var items []WebhookInput
				for n := range x % 6 {
					k := fmt.Sprintf("%c", 'a'+(y>>n+n*x)%6)
					items = append(items, WebhookInput{Key: k, Name: "name-" + k})
				}
				got, err := Replace(ws, items)
				wantKeys := make([]string, len(items))
				for i, in := range items {
					wantKeys[i] = in.Key
				}
				if dup := len(uniq(wantKeys)) != len(wantKeys); dup != errors.Is(err, ErrDuplicate) || (!dup && err != nil) {
					t.Fatalf("Replace(%v, %v): err %v, duplicates %v", keysOf(ws), wantKeys, err, dup)
				}
				if err != nil {
					break
				}
				if !slices.Equal(keysOf(got), wantKeys) {
					t.Fatalf("Replace(%v, %v) = %v", keysOf(ws), wantKeys, keysOf(got))
				}
				for _, w := range got {
					if old := slices.IndexFunc(ws, func(o Webhook) bool { return o.Key == w.Key }); old >= 0 && ws[old].ID != w.ID {
						t.Fatalf("Replace: the id of %q changed from %q to %q", w.Key, ws[old].ID, w.ID)
					}
				}
				ws = got
			}
			if !slices.Equal(input, before) {
				t.Fatalf("an edit modified its input list: %+v, was %+v", input, before)
			}
			checkList(t, ws)
		}
	})
}

// modelPatch is Patch written the plain way, for the keys only.
func modelPatch(ws []Webhook, key string, ch Change) ([]string, int, error) {
	keys := keysOf(ws)
	i := slices.Index(keys, key)
	switch {
	case i < 0:
		return nil, 0, ErrWebhookNotFound
	case ch.Order != nil && (*ch.Order < 0 || *ch.Order >= len(ws)):
		return nil, 0, ErrBadOrder
	case ch.Name != nil && slices.ContainsFunc(ws, func(w Webhook) bool { return w.Key != key && w.Name == *ch.Name }):
		return nil, 0, ErrDuplicate
	case ch.Order == nil:
		return keys, i, nil
	}
	rest := slices.Delete(slices.Clone(keys), i, i+1)
	return slices.Insert(rest, *ch.Order, key), *ch.Order, nil
}

// checkList fails unless the orders of ws are 0..n-1 and its keys, names and ids are unique.
func checkList(t *testing.T, ws []Webhook) {
	t.Helper()
	for i, o := range Orders(ws) {
		if o.Order != i || o.Key != ws[i].Key {
			t.Fatalf("Orders(%v)[%d] = %+v, want order %d", keysOf(ws), i, o, i)
		}
	}
	keys, names, ids := make([]string, len(ws)), make([]string, len(ws)), make([]string, len(ws))
	for i, w := range ws {
		keys[i], names[i], ids[i] = w.Key, w.Name, w.ID
		if w.ID == "" {
			t.Fatalf("webhook %q has no id", w.Key)
		}
	}
	for _, s := range [][]string{keys, names, ids} {
		if len(uniq(s)) != len(s) {
			t.Fatalf("list %v repeats a value in %v", keysOf(ws), s)
		}
	}
}

func uniq(s []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(s)))
}
