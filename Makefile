# lemon: build, try, test. `make help` lists the targets.
GO ?= go
DEMO_DIR ?= out/demo

# staticcheck runs from the module proxy at a pinned version (one that supports Go 1.26).
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build demo setup test test-short check bench-knn bench-sample bench-embed clean

help:
	@echo "make demo       build bin/lemon, generate a small synthetic dataset, score it (prism, in-process)"
	@echo "make test       install test dependencies (scripts/setup.sh) and run the whole test suite"
	@echo "make test-short the inner loop (under 3 minutes): go test -short, which skips the reference"
	@echo "                checks against Python (Pillow, scikit-learn, the PyTorch export) and the"
	@echo "                CLI's longest runs (embedding, the standalone job server, the sweep over"
	@echo "                block sizes and shard counts, the plan-against-run measurement)"
	@echo "make check      gofmt, go vet and staticcheck over the whole module"
	@echo "make build      build bin/lemon"
	@echo "make bench-knn  neighbour-search benchmark against FAISS (see README)"
	@echo "make bench-sample  a seeded reference sample (--reference-sample) against the self-join, same data"
	@echo "make bench-embed  embedding-stage throughput: raw ONNX Runtime vs end to end from JPEG bytes, and the"
	@echo "                int8 encoders' (lemon quantize) speed-up and cosine to float32"

build:
	$(GO) build -o bin/lemon ./cmd/lemon

demo: build
	rm -rf $(DEMO_DIR)
	bin/lemon dev make-dataset --out $(DEMO_DIR)/data --rows 2000 --shards 4
	bin/lemon score --input $(DEMO_DIR)/data --output $(DEMO_DIR)/result --scores-format csv
	@echo "scores: $(DEMO_DIR)/result/scores/  kept/rejected/errors: $(DEMO_DIR)/result/  manifest: $(DEMO_DIR)/result/manifest.json"

setup:
	scripts/setup.sh

test: setup
	$(GO) test -timeout 30m ./...

test-short:
	$(GO) test -short -timeout 10m ./...

check:
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt -l: not formatted:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

bench-knn: build
	bench/knn.sh

bench-sample: build
	LEMON=bin/lemon bench/sample.sh

bench-embed: setup
	$(GO) run ./bench/embed -rows 256 -batch 32

clean:
	rm -rf bin out
