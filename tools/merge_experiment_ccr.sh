#!/usr/bin/env bash
# Model-merging experiment 2 (docs/results.md, "Model merging"), CPU-sized: from one
# multilingual mmret-tiny stage-0 model (1-to-1, random language), one model per language of
# the shapes benchmark, merged (average, TIES, Self Positioning), against 1-to-K joint
# training from the same stage 0 at the same number of image-caption pairs (6 languages x
# STEPS x batch). Run from the repository root:
#   S0=300 STEPS=100 SEED=0 bash tools/merge_experiment_ccr.sh
# (the data set is generated from the fixed generator seed; SEED is the training seed;
# FT="trainer.weight_decay=0.0": overrides of the per-language and 1-to-K fine-tuning runs)
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
OUT=${OUT:-outputs/merge_ccr}; S0=${S0:-300}; STEPS=${STEPS:-100}; SEED=${SEED:-0}
PY=${PY:-.venv/bin/python}
DATA="data.root=$OUT/shapes data.generate.num_images=${IMAGES:-2000}"
common="$DATA seed=$SEED trainer.num_threads=1 logger.plots=false logger.progress_bar=false"
mkdir -p "$OUT"
train() { local name=$1; shift
  [ -f "$OUT/$name/checkpoints/last/model.safetensors" ] && return 0
  /usr/bin/time -f "train $name: %e s wall" $PY -m mmret.train $common hydra.run.dir=$OUT/$name "$@" \
    > "$OUT/$name.log" 2>&1; tail -1 "$OUT/$name.log"; }
train stage0 experiment=ccr_one_to_one trainer.max_steps=$S0
LANGS="en de fr cs zh ja"; MODELS=""
for l in $LANGS; do
  train lang_$l experiment=ccr_one_to_one "data.train.languages=[$l]" trainer.max_steps=$STEPS \
    trainer.warmup_steps=10 init_from=$OUT/stage0 ${FT:-}
  MODELS="$MODELS,$OUT/lang_$l"
done
MODELS="[${MODELS#,}]"
train one_to_k experiment=ccr_one_to_k trainer.max_steps=$STEPS trainer.warmup_steps=10 \
  init_from=$OUT/stage0 ${FT:-}
merge() { local name=$1; shift
  [ -f "$OUT/$name/merge.json" ] && return 0
  /usr/bin/time -f "merge $name: %e s wall" $PY -m mmret.merging.cli models=$MODELS \
    base=$OUT/stage0 hydra.run.dir=$OUT/$name report.evaluate=false "$@" > "$OUT/$name.log" 2>&1
  tail -1 "$OUT/$name.log"; }
merge m_average method=average
merge m_task_arithmetic method=task_arithmetic method.scale=0.5
merge m_ties method=ties method.density=0.2
merge m_slerp method=slerp
merge m_self_positioning method=self_positioning method.steps=${SP_STEPS:-20} probe.size=96 \
  probe.batch_size=16
for m in m_average m_task_arithmetic m_ties m_slerp m_self_positioning; do
  [ -f "$OUT/eval_$m/metrics.json" ] || $PY -m mmret.evaluate checkpoint=$OUT/$m/merged plots=false \
    name=$m hydra.run.dir=$OUT/eval_$m > "$OUT/eval_$m.log" 2>&1
done
$PY -m mmret.merging.summary_ccr "$OUT" > "$OUT/summary.md"
echo done
