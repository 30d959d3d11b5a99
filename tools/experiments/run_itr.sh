#!/usr/bin/env bash
# CUSA comparison on the synthetic shapes benchmark (docs/results.md, CUSA section):
#   1. the offline SSL image teacher, trained once on the shapes *training* images
#      (data/teachers/shapes_ssl), and the teacher-feature cache of the training split
#      (data/teachers/shapes_train.safetensors; SSL image teacher + MiniLM text teacher);
#   2. itr_contrastive, itr_csa, itr_usa, itr_cusa x SEEDS (identical apart from the objective);
#   3. the cross-combination ccr_one_to_k_csa against ccr_one_to_k (CCR_SEEDS, CCR_STEPS);
# one run after another (never in parallel: the runs are timed), then
# tools/experiments/aggregate_itr.py rewrites the CUSA section of docs/results.md.
#
#   tools/experiments/run_itr.sh                         # everything
#   EXPERIMENTS=itr_cusa SEEDS=0 CCR_EXPERIMENTS= tools/experiments/run_itr.sh trainer.max_steps=5
#
# data/shapes must exist (mmret-synth, or a symlink to a generated copy). Extra arguments go
# to every mmret-train command. Each run dir gets run_info.json (command, wall time).
set -euo pipefail
cd "$(dirname "$0")/../.."

TRAIN=${MMRET_TRAIN:-.venv/bin/mmret-train}
PYTHON=${PYTHON:-.venv/bin/python}
CACHE_TOOL=${MMRET_TEACHER_CACHE:-"$PYTHON -m mmret.teachers.cli"}  # = mmret-teacher-cache
EXPERIMENTS=${EXPERIMENTS-"itr_contrastive itr_csa itr_usa itr_cusa"}
SEEDS=${SEEDS:-"0 1 2"}
CCR_EXPERIMENTS=${CCR_EXPERIMENTS-"ccr_one_to_k ccr_one_to_k_csa"}
CCR_SEEDS=${CCR_SEEDS:-"0"}
CCR_STEPS=${CCR_STEPS:-150}
ANNOTATION=data/shapes/karpathy/dataset_shapes.json

if [ ! -f data/teachers/shapes_ssl/teacher.json ]; then
  echo "== SSL image teacher (shapes training images only)"
  "$PYTHON" -m mmret.teachers.ssl --annotation "$ANNOTATION" --image-root data/shapes \
    --split train --out data/teachers/shapes_ssl --steps 300 --batch-size 128 --seed 0
fi
echo "== mmret-teacher-cache (train split)"
$CACHE_TOOL --annotation "$ANNOTATION" --image-root data/shapes --split train \
  --image-teacher ssl:data/teachers/shapes_ssl --text-teacher minilm \
  --out data/teachers/shapes_train.safetensors --no-progress

timed_run() {  # run_dir, overrides...
  local run_dir=$1; shift
  rm -rf "$run_dir"
  local cmd=(mmret-train "$@" "hydra.run.dir=${run_dir}" logger.progress_bar=false)
  echo "== ${cmd[*]}"
  local start end
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
}

for seed in $SEEDS; do  # seeds outer: every objective has seed 0 before any has seed 1
  for experiment in $EXPERIMENTS; do
    timed_run "outputs/itr/${experiment}/seed${seed}" "experiment=${experiment}" "seed=${seed}" "$@"
  done
done
for experiment in $CCR_EXPERIMENTS; do
  for seed in $CCR_SEEDS; do
    timed_run "outputs/itr/${experiment}/seed${seed}" "experiment=${experiment}" "seed=${seed}" \
      "trainer.max_steps=${CCR_STEPS}" "trainer.warmup_steps=20" "trainer.num_threads=1" "$@"
  done
done

"$PYTHON" tools/experiments/aggregate_itr.py
