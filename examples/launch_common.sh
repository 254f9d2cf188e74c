# shellcheck shell=bash
# Shared part of examples/pretrain_{150m,400m,1.3b,2.7b}.sh (sourced, not run). A size script
# sets its size-specific defaults (MODEL_SIZE, NODE_COUNTS, TP, PP, MICRO_BATCH_SIZE, ...),
# sources this file, defines MODEL_ARGS / PARALLEL_ARGS / TRAINING_ARGS and calls
# `prealign_launch "$@"`. This file owns what every size shares: the distributed environment,
# data and alignment paths, precision, checkpoints and logs, `--dry-run`, and the launch.
#
# Environment (defaults in brackets; every value is quoted, so paths may contain spaces, except
# inside DATA_PATH and ALIGNMENT_LANGUAGES, which are whitespace-separated lists):
#   NNODES [$SLURM_NNODES or 1]        NODE_RANK [$SLURM_NODEID or 0]
#   GPUS_PER_NODE [$SLURM_GPUS_ON_NODE or 8]
#   MASTER_ADDR [first host of $SLURM_JOB_NODELIST, else 127.0.0.1]   MASTER_PORT [6000]
#   PYTHON [python3, or the repo's .venv]  DATA_DIR [<repo>/data]
#   DATA_PATH ["0.9 $DATA_DIR/en_cs_text_document 0.1 $DATA_DIR/de_text_document"]
#   SPLIT [969,30,1]  TOKENIZER_TYPE [SentencePieceTokenizer]  TOKENIZER_MODEL [$DATA_DIR/spm.model]
#   VOCAB_SIZE [50257: the tokenizer's size assumed by --dry-run when TOKENIZER_MODEL is absent]
#   PADDED_VOCAB_SIZE [unset: the driver pads the tokenizer's vocabulary to 128 x TP]
#   ALIGNMENT_TABLE [$DATA_DIR/table.jsonl]  ALIGNMENT_LANGUAGES [all of the table]
#   ALIGNMENT_WORDS_PER_BATCH [64, raised to a multiple of DP]  ALIGNMENT_TEMPERATURE [0.1]
#   PREALIGN_ITERS [500]  TRAIN_ITERS [20000]  LR_WARMUP_ITERS [500]  SEQ_LENGTH [1024]
#   RUNS_ROOT [<repo>/runs]  RUN_DIR [$RUNS_ROOT/prealign_<size>]  CHECKPOINT_DIR [$RUN_DIR/checkpoints]
#   LOG_DIR [$RUN_DIR/logs]  SAVE_INTERVAL [1000]  EVAL_INTERVAL [1000]  EVAL_ITERS [10]
#   LOG_INTERVAL [10]
#   FP8 [0; 1: --fp8-format hybrid, H100 only; the alignment pass puts each word form in its own
#        row under causal attention, at PP > 1 with per-microbatch shapes]
#   TRANSFORMER_IMPL [transformer_engine: TE layers, flash attention, megatron-core's fusions]
#   BF16 [1]  OVERLAP [1: --overlap-grad-reduce --overlap-param-gather with the distributed
#        optimizer]
#   GPU [a100, or h100 with FP8=1: the peak FLOP/s --dry-run assumes]  MFU [0.40]
#   NUM_LAYERS HIDDEN_SIZE NUM_ATTENTION_HEADS MAX_POSITION_EMBEDDINGS [unset: override the
#        named size, e.g. for a tiny run]
# Arguments: --dry-run (print the command and the resource plan, start nothing, read no data),
# anything else is appended to the pretrain flags (later flags win).
# shellcheck disable=SC2154,SC2034  # TP, PP, MODEL_SIZE come from the size script, the *_ARGS
# arrays built here are used there

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${ROOT}/.venv/bin/python" ]]; then PYTHON="${ROOT}/.venv/bin/python"; else PYTHON="python3"; fi
fi

# --- distributed environment: torchrun's rendezvous from the environment, SLURM as fallback ---
NNODES="${NNODES:-${SLURM_NNODES:-1}}"
NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
if [[ -z "${MASTER_ADDR:-}" ]]; then
  if [[ -n "${SLURM_JOB_NODELIST:-}" ]] && command -v scontrol > /dev/null; then
    MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"
  else
    MASTER_ADDR="127.0.0.1"
  fi
fi
MASTER_PORT="${MASTER_PORT:-6000}"
WORLD_SIZE=$((NNODES * GPUS_PER_NODE))
DP_SIZE=$((WORLD_SIZE / (TP * PP)))
if ((DP_SIZE < 1)); then DP_SIZE=1; fi

