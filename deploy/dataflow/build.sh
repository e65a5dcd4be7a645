#!/usr/bin/env bash
# Builds lemon's worker image (deploy/dataflow/Dockerfile, or Dockerfile.cuda with --cuda),
# copies the lemon binary out of it to deploy/out/lemon-worker (the --worker_binary to stage:
# built against the image's glibc), and with --push pushes the image to its registry.
#
#   deploy/dataflow/build.sh [--cuda] [--push] [--dry-run] IMAGE
#
# IMAGE is e.g. us-docker.pkg.dev/PROJECT/lemon/worker:0.1.0. --dry-run prints the commands.
set -euo pipefail
cd "$(dirname "$0")/../.."

dockerfile=deploy/dataflow/Dockerfile
push=0
dry_run=0
image=""
while (($#)); do
  case "$1" in
    --cuda) dockerfile=deploy/dataflow/Dockerfile.cuda ;;
    --push) push=1 ;;
    --dry-run) dry_run=1 ;;
    -*) echo "build.sh: unknown flag $1" >&2; exit 2 ;;
    *) image="$1" ;;
  esac
  shift
done
if [[ -z "$image" ]]; then
  echo "usage: deploy/dataflow/build.sh [--cuda] [--push] [--dry-run] IMAGE" >&2
  exit 2
fi

step() {
  printf '%q ' "$@"
  echo
  ((dry_run)) || "$@"
}
step docker build -f "$dockerfile" -t "$image" .
step mkdir -p deploy/out
if ((dry_run)); then
  echo "id=\$(docker create $image) && docker cp \$id:/opt/lemon/bin/lemon deploy/out/lemon-worker && docker rm \$id"
else
  id=$(docker create "$image")
  docker cp "$id:/opt/lemon/bin/lemon" deploy/out/lemon-worker
  docker rm "$id" >/dev/null
fi
((push)) && step docker push "$image"
echo "build.sh: image $image; worker binary deploy/out/lemon-worker"
