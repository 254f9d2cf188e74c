"""Data pipeline for PreAlign (user docs: docs/data.md).

Modules (one concept each):
    words               what an English word is (NLTK counting, regex)
    alignment_table     the table format, reading/writing, seen/held-out split
    dictionaries        MUSE and paper JSON-lines bilingual dictionaries
    table_builder       counting, selection, coverage (tools/build_alignment_table.py)
    tokenizer           megatron-core tokenizers from Megatron-LM flags
    tokenizer_training  SentencePiece / byte-level BPE training (tools/train_tokenizer.py)
    text_encoder        fast ids, token classes and running-text word forms
    codeswitch          input-only / original codeswitching of documents
    jsonl_input         streaming JSON-lines input with file:line errors
    bad_input           BadInputError, --skip-bad-lines counting
    atomic              atomic text outputs
    indexed_writer      token + _loss_mask indexed datasets, atomic
    parallel            ordered, bounded parallel map
    preprocess          the pipeline of tools/preprocess_data.py
    lm_dataset          MaskedGPTDataset, lm_dataset_config (training LM data)
    alignment_words     AlignmentWordDataset / WordFormBatch (pre-alignment batches)
    enclone             En-Clone mapping, clone data and table
    synthetic           generated corpus + tokenizers for tests, benchmarks, demos
"""
