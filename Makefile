# kforge — build, test, lint. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# -s -w: no symbol table or DWARF (117 → 82 MiB; stack traces keep their
# function names and lines, which live in the pclntab). DEBUG=1 keeps them.
LDFLAGS := -X kforge.dev/kforge/cmd/kforge/app.Version=$(VERSION) -X kforge.dev/kforge/cmd/kforge/app.Commit=$(COMMIT)
ifeq ($(DEBUG),)
LDFLAGS += -s -w
endif

.PHONY: all build test test-unit test-fuzz test-kubectl test-helm test-e2e chaos lint deps demo demo-down clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kforge ./cmd/kforge

# Installs what the tests need (apt packages, Go modules) when missing.
deps:
	./hack/install-deps.sh
	$(GO) mod download

# Everything CI runs: prerequisites, lint (gofmt, vet, staticcheck), unit and integration tests with
# the race detector, the kubectl and Helm suites, then the end-to-end tests on the lab.
test: deps lint test-unit test-fuzz test-kubectl test-helm test-e2e

test-unit:
	$(GO) test -race -count=1 -timeout 30m ./...

# Each apiserver fuzzer runs for FUZZTIME beyond its seeds (which every
# go test replays); a 5xx or a panic fails it. About 2 minutes of CPU in
# all, most of it the fuzz-instrumented build (cached after the first run).
FUZZTIME ?= 10s
APISERVER_FUZZERS := FuzzDecodeBody FuzzCreateHandler FuzzPatchHandler FuzzPutHandler FuzzDeleteHandler FuzzRequestURL
test-fuzz:
	set -e; for f in $(APISERVER_FUZZERS); do $(GO) test -count=1 -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./controlplane/apiserver; done

# The real kubectl (test/kubectl, its own module) against `kforge local up`.
# Building kubectl takes minutes the first time; the suite then ~1 minute.
test-kubectl: build
	cd test/kubectl && KFORGE_KUBECTL=1 KFORGE_BINARY=$(CURDIR)/bin/kforge $(GO) test -count=1 -timeout 20m -v .

# The real Helm 4 client (test/helm, its own module) against `kforge local
# up`: install, upgrade, rollback and uninstall of testdata/demo. Building
# Helm takes minutes the first time.
test-helm: build
	cd test/helm && KFORGE_HELM=1 KFORGE_BINARY=$(CURDIR)/bin/kforge $(GO) test -count=1 -timeout 20m -v .

test-e2e: build
	KFORGE_E2E=1 KFORGE_BINARY=$(CURDIR)/bin/kforge $(GO) test -count=1 -timeout 20m -v ./test/e2e/...

# The chaos suite (test/chaos): boots a lab of its own, installs the
# cluster, injects each fault under a writing and reading client and prints
# what was lost and how long recovery took; the lab always goes down again.
# Only one lab fits on a machine: the lock waits for any other. FAULTS
# picks some (comma-separated, `go run ./test/chaos -list` names them).
CHAOS_LAB ?= /tmp/kforge-chaos-lab
CHAOS_JSON ?= bin/chaos-results.json
FAULTS ?=
chaos: build
	$(GO) build -o bin/kforge-chaos ./test/chaos
	flock /tmp/kforge-lab.lock sh -c '\
	  rc=0; trap "rc=130" INT TERM; \
	  ./bin/kforge lab up --dir $(CHAOS_LAB) && \
	  ./bin/kforge up -f $(CHAOS_LAB)/cluster.yaml --binary bin/kforge && \
	  ./bin/kforge-chaos -lab $(CHAOS_LAB) -kforge bin/kforge -json $(CHAOS_JSON) $(if $(FAULTS),-faults $(FAULTS)) || rc=$$?; \
	  ./bin/kforge lab down --dir $(CHAOS_LAB) || rc=1; \
	  exit $$rc'

# staticcheck is pinned; `go run` builds it once into the module cache.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Boots the local lab (seven hosts), installs the cluster on it with
# `kforge up` (PKI, HA etcd, apiservers, the lb, scheduler, controller
# manager, node agents), runs examples/web.yaml on the workers and says how
# to reach it. kubectl: the one on PATH, else the real one built from
# test/kubectl (minutes, once).
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo bin/kubectl)
bin/kubectl:
	cd test/kubectl && $(GO) build -o ../../bin/kubectl .

demo: build $(KUBECTL)
	./bin/kforge lab up --dir kforge-lab
	./bin/kforge up -f kforge-lab/cluster.yaml
	$(KUBECTL) --kubeconfig kforge-lab/admin.kubeconfig apply -f examples/web.yaml
	$(KUBECTL) --kubeconfig kforge-lab/admin.kubeconfig rollout status deployment/web --timeout=3m
	@echo
	@echo "The cluster is up and runs a 3-replica web Deployment on the workers. Try:"
	@echo "  $(KUBECTL) --kubeconfig kforge-lab/admin.kubeconfig get nodes,pods -o wide"
	@echo "  ./bin/kforge status -f kforge-lab/cluster.yaml"
	@echo "  ./bin/kforge lab ssh --dir kforge-lab w1 -- busybox wget -qO- http://POD_IP:8080/"
	@echo "  $(KUBECTL) --kubeconfig kforge-lab/admin.kubeconfig logs deployment/web"
	@echo "  $(KUBECTL) --kubeconfig kforge-lab/admin.kubeconfig exec -it deployment/web -- sh"
	@echo "  ./bin/kforge lab ssh --dir kforge-lab w1 -- ctr -n k8s.io containers ls"
	@echo "Stop it with: make demo-down"

demo-down: build
	-./bin/kforge reset -f kforge-lab/cluster.yaml --yes
	./bin/kforge lab down --dir kforge-lab

clean:
	rm -rf bin
