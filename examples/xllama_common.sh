# shellcheck shell=bash
# Shared part of examples/xllama_coit.sh and examples/xllama_muit.sh (sourced, not run): x-LLaMA
# instruction tuning (Zhu et al. 2023) on megatron-core, with the reference code's
# hyperparameters (7B: 3 epochs, lr 2e-5, cosine, 3% warmup, weight decay 0, global batch 128,
# max length 512, bf16). The distributed environment, paths, precision, --dry-run and the
# launch come from examples/launch_common.sh.
#
# Environment (besides launch_common.sh's; defaults in brackets):
#   PRETRAINED_CHECKPOINT [required to launch]  the base model as a distributed checkpoint of this
#        project: a PreAlign run's --save, or LLaMA imported from Hugging Face; any TP / PP layout
#   MODEL_FAMILY [llama]  NUM_LAYERS [32]  HIDDEN_SIZE [4096]  NUM_ATTENTION_HEADS [32]
#   FFN_HIDDEN_SIZE [11008]  NUM_QUERY_GROUPS [= heads]  MAX_POSITION_EMBEDDINGS [2048]: LLaMA-7B;
#        set them to the base model's (a PreAlign 150M: MODEL_FAMILY=gpt2 NUM_LAYERS=12
#        HIDDEN_SIZE=1024 NUM_ATTENTION_HEADS=16 FFN_HIDDEN_SIZE=4096)
#   SEQ_LENGTH [512]  TRAIN_EPOCHS [3]  LR [2e-5]  MIN_LR [0]  LR_WARMUP_FRACTION [0.03]
#   GLOBAL_BATCH_SIZE [128]  MICRO_BATCH_SIZE [4]  TP [2]  PP [1]  SPLIT [99,1,0] (1% of every
#   source held out for validation)  PACKING [0: --sft, one record a sequence as the reference;
#   1: --sft-packing, several records a sequence (then lower GLOBAL_BATCH_SIZE by the records per
#   sequence, see docs/instruction_tuning.md)]  SAVE_INTERVAL [500]  EVAL_INTERVAL [500]
# shellcheck disable=SC2034  # the *_ARGS arrays are used by launch_common.sh

# Layout (numbers from `--dry-run` on one 8-GPU A100 80 GB node): 6.7B parameters in bf16 with the
# distributed optimizer need 2 + 4 + 12/DP bytes each; TP=2 puts 3.4B on a GPU: 6.3 GiB weights +
# 12.6 GiB fp32 gradients + 9.4 GiB optimizer state at DP=4, plus 9.2 GiB activations at micro
# batch 4 x 512 tokens (local attention keeps the s x s softmax; 512 is short) = 40.5 GiB (51%).
# TP=1 would need 12.6 + 25.1 + 18.8 GiB of model states alone; PP is not needed at 7B.
TP="${TP:-2}"
PP="${PP:-1}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-4}"
GLOBAL_BATCH_SIZE="${GLOBAL_BATCH_SIZE:-128}"
SEQ_LENGTH="${SEQ_LENGTH:-512}"
TRAIN_EPOCHS="${TRAIN_EPOCHS:-3}"
LR="${LR:-2e-5}"
MIN_LR="${MIN_LR:-0}"
LR_WARMUP_FRACTION="${LR_WARMUP_FRACTION:-0.03}"
PACKING="${PACKING:-0}"
SPLIT="${SPLIT:-99,1,0}"
SAVE_INTERVAL="${SAVE_INTERVAL:-500}"
EVAL_INTERVAL="${EVAL_INTERVAL:-500}"
PREALIGN_ITERS=0  # instruction tuning has no alignment stage (pre-align in the pretraining run)
MODEL_FAMILY="${MODEL_FAMILY:-llama}"
NUM_LAYERS="${NUM_LAYERS:-32}"
HIDDEN_SIZE="${HIDDEN_SIZE:-4096}"
NUM_ATTENTION_HEADS="${NUM_ATTENTION_HEADS:-32}"
FFN_HIDDEN_SIZE="${FFN_HIDDEN_SIZE:-11008}"
MAX_POSITION_EMBEDDINGS="${MAX_POSITION_EMBEDDINGS:-2048}"
VOCAB_SIZE="${VOCAB_SIZE:-32000}"  # LLaMA's, for --dry-run without the tokenizer file
MODEL_SIZE="${MODEL_SIZE:-custom}"

# shellcheck source=examples/launch_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/launch_common.sh"
precision_args

# xllama_launch [--dry-run] [extra flags...]
xllama_launch() {
  local arg dry_run=0
  for arg in "$@"; do if [[ "${arg}" == "--dry-run" ]]; then dry_run=1; fi; done
  if ((!dry_run)) && [[ -z "${PRETRAINED_CHECKPOINT:-}" ]]; then
    echo "error: set PRETRAINED_CHECKPOINT to the base model's checkpoint directory (a PreAlign" \
      "run's --save, or a LLaMA checkpoint imported from Hugging Face)" >&2
    exit 2
  fi
  MODEL_ARGS=(--model-family "${MODEL_FAMILY}" --num-layers "${NUM_LAYERS}" --hidden-size "${HIDDEN_SIZE}"
    --num-attention-heads "${NUM_ATTENTION_HEADS}" --ffn-hidden-size "${FFN_HIDDEN_SIZE}"
    --seq-length "${SEQ_LENGTH}" --max-position-embeddings "${MAX_POSITION_EMBEDDINGS}"
    --hidden-dropout 0.0 --attention-dropout 0.0 "${PRECISION_ARGS[@]}")
  if [[ -n "${NUM_QUERY_GROUPS:-}" ]]; then MODEL_ARGS+=(--num-query-groups "${NUM_QUERY_GROUPS}"); fi
  if [[ -n "${PADDED_VOCAB_SIZE}" ]]; then MODEL_ARGS+=(--padded-vocab-size "${PADDED_VOCAB_SIZE}"); fi
  PARALLEL_ARGS=(--tensor-model-parallel-size "${TP}" --pipeline-model-parallel-size "${PP}"
    --use-distributed-optimizer)
  if [[ "${SEQUENCE_PARALLEL:-0}" == "1" ]]; then PARALLEL_ARGS+=(--sequence-parallel); fi
  local sft_mode=--sft
  if [[ "${PACKING}" == "1" ]]; then sft_mode=--sft-packing; fi
  # The reference trains with Hugging Face's AdamW defaults (betas 0.9 / 0.999, eps 1e-8) and
  # gradient clipping at 1.0.
  TRAINING_ARGS=("${sft_mode}" --pretrained-checkpoint "${PRETRAINED_CHECKPOINT:-PRETRAINED_CHECKPOINT}"
    --finetune --micro-batch-size "${MICRO_BATCH_SIZE}" --global-batch-size "${GLOBAL_BATCH_SIZE}"
    --train-epochs "${TRAIN_EPOCHS}" --lr "${LR}" --min-lr "${MIN_LR}" --lr-decay-style cosine
    --lr-warmup-fraction "${LR_WARMUP_FRACTION}" --weight-decay 0.0 --adam-beta1 0.9 --adam-beta2 0.999
    --adam-eps 1e-8 --clip-grad 1.0 --seed "${SEED:-42}")
  prealign_launch "$@"
}
