module github.com/policyhooks/policyhooks/examples/receiver

go 1.26.0
