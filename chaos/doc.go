// Package chaos is the fault suite of policyhooks (issue 9): it runs real processes — a nats-server
// node, the FerretDB store, config, callback and several executors built from a source tree — sends
// a stream of privacy requests through HTTPS receivers that halt, derive identities, fail with 503
// and answer slowly, while it kills and restarts the processes at random moments; then it checks,
// request by request, that nothing was lost, skipped, repeated or recorded wrongly.
//
// The suite itself is TestChaos in chaos_test.go; docs/reliability.md says how to run it. This
// package holds its parts: the process supervisor (Proc), the system under test (Cluster), the
// receivers, the data layer, the submitter, the fault schedule and the checks.
package chaos
