#!/usr/bin/env bash
# First run on a new cluster (a few minutes on one GPU): the 150M model (GPT-2 style, 12 layers,
# hidden 1024, 16 heads, seq 1024) in bf16 with Transformer Engine layers when TE is importable
# runs pre-alignment then pretraining, is stopped after a checkpoint and resumed (the resumed
# losses must equal an uninterrupted run's), then evaluated (perplexity). With 2+ GPUs the same
# runs at TP=2 (2 GPUs) and with 4+ at TP=2 x PP=2. Prints tokens/s, achieved TFLOP/s and MFU
# (FLOPs from megatron_prealign/launch_plan.py) of the pretraining steps and of the
# pre-alignment steps (LM FLOPs only, so the alignment pass's cost shows) and the nvidia-smi peak
# memory as the last line (JSON), runs a few fp8 steps with pre-alignment where the GPU has fp8
# and the Hugging Face round trip (tiny LLaMA: import-hf, --sft-packing fine-tuning, export-hf,
# logits against transformers), and names what was skipped (too few GPUs, no fp8, no
# transformers); exits non-zero when anything fails.
#   examples/gpu_check.sh               # on a GPU node
#   examples/gpu_check.sh --cpu-dry     # the same logic on the CPU with a tiny model (tests)
# Environment: WORK [<repo>/runs/gpu_check], PYTHON, GPUS [all visible], RESUME_RTOL [0: exact]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${ROOT}/.venv/bin/python" ]]; then PYTHON="${ROOT}/.venv/bin/python"; else PYTHON="python3"; fi
fi
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
WORK="${WORK:-${ROOT}/runs/gpu_check}"
CPU_DRY=0
for arg in "$@"; do
  case "${arg}" in
    --cpu-dry) CPU_DRY=1 ;;
    *) echo "error: unknown argument ${arg} (only --cpu-dry)" >&2; exit 2 ;;
  esac
done

if ((CPU_DRY)); then
  export PREALIGN_FORCE_CPU=1
  GPUS="${GPUS:-1}"
  GPU_NAME="cpu"
  MODEL=(--num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 64 --max-position-embeddings 64)
  BATCH=(--micro-batch-size 2 --global-batch-size 4)
  PREALIGN_ITERS=2 TRAIN_ITERS=3 STOP_AT=3 LOG_INTERVAL=1
  PRECISION=()
  TE_IMPL=local
else
  if ! command -v nvidia-smi > /dev/null; then
    echo "error: nvidia-smi not found: run on a GPU node, or pass --cpu-dry" >&2
    exit 2
  fi
  GPUS="${GPUS:-$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)}"
  GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
  MODEL=(--model-size 150M --seq-length 1024 --max-position-embeddings 1024)
  BATCH=(--micro-batch-size 8 --global-batch-size 64)
  PREALIGN_ITERS=10 TRAIN_ITERS=30 STOP_AT=20 LOG_INTERVAL=5
  PRECISION=(--bf16)
  TE_IMPL=local
  if "${PYTHON}" -c "import transformer_engine.pytorch" 2> /dev/null; then TE_IMPL=transformer_engine; fi
  # Deterministic kernels, so that the resumed run can match the uninterrupted one bit for bit
  # (pooling in the alignment pass is a GEMM, not float atomics); NCCL_ALGO fixes the reduction
  # order of the TP / DP collectives, which NCCL otherwise picks per message size and topology.
  export NVTE_ALLOW_NONDETERMINISTIC_ALGO=0 CUBLAS_WORKSPACE_CONFIG=":4096:8" NCCL_ALGO="${NCCL_ALGO:-Ring}"
fi
if ((GPUS < 1)); then echo "error: no GPU visible" >&2; exit 2; fi

DATA="${WORK}/data"
# shellcheck source=examples/synthetic_data.sh
source "${ROOT}/examples/synthetic_data.sh"
mkdir -p "${WORK}"
prepare_synthetic_data "${DATA}" > "${WORK}/data.log" 2>&1 || {
  cat "${WORK}/data.log" >&2
  exit 1
}

COMMON=("${MODEL[@]}" "${BATCH[@]}" "${PRECISION[@]}" --train-iters "${TRAIN_ITERS}"
  --lr 3e-4 --min-lr 3e-5 --lr-warmup-iters 2 --seed 1234 --hidden-dropout 0.1 --attention-dropout 0.1
  --use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather
  --data-path 0.9 "${DATA}/en_text_document" 0.1 "${DATA}/de_text_document" --split "98,2,0"
  --tokenizer-type SentencePieceTokenizer --tokenizer-model "${DATA}/spm.model"
  --alignment-table "${DATA}/table.jsonl" --alignment-languages de --prealign-iters "${PREALIGN_ITERS}"
  --alignment-words-per-batch 16 --log-interval "${LOG_INTERVAL}")

