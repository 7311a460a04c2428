package runner

import (
	"context"
	"testing"
)

type fixedPool struct{ cap int }

func (p fixedPool) Cap() int  { return p.cap }
func (p fixedPool) Used() int { return 0 }

// TestShares: a host holds at most all slots but a sixteenth; the requests refused wait in line,
// a share given back goes to the first in line, a newcomer does not jump the line, and a line is
// never longer than the limit.
func TestShares(t *testing.T) {
	s := newShares(fixedPool{cap: 4}) // limit 3
	for i := range 3 {
		if !s.enter("h") {
			t.Fatalf("share %d of 3 refused", i+1)
		}
	}
	if s.enter("h") {
		t.Fatal("a 4th share of one host on 4 slots granted, want at most 3")
	}
	if !s.enter("other") {
		t.Fatal("another host refused a share")
	}
	first, second := s.line("h"), s.line("h")
	if s.line("h") == nil || s.line("h") != nil {
		t.Fatal("the line of h takes 3 places, then refuses: want exactly the limit")
	}
	s.leave("h")
	select {
	case <-first:
	default:
		t.Fatal("a share given back did not go to the first in line")
	}
	if s.enter("h") {
		t.Fatal("a newcomer got a share while others wait in line")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s.wait(ctx, nil, "h", second) {
		t.Fatal("a wait whose context ended reported a share")
	}
	if !s.wait(context.Background(), nil, "h", first) {
		t.Fatal("the first in line did not get its share")
	}
	if got := s.held["h"]; got != 3 {
		t.Errorf("h holds %d shares after a handover, want 3 (handed over, not counted twice)", got)
	}
	unlimited := newShares(nil)
	for range 100 {
		if !unlimited.enter("h") {
			t.Fatal("without a pool, shares are not limited")
		}
	}
}
