package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/policyhooks/policyhooks/shared/devstack"
)

// natsServerFlag makes the bench binary the benchmark's NATS server: `bench -nats-server DIR
// PORT`. The harness starts itself that way so that the server's CPU time is its own process's.
const natsServerFlag = "nats-server"

// serveNATS is the child process started with -nats-server: it runs the embedded NATS server
// (JetStream, file storage under dir) on 127.0.0.1:port until ctx ends (SIGTERM or SIGINT) or its
// standard input ends (the harness is gone), then shuts it down.
func serveNATS(ctx context.Context, dir, port string, stdin io.Reader) error {
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("-%s %s: bad port %q", natsServerFlag, dir, port)
	}
	n, err := devstack.StartNATS(dir, "127.0.0.1", p)
	if err != nil {
		return err
	}
	defer n.Shutdown()
	stopHeap, err := serveHeap(n)
	if err != nil {
		return err
	}
	defer stopHeap()
	parentGone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(parentGone)
	}()
	select {
	case <-ctx.Done():
	case <-parentGone:
	}
	return nil
}

// heapSubject is where the benchmark's NATS server process answers with its live Go heap (see
// serveHeap).
const heapSubject = "_bench.server.heap"

// serveHeap answers every request on heapSubject, over an in-process connection to n, with the live
// Go heap of this process in bytes: HeapAlloc right after a forced collection, which leaves out the
// garbage that the resident set still holds. It returns a function that stops answering.
func serveHeap(n *devstack.NATS) (stop func(), err error) {
	nc, err := nats.Connect("", nats.InProcessServer(n.Server), nats.Name("bench-heap"))
	if err != nil {
		return nil, fmt.Errorf("heap responder: %w", err)
	}
	_, err = nc.Subscribe(heapSubject, func(m *nats.Msg) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = m.Respond(strconv.AppendUint(nil, ms.HeapAlloc, 10))
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("heap responder: %w", err)
	}
	return nc.Close, nil
}

// serverHeapBytes asks the NATS server process over nc for its live Go heap in bytes (serveHeap).
// Asking forces a collection in the server.
func serverHeapBytes(ctx context.Context, nc *nats.Conn) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, heapSubject, nil)
	if err != nil {
		return 0, fmt.Errorf("server heap: %w", err)
	}
	return strconv.ParseFloat(string(m.Data), 64)
}

// NATSProcess is the benchmark's NATS server running as a child process of the harness.
type NATSProcess struct {
	cmd     *exec.Cmd
	url     string
	done    chan struct{}
	stdin   io.Closer
	dir     string // the store
	logPath string
}

// StartNATSProcess starts the running binary again as the NATS server with its store in dir and
// its log in logPath, and waits until it accepts connections.
func StartNATSProcess(ctx context.Context, dir, logPath string) (*NATSProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, fmt.Errorf("nats-server: %w", err)
		}
		p, err := startNATSChild(ctx, self, dir, port, logPath)
		if !errors.Is(err, errExited) || attempt == 3 {
			return p, err
		}
		// Most likely another process took the port between our check and the child's listen.
	}
}

func startNATSChild(ctx context.Context, self, dir string, port int, logPath string) (*NATSProcess, error) {
	logOut, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-"+natsServerFlag, dir, strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logOut, logOut
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logOut.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logOut.Close()
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	p := &NATSProcess{cmd: cmd, url: fmt.Sprintf("nats://127.0.0.1:%d", port), done: make(chan struct{}), stdin: stdin,
		dir: dir, logPath: logPath}
	go func() {
		_ = cmd.Wait()
		logOut.Close()
		close(p.done)
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitAccepting(ctx, addr, p.done, 30*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("nats-server on %s (log %s): %w", addr, logPath, err)
	}
	return p, nil
}

// URL returns the client URL of the server.
func (p *NATSProcess) URL() string { return p.url }

// CPUSeconds returns the user+system CPU time the server used so far.
func (p *NATSProcess) CPUSeconds() float64 { return procCPUSeconds(p.cmd.Process.Pid) }

// RSSKB returns the server's resident set size (VmRSS) in KiB.
func (p *NATSProcess) RSSKB() float64 { return procStatusKB(p.cmd.Process.Pid, "VmRSS") }

// Restart stops the server and starts a new one on the same store (on another port), as a restart
// of the server would, and waits until it accepts connections, its streams recovered.
func (p *NATSProcess) Restart(ctx context.Context) (*NATSProcess, error) {
	p.Stop()
	return StartNATSProcess(ctx, p.dir, p.logPath)
}

// Stop sends SIGTERM and waits up to ten seconds for a clean shutdown, then kills.
func (p *NATSProcess) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = p.stdin.Close()
}