# --- data, tokenizer, alignment table ---
DATA_DIR="${DATA_DIR:-${ROOT}/data}"
DATA_PATH="${DATA_PATH:-0.9 ${DATA_DIR}/en_cs_text_document 0.1 ${DATA_DIR}/de_text_document}"
SPLIT="${SPLIT:-969,30,1}"
TOKENIZER_TYPE="${TOKENIZER_TYPE:-SentencePieceTokenizer}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-${DATA_DIR}/spm.model}"
VOCAB_SIZE="${VOCAB_SIZE:-50257}"
PADDED_VOCAB_SIZE="${PADDED_VOCAB_SIZE:-}"
ALIGNMENT_TABLE="${ALIGNMENT_TABLE:-${DATA_DIR}/table.jsonl}"
ALIGNMENT_LANGUAGES="${ALIGNMENT_LANGUAGES:-}"
# The driver's default of 64 word groups per contrastive batch; every DP rank takes an equal
# share of the groups, so beyond 64 data-parallel ranks it is raised to the next multiple of DP.
PLAN_WORDS_ARGS=()
if [[ -z "${ALIGNMENT_WORDS_PER_BATCH:-}" ]]; then
  ALIGNMENT_WORDS_PER_BATCH=$(((64 + DP_SIZE - 1) / DP_SIZE * DP_SIZE))
  PLAN_WORDS_ARGS=(--default-alignment-words 64)  # the same rule for the other node counts
fi
ALIGNMENT_TEMPERATURE="${ALIGNMENT_TEMPERATURE:-0.1}"

# --- schedule: the README's PreAlign recipe (500 pre-alignment steps, then ~20B tokens) ---
SEQ_LENGTH="${SEQ_LENGTH:-1024}"
PREALIGN_ITERS="${PREALIGN_ITERS:-500}"
TRAIN_ITERS="${TRAIN_ITERS:-20000}"
LR_WARMUP_ITERS="${LR_WARMUP_ITERS:-500}"

# --- precision ---
FP8="${FP8:-0}"
BF16="${BF16:-1}"
TRANSFORMER_IMPL="${TRANSFORMER_IMPL:-transformer_engine}"
OVERLAP="${OVERLAP:-1}"
if [[ "${FP8}" == "1" ]]; then GPU="${GPU:-h100}"; else GPU="${GPU:-a100}"; fi
MFU="${MFU:-0.40}"

# --- outputs ---
RUNS_ROOT="${RUNS_ROOT:-${ROOT}/runs}"
RUN_DIR="${RUN_DIR:-${RUNS_ROOT}/prealign_${MODEL_SIZE}}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-${RUN_DIR}/checkpoints}"
LOG_DIR="${LOG_DIR:-${RUN_DIR}/logs}"
SAVE_INTERVAL="${SAVE_INTERVAL:-1000}"
EVAL_INTERVAL="${EVAL_INTERVAL:-1000}"
EVAL_ITERS="${EVAL_ITERS:-10}"
LOG_INTERVAL="${LOG_INTERVAL:-10}"

# Model flags shared by the sizes: the named size, plus explicit overrides when given.
model_size_args() {
  MODEL_SIZE_ARGS=(--model-size "${MODEL_SIZE}" --model-family gpt2 --seq-length "${SEQ_LENGTH}")
  if [[ -n "${NUM_LAYERS:-}" ]]; then MODEL_SIZE_ARGS+=(--num-layers "${NUM_LAYERS}"); fi
  if [[ -n "${HIDDEN_SIZE:-}" ]]; then MODEL_SIZE_ARGS+=(--hidden-size "${HIDDEN_SIZE}"); fi
  if [[ -n "${NUM_ATTENTION_HEADS:-}" ]]; then MODEL_SIZE_ARGS+=(--num-attention-heads "${NUM_ATTENTION_HEADS}"); fi
  if [[ -n "${MAX_POSITION_EMBEDDINGS:-}" ]]; then
    MODEL_SIZE_ARGS+=(--max-position-embeddings "${MAX_POSITION_EMBEDDINGS}")
  fi
  if [[ -n "${PADDED_VOCAB_SIZE}" ]]; then MODEL_SIZE_ARGS+=(--padded-vocab-size "${PADDED_VOCAB_SIZE}"); fi
}

# --recompute-granularity from RECOMPUTE=none|selective|full.
recompute_args() {
  case "${RECOMPUTE}" in
    none) RECOMPUTE_ARGS=() ;;
    selective) RECOMPUTE_ARGS=(--recompute-granularity selective) ;;
    full) RECOMPUTE_ARGS=(--recompute-granularity full --recompute-method uniform --recompute-num-layers 1) ;;
    *) echo "error: RECOMPUTE=${RECOMPUTE}: choose none, selective or full" >&2; exit 2 ;;
  esac
}

precision_args() {
  PRECISION_ARGS=(--transformer-impl "${TRANSFORMER_IMPL}")
  if [[ "${BF16}" == "1" ]]; then PRECISION_ARGS+=(--bf16); fi
  if [[ "${FP8}" == "1" ]]; then
    PRECISION_ARGS+=(--fp8-format hybrid)
    if [[ "${TRANSFORMER_IMPL}" != "transformer_engine" ]]; then
      echo "error: FP8=1 needs TRANSFORMER_IMPL=transformer_engine" >&2
      exit 2
    fi
  fi
}

