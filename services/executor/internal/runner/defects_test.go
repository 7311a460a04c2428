package runner_test

import (
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
)

// Regressions of the defects of known-defects.md that were found by reading (no reproduction
// against real parts existed): each is the schedule that made the defect, scripted in the model
// world and checked end to end. The explorer walks these among all others; here they are named.

// awaitScenario is the halting request with EXECUTION_STAGE=await.
func awaitScenario() scenario {
	sc := scenarios()[0]
	sc.crashes, sc.dups = 1, 0
	return sc
}

// waitingAt returns the index of the move letting a thread do op, or -1.
func waitingAt(moves []move, op string) int {
	for i, m := range moves {
		if m.kind == moveStep && m.thread.op == op {
			return i
		}
	}
	return -1
}

// find returns the index of the first move that match accepts, or -1.
func find(moves []move, match func(move) bool) int {
	for i, m := range moves {
		if match(m) {
			return i
		}
	}
	return -1
}

// TestD12ExecuteRepeatedAfterTheWindowKeepsItsID: an executor stops between publishing execute and
// writing the execution step, and its message comes back only after the stream's 2-minute
// duplicate window (every executor was down 3 minutes): execute goes out again, with the same
// execution id, so the data layer recognises the run (D12); the request completes once.
func TestD12ExecuteRepeatedAfterTheWindowKeepsItsID(t *testing.T) {
	sc := awaitScenario()
	sc.dataDelay = 5 * time.Minute
	phase, crashedWorker := 0, 0
	var final *world
	// The status events of the crashed message are published again when it comes back, after the
	// window: at least once, as docs/events.md says for outages longer than the duplicate window;
	// consumers de-duplicate on id and seq. So this check asks for completion, not unique events.
	sc.check = func(w *world) string {
		final = w
		if rec := w.record(); rec.Status != event.StatusComplete {
			return "want complete, got " + summary(rec)
		}
		return ""
	}
	_, ok := runWith(t, sc, func(w *world, _ int, moves []move) int {
		switch phase {
		case 0: // crash right after execute is published, before the write
			if len(w.executes) == 1 {
				if i := waitingAt(moves, "update record"); i >= 0 {
					crashedWorker = moves[i].thread.worker
					if c := find(moves, func(m move) bool { return m.kind == moveCrash && m.worker == crashedWorker }); c >= 0 {
						phase = 1
						return c
					}
				}
			}
		case 1: // the crashed message comes back 3 minutes later
			w.mu.Lock()
			for _, m := range w.msgs {
				if !m.held && !m.done && m.deliverAt.Sub(w.now) == ackWait {
					m.deliverAt = w.now.Add(3 * time.Minute)
					phase = 2
				}
			}
			w.mu.Unlock()
		}
		return 0
	})
	if !ok {
		return
	}
	if phase != 2 {
		t.Fatalf("the schedule never crashed after execute (phase %d)", phase)
	}
	if len(final.executes) != 2 || final.executes[0].ExecutionID != final.executes[1].ExecutionID {
		t.Errorf("executes %+v, want two (one per side of the duplicate window) with the same execution id\n%s",
			final.executes, strings.Join(final.trace, "\n"))
	}
}

// TestD20IdentityExpiresDuringTheHaltingCall: the identity expires while the halting call is made,
// so the pause is due the moment it is recorded, and its timer fires before the paused write. The
// request must go to error (the identity expired), never stay paused without a timer (D20); the
// world checks at every step that a request not finished has a message that will drive it.
func TestD20IdentityExpiresDuringTheHaltingCall(t *testing.T) {
	for _, timerFirst := range []bool{false, true} {
		name := "timer after the paused write"
		if timerFirst {
			name = "timer before the paused write"
		}
		t.Run(name, func(t *testing.T) {
			sc := awaitScenario()
			sc.cfg.IdentityTTL = 10 * time.Second
			sc.lateBy = time.Hour // the receiver does not resume in time
			sc.check = func(w *world) string {
				rec := w.record()
				if rec.Status != event.StatusError || rec.Error.Message != lifecycle.MsgIdentityExpired || rec.Error.WebhookKey != "b" {
					return "want error: the identity expired, at webhook b; got " + summary(rec)
				}
				return ""
			}
			phase := 0
			runWith(t, sc, func(w *world, _ int, moves []move) int {
				switch phase {
				case 0: // let the identity expire just before the halting call
					if i := waitingAt(moves, "call b"); i >= 0 {
						w.mu.Lock()
						w.now = w.now.Add(20 * time.Second)
						w.mu.Unlock()
						phase = 1
						return i
					}
				case 1: // the pause timer is scheduled (due already): deliver it before the write
					if !timerFirst {
						break
					}
					if d := find(moves, func(m move) bool {
						return m.kind == moveDeliver && strings.Contains(m.msg.subject, "timer.fire.pause")
					}); d >= 0 {
						phase = 2
						return d
					}
				case 2: // run the timer's worker to its end before the halting run writes
					if i := find(moves, func(m move) bool { return m.kind == moveStep && m.thread.worker == 3 }); i >= 0 {
						return i
					}
				}
				return 0
			})
		})
	}
}

