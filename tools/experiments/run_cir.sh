#!/usr/bin/env bash
# Composed image retrieval comparison on the synthetic shapes benchmark (docs/results.md):
# one stage-1 run (cir_stage1), then cir_stage2_bank, cir_stage2_bank_generated and the
# in-batch control cir_stage2_inbatch, each from that stage-1 run, x seeds 1 2 3, strictly
# one after another (the runs are timed), then tools/experiments/aggregate_cir.py.
#
#   tools/experiments/run_cir.sh                                  # everything + aggregate
#   DATA_ROOT=/work/main/data/shapes tools/experiments/run_cir.sh
#   STAGE2="cir_stage2_bank" SEEDS=1 tools/experiments/run_cir.sh trainer.max_steps=5
#
# Extra arguments go to every mmret-train command (Hydra overrides). Sizes (CPU_SIZE_*)
# keep each run within ~2 minutes on a busy 2-core machine; set them empty for the
# experiment files' own sizes. The first stage-2 run builds the bank into the stage-1 run
# folder (outputs/cir/stage1/bank.safetensors); the later ones load it.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
TRAIN=${MMRET_TRAIN:-"$PYTHON -m mmret.train"}
DATA_ROOT=${DATA_ROOT:-data/shapes}
OUT=${OUT:-outputs/cir}
STAGE2=${STAGE2:-"cir_stage2_bank cir_stage2_inbatch cir_stage2_bank_generated"}
SEEDS=${SEEDS:-"1 2 3"}
SKIP_STAGE1=${SKIP_STAGE1:-0}
read -r -a SIZE1 <<< "${CPU_SIZE_STAGE1-trainer.max_steps=40 trainer.batch_size=32 trainer.warmup_steps=4}"
read -r -a SIZE2 <<< "${CPU_SIZE_STAGE2-trainer.max_steps=60 trainer.batch_size=64 trainer.warmup_steps=6}"
GENERATED="$(pwd)/${OUT}/generated/cirr_train"
COMMON=("data.root=${DATA_ROOT}" "data.train.generated.dir=${GENERATED}"
        logger.progress_bar=false trainer.log_every=10)

timed() {  # timed RUN_DIR CMD...: run CMD, write RUN_DIR/run_info.json (command, wall time)
  local run_dir=$1; shift
  echo "== $*"
  local start end
  start=$(date +%s.%N)
  $TRAIN "${@:2}"
  end=$(date +%s.%N)
  "$PYTHON" - "$run_dir" "$start" "$end" "$@" <<'PY'
import json, sys
run_dir, start, end, *cmd = sys.argv[1:]
info = {"command": " ".join(cmd), "wall_s": float(end) - float(start)}
with open(f"{run_dir}/run_info.json", "w") as handle:
    json.dump(info, handle, indent=2)
print(f"wall time {info['wall_s']:.1f} s -> {run_dir}")
PY
}

stage1="${OUT}/stage1"
if [ "$SKIP_STAGE1" != 1 ]; then
  rm -rf "$stage1"
  timed "$stage1" mmret-train experiment=cir_stage1 seed=0 "hydra.run.dir=${stage1}" \
    "${COMMON[@]}" "${SIZE1[@]}" "$@"
fi

# the generated triplets (mmret-cir-triplets' API on the training images), made once, untimed
"$PYTHON" - "$DATA_ROOT" "$GENERATED" <<'PY'
import sys
from mmret.data.composed_sources import composed_train
ds = composed_train(sys.argv[1], None, path="cirr", image_root=".", use_generated=True,
                    generated={"dir": sys.argv[2], "progress": False}, load_images=False)
print(f"training triplets with generated ones: {len(ds)} over {ds.split.num_images} images")
PY

for experiment in $STAGE2; do
  for seed in $SEEDS; do
    run_dir="${OUT}/${experiment}/seed${seed}"
    rm -rf "$run_dir"
    timed "$run_dir" mmret-train "experiment=${experiment}" "seed=${seed}" \
      "init_from=${stage1}" "hydra.run.dir=${run_dir}" "${COMMON[@]}" "${SIZE2[@]}" "$@"
  done
done

"$PYTHON" tools/experiments/aggregate_cir.py --out "$OUT"
