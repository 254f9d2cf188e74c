#!/usr/bin/env python
"""A plain Megatron-LM-style preprocessing run: the reference of bench/preprocess.py --whole.

Written here after the flow of Megatron-LM's ``tools/preprocess_data.py`` (not a copy of it, and
not Megatron-LM itself, which is not installed): megatron-core's tokenizer builder and
``indexed_dataset`` imported before the arguments are read (so torch too), a process pool whose
initializer builds the tokenizer in every worker, ``imap`` over the input lines in chunks of 32,
per document ``json.loads`` and ``tokenize`` (+ EOD), ``IndexedDatasetBuilder.add_document`` per
document in the main process. No codeswitching, no loss masks.

    python bench/preprocess_reference.py --input c.jsonl --output-prefix out \\
        --tokenizer-model spm.model --workers 2 [--append-eod]
"""

import argparse
import json
import multiprocessing
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.core.datasets import indexed_dataset  # noqa: E402

from megatron_prealign.data.tokenizer import build_tokenizer  # noqa: E402  (megatron-core's)

_STATE = {}


def _init(model):
    _STATE["tokenizer"] = build_tokenizer("SentencePieceTokenizer", model)


def _encode(line, append_eod):
    tokenizer = _STATE["tokenizer"]
    ids = tokenizer.tokenize(json.loads(line)["text"])
    if ids and append_eod:
        ids.append(tokenizer.eod)
    return ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--tokenizer-model", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--append-eod", action="store_true")
    args = parser.parse_args()
    _init(args.tokenizer_model)  # the main process needs the vocabulary size too
    dtype = indexed_dataset.DType.optimal_dtype(_STATE["tokenizer"].vocab_size)
    prefix = args.output_prefix + "_text_document"
    builder = indexed_dataset.IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    with open(args.input, encoding="utf-8") as fin, \
            multiprocessing.Pool(args.workers, initializer=_init,
                                 initargs=(args.tokenizer_model,)) as pool:
        encode = _Encode(args.append_eod)
        for ids in pool.imap(encode, fin, 32):
            if ids:
                builder.add_document(ids, [len(ids)])
        pool.close()
        pool.join()
    builder.finalize(prefix + ".idx")
    return 0


class _Encode:
    def __init__(self, append_eod):
        self.append_eod = append_eod

    def __call__(self, line):
        return _encode(line, self.append_eod)


if __name__ == "__main__":
    sys.exit(main())
