#!/usr/bin/env bash
# bench/sample.sh -- a seeded reference sample (--reference-sample) against the self-join it
# stands in for, on the same data, in the same run. A benchmark, not a test: it prints a
# Markdown table (stdout); progress goes to stderr.
#
# It generates N synthetic CLIP-like rows (`lemon dev make-dataset`, clip-retrieval layout,
# float32, SHARDS shards) once into BENCH_DIR, then times two whole `lemon score` processes
# (/usr/bin/time: wall seconds and peak RSS): the self-join (every row against every row) and
# --reference-sample S (every row against S sampled rows). "sample stages" is the time from
# the end of reading to the start of the search in the sampled run (drawing and writing the
# sample), read from lemon's progress lines. The sample's run must not take longer than the
# self-join's: the search is N x S products instead of N x N / 2.
#
# Usage:  bench/sample.sh               # N=200000, S=50000, D=512
#         N=50000 S=10000 D=256 bench/sample.sh
# Environment: N, S, D, SHARDS (8), SEED (1), BENCH_DIR (bench/.cache), LEMON (a prebuilt
#   binary; default: build bin/lemon).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-200000}
S=${S:-50000}
D=${D:-512}
SHARDS=${SHARDS:-8}
SEED=${SEED:-1}
BENCH_DIR=${BENCH_DIR:-$ROOT/bench/.cache}
log() { echo "sample.sh: $*" >&2; }

if [[ -z ${LEMON:-} ]]; then
  log "building bin/lemon"
  (cd "$ROOT" && go build -o bin/lemon ./cmd/lemon)
  LEMON=$ROOT/bin/lemon
fi
[[ -x /usr/bin/time ]] || { log "needs /usr/bin/time (apt-get install time)"; exit 1; }

data=$BENCH_DIR/sample-n$N-d$D
if [[ ! -f $data/.complete ]]; then
  log "generating $N rows of dim $D into $data"
  rm -rf "$data"
  "$LEMON" dev make-dataset --out "$data" --rows "$N" --dim "$D" --shards "$SHARDS" --seed "$SEED" >&2
  touch "$data/.complete"
fi

# run NAME FLAGS...: one timed `lemon score`; sets WALL, RSS_GIB, SEARCH (lemon's search time),
# SAMPLE_STAGES (seconds between the last shard read and the search's first line).
run() {
  local name=$1; shift
  local out=$BENCH_DIR/sample-out-$name log=$BENCH_DIR/sample-$name.log
  rm -rf "$out"
  log "lemon score ($name) $*"
  /usr/bin/time -f "TIME %e %M" "$LEMON" score --input "$data" --output "$out" "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  WALL=$(awk '/^TIME/ {print $2}' "$log")
  RSS_GIB=$(awk '/^TIME/ {printf "%.2f", $3/1048576}' "$log")
  SEARCH=$(sed -n 's/.*neighbour search done in \([0-9.]*\)s.*/\1/p' "$log" | tail -1)
  SAMPLE_STAGES=$(awk '
    function secs(t) { split(t, a, ":"); return a[1]*3600 + a[2]*60 + a[3] }
    / lemon: read input shard / { last = secs($1) }
    / lemon: neighbour search: / && !s { s = secs($1) }
    END { if (last && s) printf "%d", s - last; else printf "-" }' "$log")
}

run self
self_wall=$WALL self_rss=$RSS_GIB self_search=$SEARCH
run sample --reference-sample "$S" --seed "$SEED"
ratio=$(awk -v a="$WALL" -v b="$self_wall" 'BEGIN { printf "%.2f", a / b }')

echo "| run | N | reference rows | D | wall s | search s | sample stages s | peak RSS GiB | wall / self-join wall |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "| self-join | $N | $N | $D | $self_wall | $self_search | - | $self_rss | 1.00 |"
echo "| --reference-sample $S | $N | $S | $D | $WALL | $SEARCH | $SAMPLE_STAGES | $RSS_GIB | $ratio |"
awk -v r="$ratio" 'BEGIN { exit !(r <= 1) }' || log "the sampled run took longer than the self-join"
