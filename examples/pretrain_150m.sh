#!/usr/bin/env bash
# PreAlign, 150M parameters (the paper's default size: GPT-2 style, 12 layers x 1024 hidden,
# 16 heads): pre-alignment (PREALIGN_ITERS steps) then input-only codeswitched pretraining,
# in one torchrun invocation per node. Usage (environment variables in examples/launch_common.sh):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 examples/pretrain_150m.sh   # on every node, its rank
#   examples/pretrain_150m.sh --dry-run      # command, layout, parameters, memory, FLOPs
#   sbatch --nodes 2 examples/slurm_pretrain.sbatch examples/pretrain_150m.sh
set -euo pipefail
EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL_SIZE="150M"
NODE_COUNTS=(1 2 4 8)  # layouts checked by --dry-run and tests/test_launch_scripts.py

# Layout, for 80 GB A100s with headroom (numbers from `--dry-run`, megatron_prealign/launch_plan.py):
# 204M parameters (151M non-embedding + 52.6M embedding at a 50k vocabulary) take 18 bytes each
# without the distributed optimizer, 3.7 GB: the model fits on one GPU many times over, so no
# tensor or pipeline parallelism (TP=1, PP=1): pure data parallelism, no model-parallel traffic.
# Memory is activations: the pre-alignment pass needs megatron-core's local attention (no flash
# attention), which keeps the s x s softmax: sbh(34 + 7as/h) bytes per layer = 2.4 GB per layer
# at micro batch 16 and seq 1024, 29 GB for 12 layers, + 3.3 GB fp32 logits. Micro batch 16
# (16k tokens per microbatch, large enough for efficient GEMMs) peaks near 37 GiB per GPU
# (46% of 80 GiB) without recompute; 32 would reach ~70 GiB, too close. The distributed
# optimizer is nearly free (one reduce-scatter + all-gather instead of an all-reduce) and saves
# ~2 GB. Global batch 1024 x seq 1024 = 1,048,576 tokens per step (the paper's ~1M).
TP="${TP:-1}"
PP="${PP:-1}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-16}"
GLOBAL_BATCH_SIZE="${GLOBAL_BATCH_SIZE:-1024}"
RECOMPUTE="${RECOMPUTE:-none}"
LR="${LR:-3e-4}"  # GPT-3's 125M/350M rates bracket it; min-lr = lr / 10
MIN_LR="${MIN_LR:-3e-5}"

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
