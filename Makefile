# nf4pipe — see README.md. Every target works on a machine with only Go installed,
# except cuda and ptx, which install the CUDA toolkit themselves (Debian).

GO       ?= go
BIN      := bin
TOOLS    := detect plan quantize place verify
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/nf4pipe/nf4pipe/internal/cli.Version=$(VERSION)
FUZZTIME ?= 4s
MODEL    ?= testdata/models/llama
OUT      ?= out/$(notdir $(MODEL))-nf4

export CGO_ENABLED ?= 0

.PHONY: all build demo test unit fuzz bench bench-cuda cuda ptx lint clean

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

test: lint unit fuzz

unit:
	$(GO) test -count=1 ./...

# Each fuzz target briefly: go test -fuzz takes one target of one package per run.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/nf4pipe-fuzz.log 2>&1 || { cat /tmp/nf4pipe-fuzz.log; exit 1; }; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN) out
