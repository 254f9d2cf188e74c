#!/usr/bin/env python
"""Where preprocessing's CPU time goes per MB, ours against the Megatron-LM-style reference.

On a generated corpus of --mb MB (bench/preprocess.py's generator) with a SentencePiece BPE of
--vocab-size pieces and the de + zh alignment table, in this one process (no worker pool; CPU
seconds from ``time.process_time``):

* the limit: SentencePiece's batch ``encode(list, num_threads=1)`` on the parsed texts;
* ours: the worker loop (``preprocess._process_block`` over the tool's 256 KB blocks: JSON,
  batch encoding, input-only codeswitching at 0.05, uint16 arrays), pickling its results both
  ways (what the pool sends), the main process's writing (``PairedIndexedWriter``);
* the reference (bench/preprocess_reference.py's steps): per line ``json.loads`` +
  megatron-core ``tokenize`` + EOD, pickling the id lists in chunks of 32, ``add_document``.

Then a cProfile of the worker loop (top functions by own time). Value: CPU per MB ours /
reference (lower is better; it is what the whole-process CPU ratio of ``bench/preprocess.py
--whole`` tends to for large corpora, start-up aside). Last line: JSON.

    .venv/bin/python bench/preprocess_breakdown.py [--mb 10] [--vocab-size 8000]
"""

import argparse
import cProfile
import io
import json
import os
import pickle
import pstats
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

from bench.preprocess import write_corpus  # noqa: E402
from megatron_prealign.data import preprocess as pp  # noqa: E402
from megatron_prealign.data.indexed_writer import PairedIndexedWriter  # noqa: E402
from megatron_prealign.data.jsonl_input import iter_line_blocks  # noqa: E402
from megatron_prealign.data.synthetic import corpus_sentences, make_assets  # noqa: E402
from megatron_prealign.data.tokenizer import tokenizer_spec  # noqa: E402
from megatron_prealign.data.tokenizer_training import train_sentencepiece  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args()
    import numpy as np
    import sentencepiece

    clock = time.process_time
    cpu = {}
    with tempfile.TemporaryDirectory() as tmp:
        assets = make_assets(os.path.join(tmp, "assets"))
        corpus = os.path.join(tmp, "corpus.jsonl")
        mb = write_corpus(corpus, args.mb, seed=2) / 1e6
        model = train_sentencepiece(corpus_sentences([assets["en"], assets["de"], assets["zh"]]),
                                    os.path.join(tmp, "spm"), args.vocab_size, hard_vocab_limit=False)
        with open(corpus, encoding="utf-8") as handle:
            lines = handle.readlines()
        texts = [json.loads(line)["text"] for line in lines]
        sp = sentencepiece.SentencePieceProcessor(model_file=model)
        sp.encode(texts[:200], num_threads=1)
        t = clock()
        sp.encode(texts, num_threads=1)
        cpu["limit_sentencepiece_batch_encode"] = clock() - t

        settings = pp.PreprocessSettings(
            tokenizer=tokenizer_spec(tokenizer_type="SentencePieceTokenizer", tokenizer_model=model),
            json_keys=["text"], append_eod=True, alignment_table=assets["table"],
            languages=["de", "zh"], codeswitch_ratio=0.05, codeswitch_mode="input-only", seed=1)
        pp._init_worker(settings, 1)
        blocks = list(iter_line_blocks([corpus], pp.BLOCK_BYTES))
        pp._process_block(blocks[0])  # compiled kernels loaded
        t = clock()
        results = [pp._process_block(b) for b in blocks]
        cpu["ours_worker_loop"] = clock() - t
        t = clock()
        # what the pool's result queue costs: blobs this process just pickled itself
        for blob in [pickle.dumps(r) for r in results]:
            pickle.loads(blob)
        cpu["ours_pickle_results"] = clock() - t
        writer = PairedIndexedWriter(os.path.join(tmp, "ours_text_document"), args.vocab_size,
                                     with_loss_mask=True)
        t = clock()
        for r in results:
            for batch in r.per_key:
                writer.add_documents(batch.ids, batch.lengths, batch.mask)
        writer.commit()
        cpu["ours_main_write"] = clock() - t
        profile = cProfile.Profile()
        profile.enable()
        for b in blocks:
            pp._process_block(b)
        profile.disable()

        from megatron.core.datasets import indexed_dataset

        from megatron_prealign.data.tokenizer import build_tokenizer

        tok = build_tokenizer("SentencePieceTokenizer", model)
        t = clock()
        ref = []
        for line in lines:
            ids = tok.tokenize(json.loads(line)["text"])
            ids.append(tok.eod)
            ref.append(ids)
        cpu["reference_worker_loop"] = clock() - t
        t = clock()
        for blob in [pickle.dumps(ref[i:i + 32]) for i in range(0, len(ref), 32)]:  # own blobs, as above
            pickle.loads(blob)
        cpu["reference_pickle_results"] = clock() - t
        builder = indexed_dataset.IndexedDatasetBuilder(os.path.join(tmp, "ref.bin"), dtype=np.uint16)
        t = clock()
        for ids in ref:
            builder.add_document(ids, [len(ids)])
        builder.finalize(os.path.join(tmp, "ref.idx"))
        cpu["reference_main_write"] = clock() - t

    per_mb = {k: v / mb for k, v in cpu.items()}
    ours = sum(v for k, v in per_mb.items() if k.startswith("ours"))
    reference = sum(v for k, v in per_mb.items() if k.startswith("reference"))
    for k, v in per_mb.items():
        print(f"{k:36s} {v:.4f} CPU s per MB")
    print(f"{'ours total':36s} {ours:.4f}\n{'reference total':36s} {reference:.4f}")
    stream = io.StringIO()
    pstats.Stats(profile, stream=stream).sort_stats("tottime").print_stats(8)
    print(stream.getvalue().strip().split("\n\n", 1)[-1])
    print(json.dumps({
        "metric": "preprocess_cpu_per_mb_ratio_vs_megatron_lm_style", "value": round(ours / reference, 4),
        "lower_is_better": True, "ours_cpu_s_per_mb": round(ours, 4),
        "reference_cpu_s_per_mb": round(reference, 4),
        "limit_cpu_s_per_mb": round(per_mb["limit_sentencepiece_batch_encode"], 4),
        "floor_ratio_tokenizing_only": round(per_mb["limit_sentencepiece_batch_encode"] / reference, 4),
        "per_mb": {k: round(v, 4) for k, v in per_mb.items()}, "corpus_mb": round(mb, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
