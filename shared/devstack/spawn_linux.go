package devstack

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// startChild starts cmd with Pdeathsig SIGKILL, from one OS thread that never exits. The kernel
// sends Pdeathsig when the thread that started the child exits, not the process: starting every
// child from a locked thread that lives as long as the process makes it "when the test process
// dies" (a test timeout's panic runs no cleanup), and never earlier. chaos/proc.go does the same
// for its children.
func startChild(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives until the process exits
			for r := range spawnCh {
				r.done <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd: cmd, done: make(chan error, 1)}
	spawnCh <- r
	return <-r.done
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)
