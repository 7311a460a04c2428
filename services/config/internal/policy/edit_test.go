package policy

import (
	"errors"
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
		name   string
		key    string
		ch     Change
		want   []string
		moved  bool
		errIs  error
		errMsg string
	}{
		{name: "move first to last", key: "a", ch: Change{Order: ptr(2)}, want: []string{"b", "c", "a"}, moved: true},
		{name: "move last to first", key: "c", ch: Change{Order: ptr(0)}, want: []string{"c", "a", "b"}, moved: true},
		{name: "move to the same place", key: "b", ch: Change{Order: ptr(1)}, want: []string{"a", "b", "c"}},
		{name: "rename only", key: "b", ch: Change{Name: ptr("new")}, want: []string{"a", "b", "c"}},
		{name: "out of range", key: "a", ch: Change{Order: ptr(3), Name: ptr("x")}, errIs: ErrBadOrder,
			errMsg: "Cannot set order to 3: there are only 3 PolicyPreWebhook(s) defined on this Policy."},
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
				if !errors.Is(err, tc.errIs) || (tc.errMsg != "" && err.Error() != tc.errMsg) {
					t.Fatalf("error: got %v, want %v %q", err, tc.errIs, tc.errMsg)
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
