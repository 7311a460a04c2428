package chaos

import (
	"testing"
	"time"
)

func TestLongestGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s ...float64) []time.Time {
		var out []time.Time
		for _, x := range s {
			out = append(out, t0.Add(time.Duration(x*float64(time.Second))))
		}
		return out
	}
	sec := func(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }
	for _, tc := range []struct {
		name       string
		times      []time.Time
		from, to   float64
		gap, from2 float64 // want: the gap and where it starts
	}{
		{"no times: the whole window", nil, 2, 7, 5, 2},
		{"a gap inside", at(1, 2, 3, 7, 8), 2, 9, 4, 3},
		{"clipped at from", at(0, 5, 6), 2, 7, 3, 2},
		{"clipped at to", at(1, 3, 4, 20), 2, 9, 5, 4},
		{"times outside only", at(0, 10), 2, 7, 5, 2},
		{"even progress", at(2.5, 3, 3.5, 4, 4.5, 5), 2.4, 5, 0.5, 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gap, start := LongestGap(tc.times, t0.Add(sec(tc.from)), t0.Add(sec(tc.to)))
			if gap != sec(tc.gap) || !start.Equal(t0.Add(sec(tc.from2))) {
				t.Errorf("LongestGap = %v from %v, want %v from %v", gap, start.Sub(t0), sec(tc.gap), sec(tc.from2))
			}
		})
	}
}
