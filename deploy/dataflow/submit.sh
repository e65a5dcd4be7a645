#!/usr/bin/env bash
# Submits `lemon score` to Dataflow. Settings come from a config (default
# configs/dataflow-gpu.env; every variable can be overridden from the environment); flags
# after -- go to lemon score as they are (e.g. -- --dry_run to print the Dataflow job without
# submitting it, -- --async to return once it is submitted).
#
#   deploy/dataflow/submit.sh [--dry-run] [--config FILE] [-- extra lemon score flags]
#
# --dry-run prints the exact lemon command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/../.."

config=configs/dataflow-gpu.env
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
  --runner dataflow --project "$PROJECT" --region "$REGION"
  --staging_location "$STAGING" --temp_location "$STAGING/tmp"
  --sdk_container_image "$IMAGE" --worker_binary "$WORKER_BINARY"
  --worker_machine_type "$MACHINE_TYPE" --max_num_workers "$MAX_WORKERS"
  --number_of_worker_harness_threads "$HARNESS_THREADS" --disk_size_gb "$DISK_GB"
  --knn-backend "$KNN_BACKEND")
if [[ -n "${SERVICE_OPTIONS:-}" ]]; then
  cmd+=(--dataflow_service_options "$SERVICE_OPTIONS")
fi
cmd+=("$@")

if ((dry_run)); then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
