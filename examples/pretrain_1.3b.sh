#!/usr/bin/env bash
# PreAlign, 1.3B parameters (GPT-2 style, 24 layers x 2048 hidden, 16 heads): pre-alignment
# (PREALIGN_ITERS steps) then input-only codeswitched pretraining, in one torchrun invocation per
# node. Usage (environment variables in examples/launch_common.sh):
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node0 examples/pretrain_1.3b.sh   # on every node, its rank
#   examples/pretrain_1.3b.sh --dry-run      # command, layout, parameters, memory, FLOPs
#   sbatch --nodes 4 examples/slurm_pretrain.sbatch examples/pretrain_1.3b.sh
set -euo pipefail
EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL_SIZE="1.3B"
NODE_COUNTS=(1 2 4 8 16)  # layouts checked by --dry-run and tests/test_launch_scripts.py

# Layout, for 80 GB A100s with headroom (numbers from `--dry-run`, megatron_prealign/launch_plan.py):
# 1.31B parameters (1.21B non-embedding + 105M embedding): bf16 weights 2.6 GB + fp32 gradients
# 5.3 GB + Adam state 15.8 GB unsharded. The distributed optimizer shards the Adam state over DP
# (2.0 GB at DP=8), so the model states take ~10 GB and still no model parallelism is needed:
# TP=1, PP=1 keeps all traffic to the data-parallel reduce-scatter / all-gather. Activations:
# without flash attention (the pre-alignment pass needs local attention) a layer keeps
# sbh(34 + 7as/h) = 0.75 GB at micro batch 4 (no recompute, 31 GiB per GPU in all) or 1.5 GB at
# micro batch 8 (49 GiB: too little headroom for fragmentation). Micro batch 4, no recompute:
# ~31 GiB per GPU (39%); selective recompute (RECOMPUTE=selective) would allow micro batch 8 at
# ~28 GiB for ~2.5% extra compute. Global batch 1024 x seq 1024 = 1,048,576 tokens per step.
TP="${TP:-1}"
PP="${PP:-1}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-4}"
GLOBAL_BATCH_SIZE="${GLOBAL_BATCH_SIZE:-1024}"
RECOMPUTE="${RECOMPUTE:-none}"
LR="${LR:-2e-4}"  # GPT-3's 1.3B rate; min-lr = lr / 10
MIN_LR="${MIN_LR:-2e-5}"

# shellcheck source=examples/launch_common.sh
source "${EXAMPLES}/launch_common.sh"
model_size_args
recompute_args
precision_args

MODEL_ARGS=("${MODEL_SIZE_ARGS[@]}" "${PRECISION_ARGS[@]}" "${RECOMPUTE_ARGS[@]}"
  --hidden-dropout 0.1 --attention-dropout 0.1 --init-method-std 0.02)
PARALLEL_ARGS=(--tensor-model-parallel-size "${TP}" --pipeline-model-parallel-size "${PP}"
  --use-distributed-optimizer)
if [[ "${SEQUENCE_PARALLEL:-0}" == "1" ]]; then PARALLEL_ARGS+=(--sequence-parallel); fi
TRAINING_ARGS=(--micro-batch-size "${MICRO_BATCH_SIZE}" --global-batch-size "${GLOBAL_BATCH_SIZE}"
  --train-iters "${TRAIN_ITERS}" --lr "${LR}" --min-lr "${MIN_LR}" --lr-decay-style cosine
  --lr-warmup-iters "${LR_WARMUP_ITERS}" --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95
  --clip-grad 1.0 --seed "${SEED:-1234}")

prealign_launch "$@"
