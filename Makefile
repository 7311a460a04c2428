# policyhooks: every target loops over the Go modules of the workspace (go.work).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

MODULES := $(patsubst %/go.mod,%,$(shell ls shared/go.mod services/*/go.mod deployments/*/go.mod bench/go.mod examples/*/go.mod chaos/go.mod 2>/dev/null))
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
NATSCLI := github.com/nats-io/natscli/nats
BENCH_ARGS ?=

.PHONY: help run test lint bench nats build fmt chaos fuzz images compose

help:
	@echo "make run    start the whole system locally (embedded NATS + embedded MongoDB-compatible store + all services)"
	@echo "make test   go vet (each module on its own) and go test -race -shuffle=on in every module"
	@echo "make lint   gofmt check, go vet and staticcheck in every module"
	@echo "make bench  the throughput benchmark against the raw NATS + HTTPS loop"
	@echo "make fuzz   every native fuzz target for FUZZTIME each (default 2m; CI runs 5s each)"
	@echo "make nats   build the NATS CLI (v0.4.0) into bin/nats"
	@echo "make images OCI image tarballs of config, callback, executor, console and nats-server, built offline with ko (IMAGES_DIR, default .data/images; tools/README.md)"
	@echo "make compose  deployments/compose under podman-compose: the walkthrough, a NATS container SIGKILLed under load, every request checked (needs make images, podman, podman-compose)"
	@echo "make chaos  the long fault runs: the executor's schedule explorer at 3 deviations, then thousands of requests while processes are killed (CHAOS_SEED, CHAOS_SRC, CHAOS_KEEP; docs/reliability.md)"

run:
	cd deployments/local && go run . -data $(CURDIR)/.data

build:
	@for m in $(MODULES); do echo "== build $$m"; (cd $$m && go build ./...); done

# Vet runs with GOWORK=off: every module must build on its own (replace directives, full go.sum).
test:
	@for m in $(MODULES); do echo "== vet $$m"; (cd $$m && GOWORK=off go vet ./...); done
	@for m in $(MODULES); do echo "== test $$m"; (cd $$m && go test -race -shuffle=on -count=1 -timeout 20m ./...); done
	@echo "== explore the executor's schedules (2 deviations; the race detector only slows this one)"
	@cd services/executor && EXPLORE_DEVIATIONS=2 go test -count=1 -run TestExplore ./internal/runner

lint:
	@out=$$(gofmt -l $(MODULES) tools); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do echo "== vet $$m"; (cd $$m && go vet ./...); done
	@for m in $(MODULES); do echo "== staticcheck $$m"; (cd $$m && go run $(STATICCHECK) ./...); done

fmt:
	gofmt -w $(MODULES) tools

bench:
	cd bench && go run . $(BENCH_ARGS)

# The long form of the fault suite (the short form runs in make test), after the schedule explorer
# at 3 deviations (make test runs 2). One scenario, "an operator approves while the calls and
# replies run" (EXPLORE_SLOW), stays at 2 here: at 3 it has never finished within 2 hours
# (docs/reliability.md). CHAOS_SEED=<n> reproduces a
# run, CHAOS_SRC=<tree> builds the services from another checkout; logs and report.txt are kept
# under CHAOS_KEEP (default .data/chaos).
EXPLORE_SLOW := pre-approval,_an_operator_approves
chaos:
	cd services/executor && EXPLORE_DEVIATIONS=3 go test -count=1 -timeout 2h -run TestExplore -skip 'TestExplore/$(EXPLORE_SLOW)' -v ./internal/runner
	cd services/executor && EXPLORE_DEVIATIONS=2 go test -count=1 -timeout 1h -run 'TestExplore/$(EXPLORE_SLOW)' -v ./internal/runner
	cd chaos && CHAOS_LONG=1 CHAOS_KEEP="$${CHAOS_KEEP:-$(CURDIR)/.data/chaos}" go test -count=1 -timeout 3h -run TestChaos -v .
	cd chaos && CHAOS_KEEP="$${CHAOS_KEEP:-$(CURDIR)/.data/chaos}" go test -count=1 -timeout 30m -run TestClusterFailover -v .

# Every Fuzz target of the workspace for FUZZTIME each; a failing input lands in the package's
# testdata/fuzz/<Target>/ and becomes a seed that go test runs (docs/reliability.md).
FUZZTIME ?= 2m
fuzz:
	FUZZTIME=$(FUZZTIME) tools/fuzz.sh

nats: bin/nats

bin/nats: tools/go.mod tools/go.sum
	mkdir -p bin
	cd tools && GOWORK=off go build -o ../bin/nats $(NATSCLI)

# OCI images built offline (tools/README.md): bin/mkbase writes the base (passwd/group with nonroot
# 65532, the host's CA bundle, /tmp) into the OCI layout $$KOCACHE/img, where ko finds it by digest
# instead of pulling one from a registry; ko (pinned in tools/go.mod) then writes one tarball per
# image into IMAGES_DIR, and digests.txt: name, reference@manifest digest (what ko resolve and a
# push use), image id (the config digest, which podman load shows). Each service builds from its
# own go.mod (GOWORK=off, like make test's vet); nats-server from shared/, which requires v2.15.2;
# store (the compose deployment's FerretDB) from deployments/compose, receiver from examples/receiver.
# The digests are reproducible for a given CA bundle and source tree (IMAGES=1 go test ./images
# in tools builds twice and compares). Load one with `podman load -i .data/images/executor.tar`.
IMAGES_DIR ?= .data/images
IMAGES_KOCACHE ?= .data/ko
IMAGES_REPO ?= registry.invalid/policyhooks
images:
	mkdir -p bin $(IMAGES_DIR) $(IMAGES_KOCACHE)
	cd tools && GOWORK=off go build -o ../bin/mkbase ./mkbase && GOWORK=off go build -o ../bin/ko github.com/google/ko
	@dir=$$(cd $(IMAGES_DIR) && pwd); ko=$(CURDIR)/bin/ko; \
	export GOWORK=off KOCACHE=$$(cd $(IMAGES_KOCACHE) && pwd); \
	base=$$(bin/mkbase -layout "$$KOCACHE/img"); \
	export KO_DEFAULTBASEIMAGE=localhost/policyhooks-base@$$base; \
	echo "base $$KO_DEFAULTBASEIMAGE -" > "$$dir/digests.txt.new"; \
	for s in config callback executor console nats-server store receiver; do \
		echo "== image $$s"; \
		case $$s in \
		nats-server) ref=$$(cd shared && KO_DOCKER_REPO=$(IMAGES_REPO)/nats-server $$ko build --push=false --platform=linux/amd64 --bare --tarball "$$dir/$$s.tar" github.com/nats-io/nats-server/v2);; \
		store) ref=$$(cd deployments/compose && KO_DOCKER_REPO=$(IMAGES_REPO) $$ko build --push=false --platform=linux/amd64 -B --tarball "$$dir/$$s.tar" ./store);; \
		receiver) ref=$$(cd examples/receiver && KO_DOCKER_REPO=$(IMAGES_REPO) $$ko build --push=false --platform=linux/amd64 -B --tarball "$$dir/$$s.tar" .);; \
		*) ref=$$(cd services/$$s && KO_DOCKER_REPO=$(IMAGES_REPO) $$ko build --push=false --platform=linux/amd64 -B --tarball "$$dir/$$s.tar" .);; \
		esac; \
		id=$$(tar -xOf "$$dir/$$s.tar" manifest.json | sed -E 's/.*"Config":"([^"]*)".*/\1/'); \
		echo "$$s $$ref $$id" >> "$$dir/digests.txt.new"; \
	done; \
	mv "$$dir/digests.txt.new" "$$dir/digests.txt"; \
	cat "$$dir/digests.txt"; ls -l "$$dir"

# deployments/compose under podman-compose (deployments/compose/README.md): brings compose.yaml up
# from the images of make images, runs the README walkthrough, SIGKILLs the NATS container leading
# the stream under load and checks every request; about 3 minutes. Needs root, podman,
# podman-compose and runc (apt-get install podman podman-compose runc).
compose:
	cd deployments/compose && COMPOSE=1 IMAGES_DIR=$(abspath $(IMAGES_DIR)) go test -count=1 -timeout 15m -run TestComposeUp -v .
