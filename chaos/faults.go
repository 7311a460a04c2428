package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Fault is a kind of fault the schedule injects.
type Fault string

// Faults.
const (
	KillExecutor Fault = "SIGKILL an executor, restart it"
	TermExecutor Fault = "SIGTERM an executor, wait for its exit, restart it"
	KillNATS     Fault = "SIGKILL the NATS node, restart it seconds later"
	KillConfig   Fault = "SIGKILL config, restart it"
	TermConfig   Fault = "SIGTERM config, restart it"
	KillCallback Fault = "SIGKILL callback, restart it"
	TermCallback Fault = "SIGTERM callback, restart it"
)

// AllFaults lists every kind once.
var AllFaults = []Fault{KillExecutor, TermExecutor, KillNATS, KillConfig, TermConfig, KillCallback, TermCallback}

// longWeights is how often each kind comes up in the long form.
var longWeights = map[Fault]int{
	KillExecutor: 4, TermExecutor: 4, KillNATS: 2, KillConfig: 1, TermConfig: 1, KillCallback: 1, TermCallback: 1,
}

// ShortSchedule is every kind once (NATS killed once) plus two more executor faults, shuffled.
func ShortSchedule(rng *rand.Rand) []Fault {
	s := append(append([]Fault(nil), AllFaults...), pick(rng, KillExecutor, TermExecutor), pick(rng, KillExecutor, TermExecutor))
	rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

// LongFault draws the next fault of the long form.
func LongFault(rng *rand.Rand) Fault {
	total := 0
	for _, f := range AllFaults {
		total += longWeights[f]
	}
	n := rng.IntN(total)
	for _, f := range AllFaults {
		if n -= longWeights[f]; n < 0 {
			return f
		}
	}
	return KillExecutor
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// FaultRecord is one injected fault, for the report.
type FaultRecord struct {
	At     time.Duration // since the suite's start
	Fault  Fault
	Detail string
	Err    error // the process did not come back
}

func (f FaultRecord) String() string {
	s := fmt.Sprintf("+%6.1fs %-52s %s", f.At.Seconds(), f.Fault, f.Detail)
	if f.Err != nil {
		s += " — FAILED: " + f.Err.Error()
	}
	return s
}

// TermTimeout bounds how long a SIGTERM'd process may take to exit before it is killed (and the
// report says so).
const TermTimeout = 60 * time.Second

// Inject runs one fault and brings the process back.
func (c *Cluster) Inject(ctx context.Context, rng *rand.Rand, f Fault, start time.Time) FaultRecord {
	rec := FaultRecord{At: time.Since(start), Fault: f}
	restart := func(p *Proc, after time.Duration) time.Duration {
		sleepCtx(ctx, after)
		began := time.Now()
		if err := p.Start(ctx, StartTimeout); err != nil && rec.Err == nil {
			rec.Err = err
		}
		return time.Since(began)
	}
	term := func(p *Proc) string {
		pid := p.Pid()
		took, killed := p.Term(TermTimeout)
		if killed {
			return fmt.Sprintf("%s (pid %d) did NOT exit within %s of SIGTERM: killed", p.Name, pid, TermTimeout)
		}
		return fmt.Sprintf("%s (pid %d) exited %.1fs after SIGTERM", p.Name, pid, took.Seconds())
	}
	kill := func(p *Proc) string {
		pid := p.Pid()
		p.Kill()
		return fmt.Sprintf("%s (pid %d) killed", p.Name, pid)
	}
	switch f {
	case KillExecutor:
		p := pick(rng, c.Executors...)
		d := kill(p)
		took := restart(p, between(rng, 0, 2*time.Second))
		rec.Detail = fmt.Sprintf("%s; ready again %.1fs after restart", d, took.Seconds())
	case TermExecutor:
		p := pick(rng, c.Executors...)
		d := term(p)
		took := restart(p, between(rng, 0, time.Second))
		rec.Detail = fmt.Sprintf("%s; ready again %.1fs after restart", d, took.Seconds())
	case KillNATS:
		d := kill(c.NATS)
		down := between(rng, 2*time.Second, 5*time.Second)
		restart(c.NATS, down)
		rec.Detail = fmt.Sprintf("%s; down %.1fs", d, down.Seconds())
	case KillConfig, KillCallback, TermConfig, TermCallback:
		p := c.Config
		if f == KillCallback || f == TermCallback {
			p = c.Callback
		}
		var d string
		if f == KillConfig || f == KillCallback {
			d = kill(p)
		} else {
			d = term(p)
		}
		took := restart(p, between(rng, 300*time.Millisecond, 1500*time.Millisecond))
		rec.Detail = fmt.Sprintf("%s; ready again %.1fs after restart", d, took.Seconds())
	}
	return rec
}
