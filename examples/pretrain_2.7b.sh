#!/usr/bin/env bash
# PreAlign, 2.7B parameters (GPT-2 style, 32 layers x 2560 hidden, 32 heads; larger than the
# paper's models): pre-alignment (PREALIGN_ITERS steps) then input-only codeswitched pretraining,
# in one torchrun invocation per node. Usage (environment variables in examples/launch_common.sh):
#   NNODES=8 NODE_RANK=0 MASTER_ADDR=node0 examples/pretrain_2.7b.sh   # on every node, its rank
#   examples/pretrain_2.7b.sh --dry-run      # command, layout, parameters, memory, FLOPs
#   sbatch --nodes 8 examples/slurm_pretrain.sbatch examples/pretrain_2.7b.sh
set -euo pipefail
EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL_SIZE="2.7B"
NODE_COUNTS=(2 4 8 16 32)  # layouts checked by --dry-run and tests/test_launch_scripts.py

# Layout, for 80 GB A100s with headroom (numbers from `--dry-run`, megatron_prealign/launch_plan.py):
# 2.65B parameters (2.52B non-embedding + 131M embedding): bf16 weights 5.3 GB + fp32 gradients
# 10.6 GB + Adam state 31.8 GB unsharded, 47.7 GB: the distributed optimizer is required (Adam
# state 4.0 GB at DP=8, ~20 GB of model states). Activations without flash attention (the
# pre-alignment pass needs local attention) are sbh(34 + 7as/h) = 1.3 GB per layer at micro
# batch 4, 42 GB for 32 layers: 62 GiB per GPU in all, too tight. Selective recompute
# (recomputes only the attention core, the s x s part, ~2% extra compute) brings a layer to
# 34 sbh = 0.36 GB: ~34 GiB per GPU (43%) at TP=1, PP=1, micro batch 4. The alternative,
# TP=2 with sequence parallelism and no recompute, lands at the same ~35 GiB but adds
# tensor-parallel all-gathers / reduce-scatters to every layer, so TP=1 it is (TP=2
# SEQUENCE_PARALLEL=1 remains a valid override: 32 heads divide by 2, 4, 8). At least 2 nodes:
# on one node a step takes ~18 s. Global batch 1024 x seq 1024 = 1,048,576 tokens per step.
TP="${TP:-1}"
PP="${PP:-1}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-4}"
GLOBAL_BATCH_SIZE="${GLOBAL_BATCH_SIZE:-1024}"
RECOMPUTE="${RECOMPUTE:-selective}"
LR="${LR:-1.6e-4}"  # GPT-3's 2.7B rate; min-lr = lr / 10
MIN_LR="${MIN_LR:-1.6e-5}"

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
