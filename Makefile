# The verbs a newcomer looks for. `make run` and `make test` are all you need.
GO    ?= go
TOOLS := $(GO) tool -modfile=tools/go.mod
BUF   := $(TOOLS) buf

.PHONY: run test build lint proto check-generated console-assets console-screenshots bench bench-import bench-claims bench-http bench-floor bench-group-commit pgo-profile bench-cluster drill drill-cluster cluster cluster-down services clean

## run: bring up Postgres and Redis if needed, migrate, serve with a demo pool
run:
	scripts/run-demo.sh

## test: the whole suite against real Postgres and Redis (started if needed)
test: services
	$(GO) test -race -count=1 ./...

## build: bin/dispenserd and bin/dispenserctl
build:
	$(GO) build -o bin/ ./cmd/...

## services: make sure Postgres and Redis answer (install and start if not)
services:
	scripts/services.sh

## lint: golangci-lint (.golangci.yml: formatting, imports, vet, staticcheck, errorlint, unparam), buf lint and buf format
lint:
	$(GO) tool -modfile=tools/golangci/go.mod golangci-lint run ./...
	$(BUF) lint
	$(BUF) format --diff --exit-code

## proto: regenerate the Go code from proto/
proto:
	$(BUF) generate

## console-assets: copy the console's pinned npm packages (htmx) into console/static
console-assets:
	scripts/console-assets.sh

## console-screenshots: run the console's browser test, writing a screenshot of each page into docs/console
console-screenshots: services
	DISPENSER_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(GO) test -count=1 -run TestConsoleEndToEnd ./console/

## check-generated: fail if generated code, the console's assets or go.mod is not current
check-generated: proto console-assets
	$(GO) mod tidy
	git diff --exit-code -- proto console/static go.mod go.sum || { echo "generated code, console assets or go.mod is stale: run 'make proto console-assets' and 'go mod tidy'"; exit 1; }

## bench: the claim benchmark (dispenser-bench claims, ghz, the classic claim under pgbench, fallback only) and the 1M-code import benchmark, on a private stock-settings cluster
bench: services
	scripts/bench-claims.sh
	scripts/bench-import.sh

## bench-claims: dispenser-bench claims and ghz against dispenserd, the classic claim under pgbench, the fallback-only mode, and the calls after the sell-out
bench-claims: services
	scripts/bench-claims.sh

## pgo-profile: take cmd/dispenserd/default.pgo again, the CPU profile of a ghz flash sale that go build optimizes dispenserd with
pgo-profile: services
	scripts/pgo-profile.sh

## bench-floor: what a claim costs dispenserd beyond gRPC's serving of a call (Health/Check, a claim on no pool, a sale), by process
bench-floor: services
	scripts/bench-floor.sh

## bench-group-commit: the group commit's statement alone under pgbench, batches of 5, 25 and 50: Postgres CPU per claim and per batch
bench-group-commit: services
	scripts/bench-group-commit.sh

## bench-http: the same claim load over HTTP/JSON and gRPC, side by side, with CPU per call
bench-http: services
	scripts/bench-http.sh

## drill: kill -9 the server under load, restart it, reconcile and audit
drill: services
	scripts/drill-kill.sh

## bench-cluster: the claim bench on one node, on the local cluster (3 replicas) and on one replica of it, side by side
bench-cluster: services
	scripts/bench-cluster.sh

## cluster: a local Redis Cluster (3+3), PgBouncer and 3 dispenserd replicas (scripts/cluster.sh)
cluster: services
	scripts/cluster.sh up

## cluster-down: stop the local cluster and remove its data
cluster-down:
	scripts/cluster.sh down

## drill-cluster: a claim storm over the local cluster while a replica, a Redis master and Postgres backends die; then audit
drill-cluster: services
	scripts/drill-cluster.sh

## bench-import: import 1,000,000 codes through dispenserd, beside a raw CopyFrom
bench-import: services
	scripts/bench-import.sh

clean:
	rm -rf bin
