package devstack

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// StartChild starts cmd with Pdeathsig SIGKILL (keeping the rest of cmd.SysProcAttr), from one OS
// thread that never exits; the chaos suite starts its processes with it too. The kernel
// sends Pdeathsig when the thread that started the child exits, not the process: starting every
// child from a locked thread that lives as long as the process makes it "when the test process
// dies" (a test timeout's panic runs no cleanup), and never earlier.
func StartChild(cmd *exec.Cmd) error {
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
