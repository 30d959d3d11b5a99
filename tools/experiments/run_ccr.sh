#!/usr/bin/env bash
# Cross-lingual cross-modal retrieval comparison on the synthetic shapes benchmark:
# ccr_one_to_k, ccr_one_to_one, ccr_english_only and ccr_one_to_one_matched x seeds 0 and 1,
# run one after another (never in parallel: the runs are timed), then docs/results.md is
# rewritten by tools/experiments/aggregate_ccr.py.
#
#   tools/experiments/run_ccr.sh                       # all six runs + aggregate
#   EXPERIMENTS=ccr_one_to_k SEEDS=0 tools/experiments/run_ccr.sh trainer.max_steps=20
#
# Extra arguments are passed to every mmret-train command (Hydra overrides).
# Each run dir outputs/ccr/<experiment>/seed<k> also gets run_info.json (command, wall time).
set -euo pipefail
cd "$(dirname "$0")/../.."

TRAIN=${MMRET_TRAIN:-.venv/bin/mmret-train}
PYTHON=${PYTHON:-.venv/bin/python}
EXPERIMENTS=${EXPERIMENTS:-"ccr_one_to_k ccr_one_to_one ccr_english_only ccr_one_to_one_matched"}
SEEDS=${SEEDS:-"0 1"}

for experiment in $EXPERIMENTS; do
  for seed in $SEEDS; do
    run_dir="outputs/ccr/${experiment}/seed${seed}"
    rm -rf "$run_dir"
    cmd=(mmret-train "experiment=${experiment}" "seed=${seed}" "hydra.run.dir=${run_dir}"
         logger.progress_bar=false "$@")
    echo "== ${cmd[*]}"
    start=$(date +%s.%N)
    "$TRAIN" "${cmd[@]:1}"
    end=$(date +%s.%N)
    "$PYTHON" - "$run_dir" "$start" "$end" "${cmd[@]}" <<'PY'
import json, sys
run_dir, start, end, *cmd = sys.argv[1:]
info = {"command": " ".join(cmd), "wall_s": float(end) - float(start)}
with open(f"{run_dir}/run_info.json", "w") as handle:
    json.dump(info, handle, indent=2)
print(f"wall time {info['wall_s']:.1f} s -> {run_dir}")
PY
  done
done

"$PYTHON" tools/experiments/aggregate_ccr.py
