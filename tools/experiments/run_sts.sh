#!/usr/bin/env bash
# The sentence-embedding comparison (docs/results.md, sts section): every sts_* experiment x
# seeds 0 and 1, first the CPU-sized setting (mmret-tiny's text tower on the shapes captions),
# then all-MiniLM-L6-v2 on the STS-B training sentences; strictly sequential (the runs are
# timed), then docs/results.md's sts section is rewritten by aggregate_sts.py.
#
#   tools/experiments/run_sts.sh
#   SETTINGS=tiny SEEDS=0 tools/experiments/run_sts.sh trainer.max_steps=20
#
# Extra arguments are Hydra overrides for every run. SHAPES_ROOT: the shapes benchmark.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
SETTINGS=${SETTINGS:-"tiny minilm"}
SEEDS=${SEEDS:-"0 1"}
SHAPES_ROOT=${SHAPES_ROOT:-data/shapes}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

for setting in $SETTINGS; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$PYTHON" tools/experiments/run_sts.py "$setting" --seeds $SEEDS --shapes-root "$SHAPES_ROOT" "$@"
  echo "== $setting: $(( $(date +%s) - start )) s"
done
"$PYTHON" tools/experiments/aggregate_sts.py
