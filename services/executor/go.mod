module github.com/policyhooks/policyhooks/services/executor

go 1.26.0

require github.com/policyhooks/policyhooks/shared v0.0.0

replace github.com/policyhooks/policyhooks/shared => ../../shared