# name gpus tp pp impl
LAYOUTS=("single 1 1 1 ${TE_IMPL}")
SKIPPED=()
if ((GPUS >= 4)); then
  # TE layers at PP=2 too: one form per row, shapes exchanged per microbatch (attention_path.py).
  LAYOUTS+=("tp2xpp2 4 2 2 ${TE_IMPL}")
elif ((GPUS >= 2)); then
  LAYOUTS+=("tp2 2 2 1 ${TE_IMPL}")
  SKIPPED+=(--skipped tp2xpp2 "needs 4 GPUs, ${GPUS} visible")
else
  SKIPPED+=(--skipped tp2 "needs 2 GPUs, ${GPUS} visible" --skipped tp2xpp2 "needs 4 GPUs, ${GPUS} visible")
fi

MEMORY_LOG="${WORK}/nvidia_smi.csv"
SAMPLER_PID=""
stop_sampler() { if [[ -n "${SAMPLER_PID}" ]]; then kill "${SAMPLER_PID}" 2> /dev/null || true; fi; }
trap stop_sampler EXIT
rm -f "${MEMORY_LOG}"
if ((!CPU_DRY)); then
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "${MEMORY_LOG}" &
  SAMPLER_PID=$!
fi

pretrain() {  # pretrain NPROC LOGFILE FLAGS...
  local nproc="$1" log="$2"
  shift 2
  if ! "${PYTHON}" -m torch.distributed.run --standalone --nproc-per-node "${nproc}" \
    -m megatron_prealign.pretrain "$@" > "${log}" 2>&1; then
    tail -n 40 "${log}" >&2
    echo "gpu_check: FAILED (${log})" >&2
    return 1
  fi
}

SUMMARY_ARGS=()
for layout in "${LAYOUTS[@]}"; do
  read -r name nproc tp pp impl <<< "${layout}"
  run="${WORK}/${name}"
  rm -rf "${run}"
  mkdir -p "${run}/straight" "${run}/resumed"
  flags=("${COMMON[@]}" --tensor-model-parallel-size "${tp}" --pipeline-model-parallel-size "${pp}"
    --transformer-impl "${impl}")
  echo "gpu_check: ${name} (${nproc} processes, TP=${tp} PP=${pp}, ${impl}): uninterrupted run" >&2
  pretrain "${nproc}" "${run}/straight.out" "${flags[@]}" --log-json "${run}/straight/log.jsonl"
  echo "gpu_check: ${name}: run stopped after the checkpoint of iteration ${STOP_AT}, then resumed" >&2
  pretrain "${nproc}" "${run}/stopped.out" "${flags[@]}" --save "${run}/checkpoints" \
    --exit-interval "${STOP_AT}" --log-json "${run}/stopped.jsonl"
  pretrain "${nproc}" "${run}/resumed.out" "${flags[@]}" --save "${run}/checkpoints" \
    --load "${run}/checkpoints" --log-json "${run}/resumed/log.jsonl"
  echo "gpu_check: ${name}: evaluation" >&2
  eval_flags=(perplexity --load "${run}/checkpoints" --tensor-model-parallel-size "${tp}"
    --pipeline-model-parallel-size "${pp}" --data-path "en=${DATA}/en_text_document"
    "de=${DATA}/de_text_document" --max-tokens 20000 --output "${run}/perplexity.json")
  if ((!CPU_DRY)); then eval_flags+=(--bf16); fi
  if ! "${PYTHON}" -m torch.distributed.run --standalone --nproc-per-node "$((tp * pp))" \
    "${ROOT}/tools/evaluate.py" "${eval_flags[@]}" > "${run}/evaluate.out" 2>&1; then
    tail -n 40 "${run}/evaluate.out" >&2
    echo "gpu_check: FAILED (${run}/evaluate.out)" >&2
    exit 1
  fi
  SUMMARY_ARGS+=(--layout "${name}" "${run}/straight" "${run}/resumed" "${run}/perplexity.json" "${nproc}")
done
# A few fp8 steps with pre-alignment (TE, one form per row) where the GPU and TE have fp8.
SHORT_RUNS=()
FP8_WHY="needs Transformer Engine on a GPU with fp8 (Hopper or newer)"
if ((!CPU_DRY)) && [[ "${TE_IMPL}" == transformer_engine ]]; then
  FP8_WHY="$("${PYTHON}" -c 'from megatron_prealign import runtime; ok, why = runtime.fp8_available(); print("" if ok else why)')"
