#!/usr/bin/env bash
# Did the 0.3 re-layout (flat modules -> stage packages) slow anything down? Runs the speed benchmarks of the
# tree BEFORE the move (a git worktree of the last flat commit) and of this tree, interleaved, in one session on
# one machine, and prints each benchmark's JSON line. Usage: benchmarks/research/layout_check.sh [BEFORE_COMMIT]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BEFORE=${1:-b9056ef}
TMP=$(mktemp -d)
ln -s "$(cd "$REPO/.." && pwd)/shared" "$TMP/shared"  # the benchmarks find ../shared/data beside the tree
WT=$TMP/before
git -C "$REPO" worktree add -f --detach "$WT" "$BEFORE" >/dev/null 2>&1
trap 'git -C "$REPO" worktree remove --force "$WT"' EXIT
PY="$REPO/.venv/bin/python"
for round in 1 2; do
  for side in before after; do
    if [ $side = before ]; then root=$WT; else root=$REPO; fi
    for bench in "collate.py --batches 60 --repeats 2" "prepare.py --chars 2000000 --skip-single" \
                 "train_step.py --steps 5 --configs small:fp32"; do
      set -- $bench
      line=$(cd "$root" && PYTHONPATH="$root/src" BERTWWM_SHARED_DATA="$REPO/../shared/data" \
             "$PY" "benchmarks/$1" "${@:2}" 2>/dev/null | tail -1)
      echo "{\"round\": $round, \"tree\": \"$side\", \"benchmark\": \"$1\", \"result\": $line}"
    done
  done
done
