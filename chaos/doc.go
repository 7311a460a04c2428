// Package chaos is the fault suite of policyhooks (issue 9): it runs real processes — a nats-server
// node, the FerretDB store, config, callback and several executors built from a source tree — sends
// a stream of privacy requests (config's PRE_APPROVAL on) through HTTPS receivers that reply
// eligible to pre-approval calls, halt, derive identities, fail with 503 and answer slowly, while
// it kills and restarts the processes at random moments; then it checks, request by request, that
// nothing was lost, skipped, repeated or recorded wrongly.
//
// The suite itself is TestChaos in chaos_test.go; docs/reliability.md says how to run it.
// TestClusterFailover (failover_test.go, issue 11) runs the same stream and checks on a 3-node
// JetStream cluster (NATS_REPLICAS=3) while the leaders of the stream, of the privacy_requests
// bucket and of an executor consumer are SIGKILLed in turn, and reports how long each stalled
// progress. This
// package holds its parts: the process supervisor (Proc), the system under test (Cluster), the
// receivers, the data layer, the submitter, the fault schedule and the checks.
package chaos
