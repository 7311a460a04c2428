package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/policyhooks/policyhooks/shared/devstack"
)

// Logf is where the suite's parts report what they do (t.Logf in the test).
type Logf func(format string, args ...any)

// Proc is one supervised child process: started in its own process group with its output
// appended to a log file, signalled on purpose by the fault schedule, and restarted after a second
// when it exits without being asked to (as a process supervisor would), which is counted and
// reported.
type Proc struct {
	Name string
	Path string
	Args []string
	Env  []string
	Log  string // file receiving the process's stdout and stderr, across restarts
	// Ready reports whether a started process serves; Start waits for it.
	Ready func(ctx context.Context) error

	logf  Logf
	start time.Time // the suite's start, for offsets in the log file

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
	asked      bool // the current instance was asked to exit (fault or stop)
	closed     bool // stopped for good: no more restarts
	starts     int
	unexpected []string
}

// NewProc returns a process that is not started yet.
func NewProc(name, path string, args, env []string, logPath string, ready func(context.Context) error, start time.Time, logf Logf) *Proc {
	return &Proc{Name: name, Path: path, Args: args, Env: env, Log: logPath, Ready: ready, start: start, logf: logf}
}

// Start starts the process (unless it runs) and waits until it is ready, at most timeout.
func (p *Proc) Start(ctx context.Context, timeout time.Duration) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("%s: closed", p.Name)
	}
	if p.cmd == nil || isClosed(p.done) {
		if err := p.startLocked(); err != nil {
			p.mu.Unlock()
			return err
		}
	}
	done := p.done
	p.mu.Unlock()
	return p.waitReady(ctx, done, timeout)
}

func (p *Proc) waitReady(ctx context.Context, done chan struct{}, timeout time.Duration) error {
	if p.Ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		last = p.Ready(rctx)
		rcancel()
		if last == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready (%v); log tail:\n%s", p.Name, last, p.Tail(15))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v; log tail:\n%s", p.Name, timeout, last, p.Tail(15))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *Proc) startLocked() error {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s: log: %w", p.Name, err)
	}
	defer f.Close()
	p.starts++
	fmt.Fprintf(f, "---- chaos: start #%d of %s at +%.1fs\n", p.starts, p.Name, time.Since(p.start).Seconds())
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // and Pdeathsig, set by StartChild
	if err := devstack.StartChild(cmd); err != nil {
		return fmt.Errorf("%s: start: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.asked = cmd, done, false
	go p.watch(cmd, done)
	return nil
}

// watch waits for one instance and restarts it when it exited on its own.
func (p *Proc) watch(cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	p.note(fmt.Sprintf("exited (%v)", exitText(err)))
	p.mu.Lock()
	asked, closed := p.asked, p.closed
	close(done)
	p.mu.Unlock()
	if asked || closed {
		return
	}
	msg := fmt.Sprintf("+%.1fs %s exited on its own: %s", time.Since(p.start).Seconds(), p.Name, exitText(err))
	p.logf("chaos: UNEXPECTED: %s; restarting it in 1s", msg)
	time.Sleep(time.Second)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unexpected = append(p.unexpected, msg)
	if p.closed || p.cmd != cmd { // stopped meanwhile, or a fault already started a new one
		return
	}
	if err := p.startLocked(); err != nil {
		p.logf("chaos: restart of %s failed: %v", p.Name, err)
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (p *Proc) note(line string) {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "---- chaos: %s %s at +%.1fs\n", p.Name, line, time.Since(p.start).Seconds())
}

// Running reports whether an instance is running.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// Pid returns the process id of the running instance, 0 when none runs.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL to the process group and waits until the process is gone.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL, 0)
}

// Term sends SIGTERM and waits up to timeout for the process to exit, then kills it. It returns
// how long the process took and whether it had to be killed.
func (p *Proc) Term(timeout time.Duration) (took time.Duration, killed bool) {
	return p.signal(syscall.SIGTERM, timeout)
}

func (p *Proc) signal(sig syscall.Signal, timeout time.Duration) (time.Duration, bool) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil || isClosed(done) {
		p.mu.Unlock()
		return 0, false
	}
	p.asked = true
	p.mu.Unlock()
	p.note("gets " + sig.String())
	began := time.Now()
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	if sig == syscall.SIGKILL {
		<-done
		return time.Since(began), false
	}
	select {
	case <-done:
		return time.Since(began), false
	case <-time.After(timeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return time.Since(began), true
	}
}

// Close stops the process for good: SIGTERM, then SIGKILL after grace.
func (p *Proc) Close(grace time.Duration) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Term(grace)
}

// Unexpected returns the exits the process made on its own.
func (p *Proc) Unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// Starts returns how many times the process was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Tail returns the last n lines of the process's log, each cut to 400 bytes.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(no log)"
		}
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var out bytes.Buffer
	for _, l := range lines {
		if len(l) > 400 {
			l = l[:400] + "…"
		}
		out.WriteString("    " + l + "\n")
	}
	return out.String()
}