// TestD22LosingResumeLeavesTheIdentity pins the schedule of D22: a resume with a derived identity
// that loses its write to the pause expiry changes no stored identity (its derived identity was
// stored beside it, and is removed).
func TestD22LosingResumeLeavesTheIdentity(t *testing.T) {
	var sc scenario
	for _, s := range scenarios() {
		if strings.Contains(s.name, "D22") {
			sc = s
		}
	}
	phase, resumer := 0, 0
	runWith(t, sc, func(w *world, _ int, moves []move) int {
		holding := func(m move, subject string) bool {
			return m.kind == moveStep && w.active[m.thread.worker] != nil && strings.Contains(w.active[m.thread.worker].subject, subject)
		}
		switch phase {
		case 0: // the resume is delivered first
			if d := find(moves, func(m move) bool { return m.kind == moveDeliver && m.msg.subject == event.SubjectResume }); d >= 0 {
				phase = 1
				return d
			}
		case 1: // its worker stores its derived identity beside the identity, then waits to write
			if i := waitingAt(moves, "put patch"); i >= 0 {
				resumer = moves[i].thread.worker
				phase = 2
				return i
			}
			if i := find(moves, func(m move) bool { return holding(m, "resume") }); i >= 0 {
				return i
			}
		case 2: // meanwhile the pause timer is delivered
			if d := find(moves, func(m move) bool {
				return m.kind == moveDeliver && strings.Contains(m.msg.subject, "timer.fire.pause")
			}); d >= 0 {
				phase = 3
				return d
			}
		case 3: // and writes the error before the resume's write
			if i := find(moves, func(m move) bool { return holding(m, "timer") && m.thread.worker != resumer }); i >= 0 {
				return i
			}
			phase = 4
		}
		return 0
	})
	if phase != 4 {
		t.Fatalf("the schedule never raced the resume with the expiry (phase %d)", phase)
	}
}

// TestD26ExecutedBeforeTheExecutionStepIsWritten: the data layer answers before the executor wrote
// the execution step (execute is published first). The answer is recorded at once (input row I6)
// and its message acknowledged: no poll, no sleep holding a handler slot (D26), no redelivery.
func TestD26ExecutedBeforeTheExecutionStepIsWritten(t *testing.T) {
	sc := awaitScenario()
	var final *world
	sc.check = func(w *world) string { final = w; return w.check() }
	phase, first := 0, 0
	runWith(t, sc, func(w *world, _ int, moves []move) int {
		switch phase {
		case 0:
			if len(w.executes) == 1 && waitingAt(moves, "update record") >= 0 {
				first = moves[waitingAt(moves, "update record")].thread.worker
				if d := find(moves, func(m move) bool { return m.kind == moveDeliver && m.msg.subject == event.SubjectExecuted }); d >= 0 {
					phase = 1
					return d
				}
			}
		case 1: // the executed handler runs before the execution step is written
			if i := find(moves, func(m move) bool { return m.kind == moveStep && m.thread.worker != first }); i >= 0 {
				return i
			}
			phase = 2
		}
		return 0
	})
	if final == nil {
		return
	}
	for _, f := range final.fates {
		if strings.HasPrefix(f, event.SubjectExecuted) {
			if f != event.SubjectExecuted+": ack" {
				t.Errorf("the early executed was %q, want acknowledged at once", f)
			}
			break
		}
	}
}
