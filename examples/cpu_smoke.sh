#!/usr/bin/env bash
# PreAlign end to end on the CPU in about a minute: built-in synthetic corpus -> tokenizer ->
# alignment table -> codeswitched (input-only) English + plain German data -> pre-alignment
# then pretraining with a tiny GPT-2 style model. Every path and size can be overridden:
#   WORK=/tmp/smoke NPROC=2 TP=2 ./examples/cpu_smoke.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-${ROOT}/.venv/bin/python}"
WORK="${WORK:-${ROOT}/runs/cpu_smoke}"
NPROC="${NPROC:-1}"
TP="${TP:-1}"
PP="${PP:-1}"
PREALIGN_ITERS="${PREALIGN_ITERS:-10}"
TRAIN_ITERS="${TRAIN_ITERS:-20}"
EXTRA_ARGS=("$@")

DATA="${WORK}/data"
# shellcheck source=examples/synthetic_data.sh
source "${ROOT}/examples/synthetic_data.sh"
prepare_synthetic_data "${DATA}"

MODEL_ARGS=(--num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 64
  --max-position-embeddings 64)
TRAINING_ARGS=(--micro-batch-size 4 --global-batch-size 8 --train-iters "${TRAIN_ITERS}"
  --lr 3e-3 --min-lr 3e-4 --lr-warmup-iters 2 --weight-decay 0.01 --clip-grad 1.0 --seed 1234
  --tensor-model-parallel-size "${TP}" --pipeline-model-parallel-size "${PP}")
DATA_ARGS=(--data-path 0.9 "${DATA}/en_text_document" 0.1 "${DATA}/de_text_document"
  --split "98,2,0" --tokenizer-type SentencePieceTokenizer --tokenizer-model "${DATA}/spm.model")
PREALIGN_ARGS=(--alignment-table "${DATA}/table.jsonl" --alignment-languages de
  --prealign-iters "${PREALIGN_ITERS}" --alignment-words-per-batch 8 --alignment-temperature 0.1)
OUTPUT_ARGS=(--log-interval 5 --eval-interval 10 --eval-iters 1 --save "${WORK}/checkpoints"
  --save-interval 15 --log-json "${WORK}/log.jsonl" --tensorboard-dir "${WORK}/tensorboard")

"${PYTHON}" -m torch.distributed.run --standalone --nproc-per-node "${NPROC}" \
  -m megatron_prealign.pretrain \
  "${MODEL_ARGS[@]}" "${TRAINING_ARGS[@]}" "${DATA_ARGS[@]}" "${PREALIGN_ARGS[@]}" \
  "${OUTPUT_ARGS[@]}" "${EXTRA_ARGS[@]}"