fi
if [[ -z "${FP8_WHY}" ]]; then
  echo "gpu_check: fp8 (hybrid) steps with pre-alignment" >&2
  rm -rf "${WORK}/fp8" && mkdir -p "${WORK}/fp8"
  pretrain 1 "${WORK}/fp8/run.out" "${COMMON[@]}" --transformer-impl transformer_engine --fp8-format hybrid \
    --train-iters 4 --prealign-iters 4 --log-interval 1 --log-json "${WORK}/fp8/log.jsonl"
  SHORT_RUNS+=(--short-run fp8_prealign "${WORK}/fp8")
else
  SKIPPED+=(--skipped fp8_prealign "${FP8_WHY}")
fi

# The Hugging Face round trip: a tiny random LLaMA made by transformers -> import-hf -> a few
# --sft-packing fine-tuning steps (TE layers when importable) -> export-hf -> the exported
# model's logits in transformers against ours (tolerance: megatron_prealign/hf_round_trip.py).
RT="${WORK}/hf_round_trip"
hf_round_trip() {
  local rt_precision=()
  if ((!CPU_DRY)); then rt_precision=(--bf16); fi
  rm -rf "${RT}" && mkdir -p "${RT}"
  "${PYTHON}" -m megatron_prealign.cli.hf_round_trip prepare --out "${RT}" \
    --tokenizer-model "${DATA}/spm.model" > "${RT}/make.out" 2>&1 || return 1
  "${PYTHON}" "${ROOT}/tools/build_instruction_data.py" --format alpaca --input "${RT}/instructions.jsonl" \
    --lang en --template "${RT}/instructions.jsonl.template.json" --output-prefix "${RT}/sft" --seq-length 128 \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "${DATA}/spm.model" --no-progress >> "${RT}/make.out" 2>&1 || return 1
  "${PYTHON}" "${ROOT}/tools/convert_checkpoint.py" import-hf --hf-dir "${RT}/hf_in" --save "${RT}/imported" \
    --no-progress > "${RT}/import.out" 2>&1 || return 1
  pretrain 1 "${RT}/finetune.out" --model-family llama --num-layers 2 --hidden-size 128 --num-attention-heads 4 \
    --num-query-groups 2 --ffn-hidden-size 256 --seq-length 128 --max-position-embeddings 256 \
    --micro-batch-size 2 --global-batch-size 4 --train-iters 3 --lr 1e-3 --min-lr 1e-4 --lr-warmup-iters 1 \
    --hidden-dropout 0.0 --attention-dropout 0.0 "${rt_precision[@]}" --transformer-impl "${TE_IMPL}" \
    --sft-packing --data-path "${RT}/sft_text_document" --split 100,0,0 \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "${DATA}/spm.model" \
    --pretrained-checkpoint "${RT}/imported" --save "${RT}/finetuned" --log-interval 1 \
    --log-json "${RT}/finetune.jsonl" || return 1
  "${PYTHON}" "${ROOT}/tools/convert_checkpoint.py" export-hf --load "${RT}/finetuned" --out "${RT}/hf_out" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "${DATA}/spm.model" --no-progress \
    > "${RT}/export.out" 2>&1 || return 1
  "${PYTHON}" -m torch.distributed.run --standalone --nproc-per-node 1 -m megatron_prealign.cli.hf_round_trip \
    compare --load "${RT}/finetuned" --hf-dir "${RT}/hf_out" --original-hf-dir "${RT}/hf_in" \
    --output "${RT}/compare.json" "${rt_precision[@]}" > "${RT}/compare.out" 2>&1 || return 1
}
ROUND_TRIP=()
if "${PYTHON}" -c "import transformers, sentencepiece" 2> /dev/null; then
  echo "gpu_check: Hugging Face round trip (import-hf, --sft-packing fine-tuning on ${TE_IMPL} layers, export-hf)" >&2
  if ! hf_round_trip; then
    echo "gpu_check: FAILED Hugging Face round trip (logs in ${RT})" >&2
  fi
  ROUND_TRIP=(--hf-round-trip "${RT}/compare.json")
else
  SKIPPED+=(--skipped hf_round_trip "needs transformers and sentencepiece (pip install transformers sentencepiece)")
fi
stop_sampler
SAMPLER_PID=""

"${PYTHON}" -m megatron_prealign.cli.gpu_check "${SUMMARY_ARGS[@]}" "${SHORT_RUNS[@]}" "${ROUND_TRIP[@]}" "${SKIPPED[@]}" \
  --resume-iteration "${STOP_AT}" \
  --resume-rtol "${RESUME_RTOL:-0}" --memory-samples "${MEMORY_LOG}" --gpu-name "${GPU_NAME}" \
  -- "${COMMON[@]}"
