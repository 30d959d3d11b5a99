#!/usr/bin/env bash
# Model-merging experiment 1 + 3 (docs/results.md, "Model merging"), CPU-sized: from
# all-MiniLM-L6-v2, one model per task (A: STS-B pairs, B: shapes caption pairs, C: STS-B
# sentences unsupervised), joint and temperature-resampled joint training at the summed
# budget, static merges, Self Positioning and its probe-size sweep; every model scored by
# mmret-eval on STS-B test, STS12 and shapes graded pairs. Run from the repository root.
#   STEPS=120 bash tools/merge_experiment.sh
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
STEPS=${STEPS:-120}; BS=${BS:-16}; OUT=${OUT:-outputs/merge_exp}; SEED=${SEED:-0}
JOINT=$((3 * STEPS))
PY=${PY:-.venv/bin/python}
common="trainer=cpu_sts trainer.batch_size=$BS seed=$SEED logger.plots=false logger.progress_bar=false task.probe_every=0"
t() { /usr/bin/time -f "%e s wall: $1" "${@:2}" 2>&1 | grep -E "s wall|error" || true; }
train() { # name steps overrides...
  local name=$1 steps=$2; shift 2
  [ -f "$OUT/$name/checkpoints/last/model.safetensors" ] && return 0
  /usr/bin/time -f "train $name: %e s wall" $PY -m mmret.train experiment=sts_infonce $common \
    trainer.max_steps=$steps hydra.run.dir=$OUT/$name "$@" > "$OUT/$name.log" 2>&1
  tail -1 "$OUT/$name.log"
}
evaluate() { # name checkpoint
  for d in merge_stsb_pairs merge_shapes_pairs merge_sts12; do
    $PY -m mmret.evaluate checkpoint=$2 data=$d plots=false name=$1 \
      hydra.run.dir=$OUT/eval/$1/$d > "$OUT/eval_$1_$d.log" 2>&1
  done
}
mkdir -p "$OUT"
train task_a $STEPS data=merge_stsb_pairs
train task_b $STEPS data=merge_shapes_pairs
train task_c $STEPS data=merge_sts12
if [ -z "${SKIP_JOINT:-}" ]; then  # SKIP_JOINT=1: run them separately (in parallel)
  train joint $JOINT data=merge_mixture
  train joint_t2 $JOINT data=merge_mixture data.train.temperature=2.0
fi
MODELS="[$OUT/task_a,$OUT/task_b,$OUT/task_c]"
NAMES="names=[stsb_pairs,shapes_pairs,sts_unsup]"
merge() { # name overrides...
  local name=$1; shift
  [ -f "$OUT/$name/merge.json" ] && return 0
  /usr/bin/time -f "merge $name: %e s wall" $PY -m mmret.merging.cli models=$MODELS $NAMES \
    hydra.run.dir=$OUT/$name "$@" > "$OUT/$name.log" 2>&1
  tail -1 "$OUT/$name.log"
}
merge m_average method=average report.evaluate=false
merge m_task_arithmetic method=task_arithmetic method.scale=0.5 report.evaluate=false
merge m_ties method=ties method.density=0.2 report.evaluate=false
merge m_slerp method=slerp report.evaluate=false
merge m_self_positioning method=self_positioning method.steps=${SP_STEPS:-25} probe.size=96 \
  probe.batch_size=16 report.grid=${GRID:-[0.0,0.5,1.5]}
for size in ${SWEEP:-12 48 192}; do
  merge m_sp_probe$size method=self_positioning method.steps=${SP_STEPS:-25} probe.size=$size \
    probe.batch_size=16 report.evaluate=false
done
for name in task_a task_b task_c joint joint_t2; do
  [ -f "$OUT/$name/checkpoints/last/model.safetensors" ] && evaluate $name $OUT/$name; done
for name in m_average m_task_arithmetic m_ties m_slerp m_self_positioning; do
  evaluate $name $OUT/$name/merged; done
for size in ${SWEEP:-12 48 192}; do evaluate m_sp_probe$size $OUT/m_sp_probe$size/merged; done
$PY -m mmret.merging.summary "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
