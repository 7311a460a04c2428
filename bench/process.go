package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procCPUSeconds returns the user+system CPU time process pid used so far, from /proc/<pid>/stat
// (0 where there is no /proc).
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// procPeakRSSMB returns the peak resident set size (VmHWM) of process pid in MiB.
func procPeakRSSMB(pid int) float64 { return procStatusKB(pid, "VmHWM") / 1024 }

// procStatusKB returns the field of /proc/<pid>/status given by name (such as VmRSS), a size in
// KiB; 0 where there is no such field or no /proc.
func procStatusKB(pid int, name string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb
		}
	}
	return 0
}

// dirBytes returns the sum of the sizes of the regular files under dir. A file removed during the
// walk (the server replaces some of its files as it writes them) is left out.
func dirBytes(dir string) (int64, error) {
	var sum int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		sum += info.Size()
		return nil
	})
	return sum, err
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment ago. Another process may
// take it before the child does; the callers start the child again on a new port when it exits.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// errExited says that a child process ended before it accepted connections.
var errExited = errors.New("process exited before accepting connections")

// waitAccepting waits until addr accepts TCP connections, the process reports its end on done
// (errExited), ctx ends or timeout passes.
func waitAccepting(ctx context.Context, addr string, done <-chan struct{}, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// settle waits until a process has finished the work that trails the last completion the driver
// saw (the last requests' final writes and their acks): until, over 100 ms, its CPU time rose by at
// most one clock tick and counter (when not nil) did not move; at most three seconds.
func settle(ctx context.Context, cpu func() float64, counter func() (float64, bool)) {
	read := func() float64 {
		if counter == nil {
			return 0
		}
		v, _ := counter()
		return v
	}
	deadline := time.Now().Add(3 * time.Second)
	c0, n0 := cpu(), read()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		c1, n1 := cpu(), read()
		if c1-c0 <= 0.011 && n1 == n0 {
			return
		}
		c0, n0 = c1, n1
	}
}
