# shellcheck shell=bash
# The built-in synthetic corpus made into training data by the real tools (sourced by
# examples/cpu_smoke.sh and examples/gpu_check.sh): SentencePiece tokenizer, alignment table,
# input-only codeswitched English and plain German indexed datasets. Needs ROOT and PYTHON.

# prepare_synthetic_data DIR: writes DIR/{spm.model,table.jsonl,en_text_document,de_text_document}
# (once; a later call with the same DIR reuses them).
prepare_synthetic_data() {
  local dir="$1"
  mkdir -p "${dir}"
  if [[ ! -f "${dir}/en_text_document.idx" ]]; then
    "${PYTHON}" -m megatron_prealign.data.synthetic "${dir}" > /dev/null
    "${PYTHON}" "${ROOT}/tools/train_tokenizer.py" --input "${dir}/en.jsonl" "${dir}/de.jsonl" \
      --json-key text --vocab-size 600 --model-prefix "${dir}/spm" --no-hard-vocab-limit --no-progress
    "${PYTHON}" "${ROOT}/tools/build_alignment_table.py" --input "${dir}/en.jsonl" --json-key text \
      --dictionary "de=${dir}/en-de.txt" --output "${dir}/table.jsonl" --min-count 3 --no-progress
    "${PYTHON}" "${ROOT}/tools/preprocess_data.py" --input "${dir}/en.jsonl" --json-keys text \
      --output-prefix "${dir}/en" --tokenizer-type SentencePieceTokenizer \
      --tokenizer-model "${dir}/spm.model" --append-eod --alignment-table "${dir}/table.jsonl" \
      --codeswitch-languages de --codeswitch-ratio 0.05 --codeswitch-mode input-only --no-progress
    "${PYTHON}" "${ROOT}/tools/preprocess_data.py" --input "${dir}/de.jsonl" --json-keys text \
      --output-prefix "${dir}/de" --tokenizer-type SentencePieceTokenizer \
      --tokenizer-model "${dir}/spm.model" --append-eod --codeswitch-mode none --no-progress
  fi
}
