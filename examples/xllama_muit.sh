#!/usr/bin/env bash
# x-LLaMA MuIT: multilingual instruction tuning, one model for several target languages (the
# union of the CoIT data of every language: English Alpaca, Alpaca in each language, English->X
# translation pairs for each), with the reference code's hyperparameters. Usage (environment
# variables in examples/xllama_common.sh and examples/launch_common.sh):
#   # 1. data (once), see docs/instruction_tuning.md:
#   python tools/build_instruction_data.py --recipe muit --target-langs ar el hi tr vi zh \
#       --instruction-data en=alpaca_en.json ar=alpaca_ar.json el=alpaca_el.json ... \
#       --translation-data en-ar=pairs.en-ar.jsonl en-el=pairs.en-el.jsonl ... \
#       --output-prefix data/muit --tokenizer-type SentencePieceTokenizer \
#       --tokenizer-model data/tokenizer.model --seq-length 512 --workers 8 \
#       --add-bos   # a LLaMA imported from Hugging Face was pretrained with <s> first
#   # 2. look, then launch (every node, its NODE_RANK; or sbatch examples/slurm_pretrain.sbatch)
#   NNODES=2 examples/xllama_muit.sh --dry-run
#   NNODES=2 PRETRAINED_CHECKPOINT=runs/llama7b examples/xllama_muit.sh
set -euo pipefail
EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_COUNTS=(1 2 4)  # layouts checked by --dry-run
DATA_DIR="${DATA_DIR:-$(cd "${EXAMPLES}/.." && pwd)/data}"
DATA_PATH="${DATA_PATH:-${DATA_DIR}/muit_text_document}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-${DATA_DIR}/tokenizer.model}"
RUN_DIR="${RUN_DIR:-${RUNS_ROOT:-$(cd "${EXAMPLES}/.." && pwd)/runs}/xllama_muit}"

# shellcheck source=examples/xllama_common.sh
source "${EXAMPLES}/xllama_common.sh"
xllama_launch "$@"