# Assemble the groups every size shares (after the size script set its variables).
common_args() {
  local data_path_args
  read -r -a data_path_args <<< "${DATA_PATH}"
  DATA_ARGS=(--data-path "${data_path_args[@]}" --split "${SPLIT}"
    --tokenizer-type "${TOKENIZER_TYPE}" --tokenizer-model "${TOKENIZER_MODEL}")
  PREALIGN_ARGS=()
  if ((PREALIGN_ITERS > 0)); then
    PREALIGN_ARGS=(--alignment-table "${ALIGNMENT_TABLE}" --prealign-iters "${PREALIGN_ITERS}"
      --alignment-words-per-batch "${ALIGNMENT_WORDS_PER_BATCH}"
      --alignment-temperature "${ALIGNMENT_TEMPERATURE}")
    if [[ -n "${ALIGNMENT_LANGUAGES}" ]]; then
      local languages
      read -r -a languages <<< "${ALIGNMENT_LANGUAGES}"
      PREALIGN_ARGS+=(--alignment-languages "${languages[@]}")
    fi
  fi
  OUTPUT_ARGS=(--save "${CHECKPOINT_DIR}" --load "${CHECKPOINT_DIR}" --save-interval "${SAVE_INTERVAL}"
    --log-interval "${LOG_INTERVAL}" --eval-interval "${EVAL_INTERVAL}" --eval-iters "${EVAL_ITERS}"
    --log-json "${LOG_DIR}/train.jsonl" --tensorboard-dir "${LOG_DIR}/tensorboard")
  OVERLAP_ARGS=()
  if [[ "${OVERLAP}" == "1" && " ${PARALLEL_ARGS[*]} " == *" --use-distributed-optimizer "* ]]; then
    OVERLAP_ARGS=(--overlap-grad-reduce --overlap-param-gather)
  fi
  DISTRIBUTED_ARGS=(--nnodes "${NNODES}" --node-rank "${NODE_RANK}" --master-addr "${MASTER_ADDR}"
    --master-port "${MASTER_PORT}" --nproc-per-node "${GPUS_PER_NODE}")
}

# prealign_launch [--dry-run] [extra pretrain flags...]
prealign_launch() {
  local dry_run=0 extra=() arg
  for arg in "$@"; do
    if [[ "${arg}" == "--dry-run" ]]; then dry_run=1; else extra+=("${arg}"); fi
  done
  common_args
  local pretrain_args=("${MODEL_ARGS[@]}" "${PARALLEL_ARGS[@]}" "${OVERLAP_ARGS[@]}" "${TRAINING_ARGS[@]}"
    "${DATA_ARGS[@]}" "${PREALIGN_ARGS[@]}" "${OUTPUT_ARGS[@]}" "${extra[@]}")
  local command=("${PYTHON}" -m torch.distributed.run "${DISTRIBUTED_ARGS[@]}"
    -m megatron_prealign.pretrain "${pretrain_args[@]}")

  if ((dry_run)); then
    echo "torchrun command (node ${NODE_RANK} of ${NNODES}):"
    printf '%q ' "${command[@]}"
    echo
    echo
    PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}" "${PYTHON}" -m megatron_prealign.cli.launch_plan \
      --nnodes "${NNODES}" --gpus-per-node "${GPUS_PER_NODE}" --gpu "${GPU}" --mfu "${MFU}" \
      --assumed-vocab-size "${VOCAB_SIZE}" --format "${PLAN_FORMAT:-text}" \
      "${PLAN_WORDS_ARGS[@]}" --node-counts "${NODE_COUNTS[@]}" -- "${pretrain_args[@]}"
    return
  fi

  mkdir -p "${CHECKPOINT_DIR}" "${LOG_DIR}"
  # Preemption: the training processes save a checkpoint and exit cleanly on SIGUSR1 (SLURM's
  # --signal=USR1@120) or SIGTERM. SLURM signals every process of the step; torchrun must survive
  # USR1 (its default action is to die), so it starts with USR1 ignored (inherited across exec;
  # the training processes install their own handler). Where only this shell gets the signal
  # (docker's signal proxy, a plain `kill`), it forwards USR1 / TERM to the training processes.
  trap '' USR1
  "${command[@]}" &
  TORCHRUN_PID=$!
  trap 'signal_workers USR1' USR1
  trap 'signal_workers TERM' TERM
  local status
  while true; do
    status=0
    wait "${TORCHRUN_PID}" || status=$?
    if ! kill -0 "${TORCHRUN_PID}" 2> /dev/null; then break; fi  # wait was interrupted by a signal
  done
  return "${status}"
}

# signal_workers SIG: send SIG to torchrun's children (the training processes).
signal_workers() {
  local children=()
  if [[ -r "/proc/${TORCHRUN_PID}/task/${TORCHRUN_PID}/children" ]]; then
    read -r -a children <<< "$(cat "/proc/${TORCHRUN_PID}"/task/*/children 2> /dev/null)"
  elif command -v pgrep > /dev/null; then
    read -r -a children <<< "$(pgrep -P "${TORCHRUN_PID}" | tr '\n' ' ')"
  fi
  echo "launcher: forwarding SIG$1 to the training processes (${children[*]:-none found})" >&2
  if ((${#children[@]})); then kill -s "$1" "${children[@]}" 2> /dev/null || true; fi
}
