# pgrules — see README.md. The two commands a newcomer needs: make demo, make test.
GO ?= go
PKGS := ./...

.PHONY: demo test vet bench fuzz fuzz-targets build deps-demo deps-test deps-bench fmt clean

build:
	$(GO) build -o bin/pgrules ./cmd/pgrules

demo: deps-demo
	$(GO) run ./cmd/pgrules demo

test: deps-test vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

# make fuzz FUZZTIME=30m: the differential logic fuzzer on new seeds
# (tests/logicfuzz_test.go); make test runs its fixed seeds.
FUZZTIME ?= 10m
fuzz: deps-test
	$(GO) test -count=1 -timeout 0 ./tests -run '^TestLogicFuzz$$' -v -args -fuzz.duration=$(FUZZTIME) $(FUZZFLAGS)

# make fuzz-targets FUZZTIME=5m: each Go fuzz target (go test -fuzz) in turn,
# FUZZTIME each; FUZZTARGETS="pkg:Target ..." picks some. make test runs
# their seeds and testdata/fuzz corpora. A failing input is written to the
# package's testdata/fuzz/<Target>/, where it stays as a regression seed.
FUZZTARGETS ?= ./proxy:FuzzMsgReader ./proxy:FuzzStartupPacket ./proxy:FuzzUpstreamBodies \
	./sqlparse:FuzzParse ./rules:FuzzStatementPath ./rules/compiler:FuzzCompileExpression
fuzz-targets:
	@set -e; for t in $(FUZZTARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -count=1 -timeout 0 -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

bench: deps-bench
	$(GO) run ./bench $(BENCHFLAGS)

deps-demo:
	@scripts/deps.sh demo
deps-test:
	@scripts/deps.sh test
deps-bench:
	@scripts/deps.sh bench

clean:
	rm -rf bin
