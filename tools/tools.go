//go:build tools

// Package tools pins the command-line tools the Makefile builds: the NATS CLI (make nats) and ko
// (make images; the base image comes from ./mkbase, which pins go-containerregistry).
package tools

import (
	_ "github.com/google/ko"
	_ "github.com/nats-io/natscli/nats"
)
