#!/usr/bin/env bash
# A training run across the nodes of a Slurm allocation with MultiWorkerMirroredStrategy.
# The workspace (dataset + run.json) must be on a filesystem every node sees.
#   sbatch deploy/slurm-train.sh /shared/workspace /shared/workspace/run.json
#SBATCH --job-name=transfer-studio-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --time=02:00:00
set -euo pipefail
WORKSPACE="${1:?usage: sbatch slurm-train.sh WORKSPACE CONFIG}"
CONFIG="${2:?usage: sbatch slurm-train.sh WORKSPACE CONFIG}"
PORT="${TRANSFER_STUDIO_PORT:-12345}"
export TRANSFER_STUDIO_HOME="$WORKSPACE"
mapfile -t HOSTS < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
WORKERS=$(printf '"%s:'"$PORT"'",' "${HOSTS[@]}")
# Handed to every task through the environment (srun passes it on); each task adds its
# own index to TF_CONFIG (0 is the chief, the one that writes the run folder).
export TS_WORKERS="[${WORKERS%,}]" TS_CONFIG="$CONFIG" TS_RUNS="$WORKSPACE/runs"
srun --ntasks="${#HOSTS[@]}" bash -c '
  export TF_CONFIG="{\"cluster\": {\"worker\": $TS_WORKERS}, \"task\": {\"type\": \"worker\", \"index\": $SLURM_PROCID}}"
  exec python -m core train --config "$TS_CONFIG" --runs-dir "$TS_RUNS" --json
'
