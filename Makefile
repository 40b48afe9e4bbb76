# kvproxy. `make run` starts the proxy on its embedded store; `make test` runs
# the whole suite against real servers that it starts and stops itself.
GO          ?= go
PKGS        ?= ./...
GOTESTFLAGS ?=
BIN         := bin/kvproxy
HARNESS     := tests/harness/with-servers.sh
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)

.PHONY: all build run test bench fuzz soak lint proto tidy clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kvproxy

# The embedded default: local KV store in ./data, clients on 127.0.0.1:6432,
# admin on 127.0.0.1:9187, phase kv-only. Extra flags: make run ARGS='...'
run: build
	./$(BIN) serve $(ARGS)

# A live migration on a throwaway PostgreSQL in one to two minutes: passthrough,
# dual-write, backfill, verify, cutover, finalize under simulated lakeFS load,
# then kvproxy left running until Ctrl-C (DEMO_EXIT=1: stop at the end).
.PHONY: demo
demo: build
	$(GO) build -o bin/legacysim ./tests/legacy/cmd/legacysim
	$(GO) build -o bin/legacygen ./tests/legacygen/cmd/legacygen
	deploy/demo/demo.sh

# Whole suite (or PKGS/GOTESTFLAGS) with a throwaway PostgreSQL and dynalite.
test:
	$(HARNESS) $(GO) test -count=1 -timeout 19m $(GOTESTFLAGS) $(PKGS)

# Go benchmarks and the comparison scripts under tests/bench, one run.
bench: build
	$(HARNESS) tests/bench/run.sh

# Every fuzz target for FUZZTIME each (default 60s).
fuzz:
	tests/fuzz/run.sh

# Long soak tests; not part of make test.
soak: build
	$(HARNESS) $(GO) test -count=1 -timeout 60m -tags soak -run Soak $(GOTESTFLAGS) ./tests/...

lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Regenerate protobuf code (needs protoc: apt-get install protobuf-compiler).
proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 2; }
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	protoc --plugin=protoc-gen-go=bin/protoc-gen-go --go_out=. --go_opt=paths=source_relative refstore/graveler/graveler.proto

tidy:
	$(GO) mod tidy

clean:
	rm -rf bin
