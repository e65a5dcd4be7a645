#!/usr/bin/env bash
# Submits `lemon score` to a Flink cluster through Beam's Flink job server (deploy/flink/
# compose.yaml starts one). Settings come from a config (default configs/flink.env, every
# variable overridable from the environment); flags after -- go to lemon score as they are.
#
#   deploy/flink/submit.sh [--dry-run] [--config FILE] [-- extra lemon score flags]
#
# --dry-run prints the exact command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/../.."

config=configs/flink.env
dry_run=0
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --config) config="$2"; shift ;;
    --) shift; break ;;
    *) echo "submit.sh: unknown argument $1 (flags for lemon go after --)" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=/dev/null
source "$config"

cmd=("$LEMON" score --config "$LEMON_CONFIG"
  --input "$INPUT" --output "$OUTPUT" --temp-dir "$TEMP_DIR"
  --runner flink --endpoint "$JOB_SERVER"
  --environment_type "$ENVIRONMENT_TYPE" --environment_config "$ENVIRONMENT_CONFIG"
  --worker_binary "$WORKER_BINARY" --parallelism "$PARALLELISM"
  "$@")

if ((dry_run)); then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
