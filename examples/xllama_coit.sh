#!/usr/bin/env bash
# x-LLaMA-X: cross-lingual instruction tuning (CoIT) of a base model for one target language X
# (English Alpaca + Alpaca in X + English->X translation pairs), with the reference code's
# hyperparameters. Usage (environment variables in examples/xllama_common.sh and
# examples/launch_common.sh):
#   # 1. data (once), see docs/instruction_tuning.md:
#   python tools/build_instruction_data.py --recipe coit --target-lang zh \
#       --instruction-data en=alpaca_en.json zh=alpaca_zh.json \
#       --translation-data en-zh=news-commentary.en-zh.jsonl en-zh=WikiMatrix.en-zh \
#       --output-prefix data/coit_zh --tokenizer-type SentencePieceTokenizer \
#       --tokenizer-model data/tokenizer.model --seq-length 512 --workers 8 \
#       --add-bos   # a LLaMA imported from Hugging Face was pretrained with <s> first
#   # 2. look, then launch (every node, its NODE_RANK; or sbatch examples/slurm_pretrain.sbatch)
#   TARGET_LANG=zh examples/xllama_coit.sh --dry-run
#   TARGET_LANG=zh PRETRAINED_CHECKPOINT=runs/llama7b examples/xllama_coit.sh
set -euo pipefail
EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_COUNTS=(1 2 4)  # layouts checked by --dry-run
TARGET_LANG="${TARGET_LANG:-zh}"
DATA_DIR="${DATA_DIR:-$(cd "${EXAMPLES}/.." && pwd)/data}"
DATA_PATH="${DATA_PATH:-${DATA_DIR}/coit_${TARGET_LANG}_text_document}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-${DATA_DIR}/tokenizer.model}"
RUN_DIR="${RUN_DIR:-${RUNS_ROOT:-$(cd "${EXAMPLES}/.." && pwd)/runs}/xllama_coit_${TARGET_LANG}}"

# shellcheck source=examples/xllama_common.sh
source "${EXAMPLES}/xllama_common.sh"
xllama_launch "$@"
