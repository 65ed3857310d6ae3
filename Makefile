# nf4pipe — see README.md. Every target works on a machine with only Go installed,
# except cuda and ptx, which install the CUDA toolkit themselves (Debian), and
# cuda-check, which needs it (lint runs it where the toolkit is, and under CI=true).

GO       ?= go
BIN      := bin
TOOLS    := detect plan quantize place verify
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/nf4pipe/nf4pipe/internal/cli.Version=$(VERSION)
FUZZTIME ?= 6s
# Each new input the fuzzer finds is minimized for at most this many runs of
# the target (go test's default is 60 s, which stalls a short run).
FUZZMINIMIZE ?= 100x
MODEL    ?= testdata/models/llama
OUT      ?= out/$(notdir $(MODEL))-nf4

export CGO_ENABLED ?= 0

.PHONY: all build demo test unit fuzz fuzz-corpus cuda-check bench bench-chain bench-pipeline bench-8b bench-cuda cuda ptx ptx-check synth lint clean verify-exhaustive e2e

all: build

build:
	@mkdir -p $(BIN)
	@for t in $(TOOLS); do \
	  if [ -f cmd/$$t/main.go ]; then $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$t ./cmd/$$t || exit 1; fi; \
	done

# The whole pipeline on the tiny llama shipped in testdata/: ends with the verify
# report and the path of the written checkpoint.
demo: build
	@MODEL=$(MODEL) OUT=$(OUT) BIN=$(BIN) ./scripts/demo.sh

test: lint fuzz unit

# The quantizer's assembly kernels are checked against the pure-Go ones by the
# default run; -tags purego runs the whole package on the Go kernels alone.
unit:
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -tags purego ./pkg/quant ./pkg/verify

# Every 4-bit and nested code against the reference on all 2^32 float32 values (~2 min).
verify-exhaustive:
	NF4PIPE_EXHAUSTIVE=1 $(GO) test -count=1 -run Exhaustive -timeout 1h ./pkg/quant

# Each fuzz target briefly: go test -fuzz takes one target of one package per run.
# The corpus each starts from is its seeds plus testdata/fuzz/<target> (see
# fuzz-corpus). A run whose time ran out while the fuzzer was still gathering
# its baseline ("context deadline exceeded", on a loaded machine) is tried once more.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    for try in 1 2; do \
	      if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg >/tmp/nf4pipe-fuzz.log 2>&1; then \
	        grep -o 'elapsed: [^)]*), new interesting: [0-9]*' /tmp/nf4pipe-fuzz.log | tail -n 1 | sed 's/ ([0-9]*\/sec)//; s/^/  /'; break; \
	      fi; \
	      if [ $$try = 1 ] && grep -q 'context deadline exceeded' /tmp/nf4pipe-fuzz.log; then echo "  retry: fuzzer timed out gathering its baseline"; continue; fi; \
	      cat /tmp/nf4pipe-fuzz.log; exit 1; \
	    done; \
	  done; \
	done

# Fuzz each target for FUZZTIME (say FUZZTIME=2m) and keep the new inputs the
# fuzzer found as seed corpus files in the package's testdata/fuzz/<target>/,
# which go test runs as ordinary test cases and every fuzz run starts from.
# Inputs over 4 KiB are left out to keep the repository small. The target's
# fuzz cache is emptied first so that only this run's finds are kept.
fuzz-corpus:
	@cache=$$($(GO) env GOCACHE)/fuzz; \
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz-corpus $$pkg $$f ($(FUZZTIME))"; \
	    rm -rf $$cache/$$pkg/$$f; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg >/tmp/nf4pipe-fuzz.log 2>&1 || { cat /tmp/nf4pipe-fuzz.log; exit 1; }; \
	    mkdir -p $$dir/testdata/fuzz/$$f; \
	    find $$cache/$$pkg/$$f -type f -size -4k -exec cp {} $$dir/testdata/fuzz/$$f/ \; 2>/dev/null; \
	    echo "  $$(ls $$dir/testdata/fuzz/$$f | wc -l) corpus files"; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The synthetic checkpoint generator and the pass-through stage the benchmarks use.
synth:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/synth ./internal/synth/cmd
	$(GO) build -o $(BIN)/passthru ./internal/passthru/cmd

# Five pass-through processes over pipes on a 4 GiB stream: throughput and peak RSS.
bench-chain: synth
	scripts/bench-chain.sh

# detect | quantize | place on a synthetic TinyLlama-1.1B: wall time and peak RSS per stage.
bench-pipeline: build synth
	scripts/bench-pipeline.sh

# All five stages on a synthetic Llama-3.1-8B (16 GB of disk): peak RSS per stage.
bench-8b: build synth
	PRESET=llama-3.1-8b RUNS=1 EXTRA="plan verify" scripts/bench-pipeline.sh

# The same tools built with CUDA (-tags cuda, cgo). Installs Debian's CUDA 11.8 toolkit
# when nvcc or cuda.h is missing; the binaries need only the NVIDIA driver to run.
cuda:
	scripts/install-cuda-toolkit.sh
	@mkdir -p $(BIN)/cuda
	CGO_ENABLED=1 $(GO) build -tags cuda -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cuda/ $(addprefix ./cmd/,$(TOOLS))

# Regenerate the committed PTX (compute_75) from kernels/*.cu; ptx-check says if it is current.
ptx:
	scripts/install-cuda-toolkit.sh
	scripts/build-ptx.sh

ptx-check:
	scripts/build-ptx.sh --check

# GPU tests, kernel bandwidth and the whole pipeline on the accelerator machine:
# `make bench-cuda` here packs the binaries; on the GPU machine run
# `scripts/bench-cuda.sh run OUTDIR` (see docs/BENCHMARKS.md).
bench-cuda:
	scripts/install-cuda-toolkit.sh
	scripts/bench-cuda.sh pack

# Under CI (CI=true) the CUDA code must be checked: .ci/run installs the toolkit.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags purego ./pkg/quant ./pkg/verify
	@if [ -f /usr/include/cuda.h ]; then $(MAKE) --no-print-directory cuda-check; \
	 elif [ "$$CI" = true ]; then echo "lint: CI run without the CUDA toolkit (scripts/install-cuda-toolkit.sh)"; exit 1; \
	 else echo "go vet -tags cuda: skipped (no cuda.h; make cuda installs the toolkit)"; fi

# The CUDA code (cgo, -tags cuda) vetted, tests included, and compiled and
# linked against the toolkit's headers and libcuda; it needs no GPU, nothing runs.
cuda-check:
	CGO_ENABLED=1 $(GO) vet -tags cuda ./...
	CGO_ENABLED=1 $(GO) build -tags cuda ./...

clean:
	rm -rf $(BIN) out
