//go:build !linux

package devstack

import "os/exec"

// startChild starts cmd. Without Pdeathsig outside Linux, a node outlives a parent that dies
// without cleanup only until it sees its standard input end (see RunClusterNode).
func startChild(cmd *exec.Cmd) error { return cmd.Start() }
