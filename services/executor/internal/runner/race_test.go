//go:build race

package runner_test

// raceEnabled lowers TestExplore's default bound: the explorer runs threads one at a time, so the
// race detector sees nothing there and only slows it; make test runs the full bound without it.
const raceEnabled = true
