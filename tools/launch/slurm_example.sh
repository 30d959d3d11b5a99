#!/bin/bash
# mmret on SLURM: one torchrun per node, c10d rendezvous on the first node of the job.
#   sbatch tools/launch/slurm_example.sh experiment=shapes_clip data=shapes_shards
# Every node runs the same command; torchrun starts GPUS_PER_NODE processes per node and
# they meet at MASTER_ADDR:MASTER_PORT. Re-submitting with resume=true (and the same
# hydra.run.dir, nodes and GPUs) continues from checkpoints/last on every rank.
#SBATCH --job-name=mmret
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun per node; it spawns the per-GPU ranks
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
RUN_DIR=${RUN_DIR:-outputs/slurm/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

srun --kill-on-bad-exit=1 torchrun \
  --nnodes="$SLURM_JOB_NUM_NODES" \
  --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv-id="$SLURM_JOB_ID" \
  --rdzv-backend=c10d \
  --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" \
  -m mmret.train hydra.run.dir="$RUN_DIR" "$@"
