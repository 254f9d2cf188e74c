#!/usr/bin/env bash
# Run a launch script inside the project's image (`docker build -t megatron-prealign .` from the
# repository root; NVIDIA's PyTorch container with CUDA, NCCL, Transformer Engine and apex):
#   examples/docker_run.sh examples/pretrain_150m.sh [--dry-run] [extra pretrain flags]
#   DATA_DIR=/scratch/prealign/data RUNS_ROOT=/scratch/prealign/runs examples/docker_run.sh examples/pretrain_1.3b.sh
# The host's DATA_DIR is mounted at /data and RUNS_ROOT (checkpoints, logs) at /runs; the script
# inside sees DATA_DIR=/data and RUNS_ROOT=/runs (runs in /runs/prealign_<size>), so DATA_PATH,
# TOKENIZER_MODEL and ALIGNMENT_TABLE, when set, must name paths inside the container (/data/...). The launch variables listed below
# (NNODES, MASTER_ADDR, TRAIN_ITERS, ...) pass through when set. Host networking for NCCL and the
# rendezvous; --ipc=host for the shared memory of the data loaders and NCCL.
# DOCKER_DRY_RUN=1 prints the docker command instead of running it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if (($# < 1)); then
  echo "usage: $0 examples/pretrain_<size>.sh [--dry-run] [pretrain flags]" >&2
  exit 2
fi
SCRIPT="$1"
shift
IMAGE="${IMAGE:-megatron-prealign}"
DATA_DIR="${DATA_DIR:-${ROOT}/data}"
RUNS_ROOT="${RUNS_ROOT:-${ROOT}/runs}"
CONTAINER_WORKDIR="${CONTAINER_WORKDIR:-/workspace/megatron-prealign}"

PASS_THROUGH=(NNODES NODE_RANK GPUS_PER_NODE MASTER_ADDR MASTER_PORT
  SLURM_NNODES SLURM_NODEID SLURM_GPUS_ON_NODE SLURM_JOB_NODELIST
  DATA_PATH SPLIT TOKENIZER_TYPE TOKENIZER_MODEL VOCAB_SIZE PADDED_VOCAB_SIZE
  ALIGNMENT_TABLE ALIGNMENT_LANGUAGES ALIGNMENT_WORDS_PER_BATCH ALIGNMENT_TEMPERATURE
  PREALIGN_ITERS TRAIN_ITERS LR_WARMUP_ITERS SEQ_LENGTH LR MIN_LR SEED
  TP PP MICRO_BATCH_SIZE GLOBAL_BATCH_SIZE RECOMPUTE SEQUENCE_PARALLEL
  FP8 BF16 TRANSFORMER_IMPL GPU MFU PLAN_FORMAT
  SAVE_INTERVAL EVAL_INTERVAL EVAL_ITERS LOG_INTERVAL
  NUM_LAYERS HIDDEN_SIZE NUM_ATTENTION_HEADS MAX_POSITION_EMBEDDINGS
  NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA CUDA_DEVICE_MAX_CONNECTIONS)
ENV_ARGS=(-e DATA_DIR=/data -e RUNS_ROOT=/runs)
for name in "${PASS_THROUGH[@]}"; do
  if [[ -n "${!name+set}" ]]; then ENV_ARGS+=(-e "${name}=${!name}"); fi
done

DOCKER_ARGS=(run --rm --gpus all --ipc=host --network host
  --ulimit memlock=-1 --ulimit stack=67108864
  -v "${DATA_DIR}:/data" -v "${RUNS_ROOT}:/runs" -w "${CONTAINER_WORKDIR}" "${ENV_ARGS[@]}")
COMMAND=(docker "${DOCKER_ARGS[@]}" "${IMAGE}" bash "examples/$(basename "${SCRIPT}")" "$@")

if [[ "${DOCKER_DRY_RUN:-0}" == "1" ]]; then
  printf '%q ' "${COMMAND[@]}"
  echo
  exit 0
fi
mkdir -p "${RUNS_ROOT}"
# docker run proxies the signals it receives (SLURM's USR1, TERM) to the container's launcher,
# which forwards them to the training processes.
exec "${COMMAND[@]}"
