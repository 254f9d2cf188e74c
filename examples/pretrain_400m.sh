#!/usr/bin/env bash
# PreAlign, 400M parameters (GPT-2 style, 24 layers x 1152 hidden, 18 heads): pre-alignment
# (PREALIGN_ITERS steps) then input-only codeswitched pretraining, in one torchrun invocation per
# node. Usage (environment variables in examples/launch_common.sh):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 examples/pretrain_400m.sh   # on every node, its rank
#   examples/pretrain_400m.sh --dry-run      # command, layout, parameters, memory, FLOPs
#   sbatch --nodes 2 examples/slurm_pretrain.sbatch examples/pretrain_400m.sh
set -euo pipefail
EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL_SIZE="400M"
NODE_COUNTS=(1 2 4 8 16)  # layouts checked by --dry-run and tests/test_launch_scripts.py

# Layout, for 80 GB A100s with headroom (numbers from `--dry-run`, megatron_prealign/launch_plan.py):
# 442M parameters (382M non-embedding + 59M embedding) are 8 GB of weights, fp32 gradients and
# Adam state even without sharding: no model parallelism needed (TP=1, PP=1; 18 heads would
# also rule out TP=4 or 8). Activations dominate: local attention (needed by the pre-alignment
# pass) keeps the s x s softmax, sbh(34 + 7as/h) = 1.4 GB per layer at micro batch 8, 33 GB for
# 24 layers, + 1.6 GB fp32 logits: about 40 GiB per GPU (50%) without recompute. Micro batch 16
# would need selective recompute (26 GiB) for little gain: 8k tokens per microbatch already
# keep the GEMMs efficient. Distributed optimizer on (saves 4.6 GB, no extra traffic: a
# reduce-scatter + all-gather instead of an all-reduce).
# Global batch 1024 x seq 1024 = 1,048,576 tokens per step (the paper's ~1M).
TP="${TP:-1}"
PP="${PP:-1}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-8}"
GLOBAL_BATCH_SIZE="${GLOBAL_BATCH_SIZE:-1024}"
RECOMPUTE="${RECOMPUTE:-none}"
LR="${LR:-3e-4}"  # GPT-3's 350M rate; min-lr = lr / 10
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
