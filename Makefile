# kforge — build, test, lint. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X kforge.dev/kforge/cmd/kforge/app.Version=$(VERSION) -X kforge.dev/kforge/cmd/kforge/app.Commit=$(COMMIT)

.PHONY: all build test test-unit test-kubectl test-e2e lint deps demo demo-down clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kforge ./cmd/kforge

# Installs what the tests need (apt packages, Go modules) when missing.
deps:
	./hack/install-deps.sh
	$(GO) mod download

# Everything CI runs: prerequisites, lint, unit and integration tests with
# the race detector, the kubectl suite, then the end-to-end tests on the lab.
test: deps lint test-unit test-kubectl test-e2e

test-unit:
	$(GO) test -race -count=1 ./...

# The real kubectl (test/kubectl, its own module) against `kforge local up`.
# Building kubectl takes minutes the first time; the suite then ~1 minute.
test-kubectl: build
	cd test/kubectl && KFORGE_KUBECTL=1 KFORGE_BINARY=$(CURDIR)/bin/kforge $(GO) test -count=1 -timeout 20m -v .

test-e2e: build
	KFORGE_E2E=1 KFORGE_BINARY=$(CURDIR)/bin/kforge $(GO) test -count=1 -timeout 20m -v ./test/e2e/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Today: boots the local lab (seven hosts) and says how to reach it. The
# installer (`kforge up` on DIR/cluster.yaml) joins this when it lands.
demo: build
	./bin/kforge lab up --dir kforge-lab
	@echo
	@echo "The lab is up. Try:"
	@echo "  ./bin/kforge lab status"
	@echo "  ./bin/kforge lab ssh m1"
	@echo "  ./bin/kforge lab ssh w1 -- ctr -n k8s.io run --rm --cpu-shares 0 docker.io/library/busybox:local t1 echo hello"
	@echo "  ssh -i kforge-lab/ssh/id_ed25519 -o UserKnownHostsFile=kforge-lab/ssh/known_hosts root@198.18.0.11"
	@echo "Stop it with: ./bin/kforge lab down   (or make demo-down)"

demo-down: build
	./bin/kforge lab down --dir kforge-lab

clean:
	rm -rf bin
