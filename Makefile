# Custos: run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Go toolchain every target builds and tests with, fetched once from the Go module proxy: it
# carries the standard-library security fixes govulncheck asks for (go1.26.8 has 12 called
# vulnerabilities; `make vulncheck`). The modules still declare go 1.26.
export GOTOOLCHAIN := go1.27.3

# Build tags of every build and test. disable_grpc_modules leaves out the GCS client's gRPC
# DirectPath (xDS, RLS): Custos speaks GCS's JSON/XML API. The binaries are 18 MB smaller and
# start about 15 ms sooner (docs/performance.md). A plain `go build` without it works the same.
GO_TAGS := disable_grpc_modules
export GOFLAGS := -tags=$(GO_TAGS)

# Linker flags of the binaries `make build` makes, as the container image builds them: no symbol
# table or DWARF. The CLI is 27 MB smaller and starts about 10 ms sooner; stack traces and CPU
# profiles keep their function names. `make build LDFLAGS=` keeps everything, for a debugger.
LDFLAGS ?= -s -w

# Every Go module of the workspace; deploy/tools is a separate tool module outside go.work.
MODULES := proto pkg pkg/target/rclone services/worker services/cli services/scheduler tests
BIN     := bin
GOTEST  ?= go test
TEST_TIMEOUT ?= 15m

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build every binary into bin/ (bin/custos is the admin CLI)
	@mkdir -p $(BIN)
	cd services/cli && go build -ldflags '$(LDFLAGS)' -o ../../$(BIN)/custos .
	cd services/worker && go build -ldflags '$(LDFLAGS)' -o ../../$(BIN)/custos-worker .
	cd services/scheduler && go build -ldflags '$(LDFLAGS)' -o ../../$(BIN)/custos-scheduler .

.PHONY: demo
demo: build ## Run the whole pipeline on the embedded default (state under .demo/)
	$(BIN)/custos demo --dir .demo

.PHONY: run
run: build ## Run Custos on this machine: broker, worker, scheduler, metrics and status page (state under .custos/)
	$(BIN)/custos server --dir .custos

.PHONY: emulators
emulators: ## Install the pinned emulators (S3, GCS, Azure), PostgreSQL and headless Chromium the tests need, cached in .cache/
	@# In parallel: a cold install is mostly module and package downloads.
	@pids=""; for s in deploy/emulators/*/install.sh deploy/postgres/install.sh; do \
		if [ -f "$$s" ]; then bash "$$s" & pids="$$pids $$!:$$s"; fi; done; \
	fail=0; for p in $$pids; do wait $${p%%:*} || { echo "$${p#*:} failed"; fail=1; }; done; exit $$fail

.PHONY: conformance
conformance: emulators ## Run the target conformance suite against every target: one CONFORMANCE line each
	@bash deploy/conformance.sh

.PHONY: demo-clouds
demo-clouds: build emulators ## The demo with one replica each in the S3, GCS and Azure emulators, an SFTP server and local disk
	$(BIN)/custos demo --clouds --dir .demo

.PHONY: vulncheck
vulncheck: ## govulncheck every module against the pinned offline vulnerability database (built into .cache/)
	@bash deploy/vulncheck/run.sh

.PHONY: k8s-check
k8s-check: ## Lint, render and validate the Helm chart and deploy/ (pinned helm, kubeconform, offline schemas), check alert rules and dashboard
	@bash deploy/k8s/check.sh

.PHONY: test
test: generate-check lint emulators vulncheck k8s-check ## Check generated code and layers, install emulators, scan for called vulnerabilities, run every test with -race
	$(GOTEST) -race -count=1 -timeout $(TEST_TIMEOUT) $(addsuffix /...,$(addprefix ./,$(MODULES)))

# BENCH_FLAGS passes flags to tests/cmd/bench: "-only peer" runs only the restic comparison,
# "-peer=false" skips it, "-records 100000" sizes its data set, "-peer-rounds 5" makes five full
# backups of each kind instead of three (docs/performance.md).
BENCH_FLAGS ?=
.PHONY: bench
bench: build emulators ## BENCH lines against same-run baselines and restic (installed by the bench); BENCH_FLAGS="-only peer" or "-peer=false"
	cd tests && go run ./cmd/bench -worker-bin ../$(BIN)/custos-worker -cli-bin ../$(BIN)/custos $(BENCH_FLAGS)

.PHONY: generate
generate: ## Regenerate Go code from proto/ (pure Go, no protoc needed)
	cd deploy/tools && GOWORK=off GOFLAGS=-mod=mod go run ./protogen -I ../../proto -out ../../proto custos/v1/events.proto

.PHONY: generate-check
generate-check: generate ## Fail if the committed generated code is stale
	@git diff --exit-code -- proto/ || { echo "generated code in proto/ is stale: run 'make generate' and commit"; exit 1; }

.PHONY: lint
lint: ## gofmt, go vet, layer rules, go directives, standalone and cgo-free builds of each module
	@out=$$(gofmt -l $(MODULES) deploy/tools deploy/vulncheck); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(addsuffix /...,$(addprefix ./,$(MODULES)))
	@bash deploy/lint-layers.sh
	@for m in services/worker services/cli services/scheduler; do (cd $$m && GOWORK=off go build -o /dev/null . ) || { echo "$$m does not build alone (GOWORK=off)"; exit 1; }; done
	@for m in services/worker services/cli services/scheduler; do (cd $$m && CGO_ENABLED=0 go build -o /dev/null . ) || { echo "$$m does not build without cgo, as deploy/docker/Dockerfile builds it"; exit 1; }; done

.PHONY: tidy
tidy: ## go mod tidy in every module, then sync the workspace
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done
	go work sync

.PHONY: clean
clean: ## Remove build output and demo state
	rm -rf $(BIN) .demo
