//go:build tools

// Package tools pins the command-line tools the Makefile builds: the NATS CLI (make nats).
package tools

import _ "github.com/nats-io/natscli/nats"
