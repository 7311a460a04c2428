//go:build !linux

package devstack

import "os/exec"

// StartChild starts cmd. Without Pdeathsig outside Linux, a node outlives a parent that dies
// without cleanup only until it sees its standard input end (see RunClusterNode).
func StartChild(cmd *exec.Cmd) error { return cmd.Start() }
