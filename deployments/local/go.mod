module github.com/policyhooks/policyhooks/deployments/local

go 1.26.0

require github.com/policyhooks/policyhooks/shared v0.0.0

replace github.com/policyhooks/policyhooks/shared => ../../shared

require (
	github.com/policyhooks/policyhooks/services/callback v0.0.0
	github.com/policyhooks/policyhooks/services/config v0.0.0
	github.com/policyhooks/policyhooks/services/executor v0.0.0
)

replace (
	github.com/policyhooks/policyhooks/services/callback => ../../services/callback
	github.com/policyhooks/policyhooks/services/config => ../../services/config
	github.com/policyhooks/policyhooks/services/executor => ../../services/executor
)
