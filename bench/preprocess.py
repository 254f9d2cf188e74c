#!/usr/bin/env python
"""Benchmark tools/preprocess_data.py against the tokenizer's own batch encoding.

On a generated English corpus of about --mb MB (megatron_prealign.data.synthetic) with a
tokenizer of --tokenizer-family (--vocab-size, default 4000, trained on the generated en/de/zh
text) and an alignment table (de + zh), each round measures, on the same text and the same
number of cores (--workers):

* the tokenizer alone: the tokenizer library's own batch encoder on batches of the already
  parsed texts (no JSON, no files), --workers threads: the ceiling preprocessing can reach,
  except that SentencePiece BPE text goes through preprocessing's chunk cache
  (megatron_prealign/data/chunk_cache.py, the same ids), which can beat it (ratios above 1).
  Per family (the ``--tokenizer-type`` preprocessing uses, and the limit):

  - ``sentencepiece`` (SentencePieceTokenizer, a SentencePiece BPE):
    ``SentencePieceProcessor.encode(list, num_threads=W)``;
  - ``hf`` (HuggingFaceTokenizer, a byte-level BPE directory): ``tokenizers``
    ``Tokenizer.encode_batch(list)``, RAYON_NUM_THREADS=W;
  - ``gpt2bpe`` (GPT2BPETokenizer, the same BPE as vocab.json + merges.txt): the same
    ``tokenizers`` batch encoder on the byte-level BPE built from the two files;
  - ``tiktoken`` (TikTokenizer, the same merges as a tiktoken vocabulary):
    ``tiktoken.Encoding.encode_batch(list, num_threads=W, allowed_special="all")``;
* ``run_preprocess`` with input-only codeswitching (ratio 0.05) and ``--workers`` processes:
  reading JSON lines, encoding, codeswitching, writing tokens and masks;
* (once) the whole process: ``tools/preprocess_data.py`` as a subprocess, start to exit, and
  the peak resident memory of its main process and of its largest worker.

Value: median over the --repeats rounds of (tokenizer time / preprocessing loop time) on the same
bytes, the loop timed as the tool reports it (workers started, every chunk written and
committed; not the one-time tokenizer and table setup, reported as ``value_whole_call``).
Target: >= 0.9. The last line printed is a JSON object with metric, value, target and the
details. On a busy machine use a smaller --mb (the ratio is per byte).

``--whole SMALL LARGE`` (MB) instead compares whole processes, start to exit, on corpora of two
sizes: ``tools/preprocess_data.py`` with input-only codeswitching against a plain Megatron-LM-style
run (bench/preprocess_reference.py: no codeswitching, megatron-core's tokenizer and writer, the
tokenizer built in every worker), same SentencePiece model, input and --workers, the two
alternated --repeats times per size. ``--corpus FILE`` cuts the sizes from the leading lines of
real text instead of generating English (whose small vocabulary flatters the chunk cache), and
``--tokenizer-model`` gives the SentencePiece model. Reported per size and tool: median CPU time (user + system
of the process and its workers) and wall time; from the two sizes, each tool's fixed start-up
CPU and CPU per MB. Value: CPU-time ratio (ours / reference) at the larger size; targets (issue
30): <= 0.8 at ~60 MB, <= 0.7 at ~600 MB.

    .venv/bin/python bench/preprocess.py [--mb 50] [--workers 2] [--repeats 3] \
        [--tokenizer-family {sentencepiece,hf,tiktoken,gpt2bpe}]
    .venv/bin/python bench/preprocess.py --whole 60 600 --vocab-size 8000 --repeats 3 \
        [--corpus real.jsonl --tokenizer-model spm.model]
"""

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

from megatron_prealign.data.preprocess import PreprocessSettings, run_preprocess  # noqa: E402
from megatron_prealign.data.synthetic import (  # noqa: E402
    corpus_sentences,
    english_document,
    make_assets,
)
from megatron_prealign.data.tokenizer import tokenizer_spec  # noqa: E402
from megatron_prealign.data.tokenizer_training import (  # noqa: E402
    train_byte_level_bpe,
    train_sentencepiece,
    write_gpt2_files,
    write_tiktoken_vocab,
)

FAMILIES = ("sentencepiece", "hf", "tiktoken", "gpt2bpe")


def family_tokenizer(family: str, directory: str, sentences, vocab_size: int, workers: int):
    """Train the family's tokenizer files; returns (tokenizer spec, the tool's tokenizer flags,
    the library's batch encoder: list of texts -> token count, its description)."""
    if family == "sentencepiece":
        import sentencepiece

        model = train_sentencepiece(sentences, os.path.join(directory, "bench_spm"), vocab_size,
                                    hard_vocab_limit=False)
        sp = sentencepiece.SentencePieceProcessor(model_file=model)
        return (tokenizer_spec(tokenizer_type="SentencePieceTokenizer", tokenizer_model=model),
                ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", model],
                lambda batch: sum(map(len, sp.encode(batch, num_threads=workers))),
                f"SentencePiece encode(list, num_threads={workers})")
    bbpe = train_byte_level_bpe(sentences, os.path.join(directory, "bench_bbpe"), vocab_size)
    if family == "hf":
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(os.path.join(bbpe, "tokenizer.json"))
        return (tokenizer_spec(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=bbpe),
                ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", bbpe],
                lambda batch: sum(len(e.ids) for e in backend.encode_batch(batch)),
                f"tokenizers Tokenizer.encode_batch, {workers} rayon threads")
    if family == "gpt2bpe":
        from megatron_prealign.data.library_tokenizers import gpt2_bpe_tokenizer

        vocab, merges = write_gpt2_files(bbpe, os.path.join(directory, "bench_gpt2"))
        spec = tokenizer_spec(tokenizer_type="GPT2BPETokenizer", vocab_file=vocab, merge_file=merges)
        backend = gpt2_bpe_tokenizer(spec).backend_tokenizer
        return (spec, ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", vocab, "--merge-file", merges],
                lambda batch: sum(len(e.ids) for e in backend.encode_batch(batch)),
                f"tokenizers ByteLevel BPE (vocab.json + merges.txt) encode_batch, {workers} rayon threads")
    if family == "tiktoken":
        from megatron_prealign.data.library_tokenizers import TikTokenText

        path = os.path.join(directory, "bench_tiktoken.json")
        size = 1000 + write_tiktoken_vocab(bbpe, path)
        encoding = TikTokenText(path, vocab_size=size).tokenizer
        return (tokenizer_spec(tokenizer_type="TikTokenizer", tokenizer_model=path, vocab_size=size),
                ["--tokenizer-type", "TikTokenizer", "--tokenizer-model", path, "--vocab-size", str(size)],
                lambda batch: sum(map(len, encoding.encode_batch(batch, num_threads=workers,
                                                                 allowed_special="all"))),
                f"tiktoken encode_batch(num_threads={workers}, allowed_special='all')")
    raise ValueError(family)


def write_corpus(path: str, megabytes: float, seed: int = 1) -> int:
    """JSON lines of generated English documents, streamed until ``megabytes`` are written."""
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < megabytes * 1e6:
            line = json.dumps({"text": english_document(rng, 20)}, ensure_ascii=False) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
    return written


def cpu_seconds() -> float:
    return sum(r.ru_utime + r.ru_stime for r in
               (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed_process(command) -> dict:
    """Wall and CPU time (user + system, the process and its reaped workers) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        raise RuntimeError(f"{command[1]} failed:\n{result.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def cut_corpus(source: str, path: str, megabytes: float) -> int:
    """The leading whole lines of ``source`` up to ``megabytes``; refuses a source too small."""
    written = 0
    with open(source, "rb") as src, open(path, "wb") as out:
        for line in src:
            if written >= megabytes * 1e6:
                return written
            out.write(line)
            written += len(line)
    if written < 0.98 * megabytes * 1e6:
        raise SystemExit(f"--corpus {source} has {written / 1e6:.1f} MB, fewer than {megabytes} MB")
    return written


def whole_process(tmp: str, model: str, table: str, sizes_mb, repeats: int, workers: int,
                  ratio: float, source: str = None) -> dict:
    """The --whole comparison (module docstring); returns the JSON line's fields."""
    per_size = []
    for mb in sizes_mb:
        corpus = os.path.join(tmp, f"whole-{mb}.jsonl")
        nbytes = cut_corpus(source, corpus, mb) if source else write_corpus(corpus, mb, seed=2)
        out = os.path.join(tmp, "whole-out")
        commands = {
            "ours": [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"),
                     "--input", corpus, "--output-prefix", out + "-ours",
                     "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", model,
                     "--append-eod", "--workers", str(workers), "--alignment-table", table,
                     "--codeswitch-mode", "input-only", "--codeswitch-ratio", str(ratio),
                     "--no-progress"],
            "reference": [sys.executable, os.path.join(ROOT, "bench", "preprocess_reference.py"),
                          "--input", corpus, "--output-prefix", out + "-ref",
                          "--tokenizer-model", model, "--append-eod", "--workers", str(workers)],
        }
        runs = {"ours": [], "reference": []}
        for i in range(repeats):  # alternated, the first one swapped every round
            for name in (("ours", "reference") if i % 2 == 0 else ("reference", "ours")):
                runs[name].append(timed_process(commands[name]))
        row = {"mb": round(nbytes / 1e6, 2)}
        for name, rs in runs.items():
            row[name] = {"cpu_s": round(statistics.median(r["cpu_s"] for r in rs), 3),
                         "wall_s": round(statistics.median(r["wall_s"] for r in rs), 3),
                         "cpu_runs": [round(r["cpu_s"], 3) for r in rs]}
        row["cpu_ratio"] = round(row["ours"]["cpu_s"] / row["reference"]["cpu_s"], 4)
        row["wall_ratio"] = round(row["ours"]["wall_s"] / row["reference"]["wall_s"], 4)
        per_size.append(row)
        print(f"{row['mb']:.1f} MB: ours CPU {row['ours']['cpu_s']:.2f} s / wall "
              f"{row['ours']['wall_s']:.2f} s, reference CPU {row['reference']['cpu_s']:.2f} s / "
              f"wall {row['reference']['wall_s']:.2f} s; CPU ratio {row['cpu_ratio']:.3f}, "
              f"wall ratio {row['wall_ratio']:.3f}", flush=True)
    split = {}
    if len(per_size) >= 2:
        small, large = per_size[0], per_size[-1]
        for name in ("ours", "reference"):
            per_mb = (large[name]["cpu_s"] - small[name]["cpu_s"]) / (large["mb"] - small["mb"])
            split[name] = {"cpu_s_per_mb": round(per_mb, 4),
                           "startup_cpu_s": round(small[name]["cpu_s"] - per_mb * small["mb"], 3)}
        split["per_mb_ratio"] = round(split["ours"]["cpu_s_per_mb"] / split["reference"]["cpu_s_per_mb"], 4)
        print(f"CPU per MB: ours {split['ours']['cpu_s_per_mb']:.3f} s, reference "
              f"{split['reference']['cpu_s_per_mb']:.3f} s (ratio {split['per_mb_ratio']:.3f}); "
              f"start-up CPU: ours {split['ours']['startup_cpu_s']:.2f} s, reference "
              f"{split['reference']['startup_cpu_s']:.2f} s")
    return {"metric": "preprocess_whole_process_cpu_ratio_vs_megatron_lm_style",
            "value": per_size[-1]["cpu_ratio"], "target": 0.7 if per_size[-1]["mb"] >= 300 else 0.8,
            "lower_is_better": True, "targets_issue_30": {"~60 MB": 0.8, "~600 MB": 0.7},
            "sizes": per_size, "startup_and_per_mb": split, "repeats": repeats,
            "workers": workers, "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size in MB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.05)
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--batch-docs", type=int, default=256,
                        help="documents per tokenizer call in the tokenizer-only measurement")
    parser.add_argument("--whole", type=float, nargs="+", metavar="MB",
                        help="compare whole processes against a Megatron-LM-style run at these "
                             "corpus sizes (module docstring; SentencePiece only)")
    parser.add_argument("--corpus", help="--whole: JSON lines ('text') to cut the sizes from "
                        "(its leading lines) instead of generated English")
    parser.add_argument("--tokenizer-model", help="--whole: this SentencePiece model instead of "
                        "one trained on the generated text")
    parser.add_argument("--tokenizer-family", choices=FAMILIES, default="sentencepiece",
                        help="tokenizer of the ratio measurement (module docstring)")
    args = parser.parse_args()
    if args.whole and args.tokenizer_family != "sentencepiece":
        parser.error("--whole compares SentencePiece runs (the reference tool's tokenizer)")
    if (args.corpus or args.tokenizer_model) and not args.whole:
        parser.error("--corpus and --tokenizer-model go with --whole")
    # The tokenizers library's thread pool, for its batch encoder (read when first used); the
    # preprocessing workers encode single-threaded (TOKENIZERS_PARALLELISM=false there).
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        assets = make_assets(os.path.join(tmp, "assets"))
        corpus = os.path.join(tmp, "corpus.jsonl")
        corpus_bytes = write_corpus(corpus, args.mb)
        sentences = corpus_sentences([assets["en"], assets["de"], assets["zh"]])
        if args.whole:
            model = args.tokenizer_model or train_sentencepiece(
                sentences, os.path.join(tmp, "bench_spm"), args.vocab_size, hard_vocab_limit=False)
            print(json.dumps(whole_process(tmp, model, assets["table"], args.whole, args.repeats,
                                           args.workers, args.ratio, args.corpus)))
            return 0
        tok, tok_flags, library_encode, library_name = family_tokenizer(
            args.tokenizer_family, tmp, sentences, args.vocab_size, args.workers)
        settings = PreprocessSettings(
            tokenizer=tok, json_keys=["text"], append_eod=True,
            alignment_table=assets["table"], languages=["de", "zh"],
            codeswitch_ratio=args.ratio, codeswitch_mode="input-only", seed=1,
        )
        with open(corpus, encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle]

        def tokenizer_only() -> dict:
            wall, cpu = time.perf_counter(), cpu_seconds()
            tokens = 0
            for i in range(0, len(texts), args.batch_docs):
                tokens += library_encode(texts[i : i + args.batch_docs])
            return {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu, "tokens": tokens}

        def preprocess() -> dict:
            wall, cpu = time.perf_counter(), cpu_seconds()
            summary = run_preprocess([corpus], os.path.join(tmp, "out"), settings,
                                     workers=args.workers, progress=False)
            # The loop as the tool times it (workers started, every chunk written); the call
            # also builds the tokenizer and the table's token forms once.
            summary.update(wall_s=summary["elapsed_s"], call_s=time.perf_counter() - wall,
                           cpu_s=cpu_seconds() - cpu)
            return summary

        # Warm-up on the first 1000 documents: one-time imports and caches are not measured.
        warm = os.path.join(tmp, "warm.jsonl")
        with open(corpus, encoding="utf-8") as src, open(warm, "w", encoding="utf-8") as dst:
            dst.writelines(line for _, line in zip(range(1000), src))
        run_preprocess([warm], os.path.join(tmp, "warm"), settings, workers=args.workers,
                       progress=False)
        library_encode(texts[:1000])
        load_before = os.getloadavg()
        base, pre = [], []
        for _ in range(args.repeats):  # interleaved, so that load changes hit both
            base.append(tokenizer_only())
            pre.append(preprocess())

        # The whole process, as a user runs it (interpreter start, imports, table, workers).
        command = [
            sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"),
            "--input", corpus, "--json-keys", "text", "--output-prefix", os.path.join(tmp, "cli"),
            *tok_flags,
            "--append-eod", "--workers", str(args.workers), "--alignment-table", assets["table"],
            "--codeswitch-languages", "de", "zh", "--codeswitch-ratio", str(args.ratio),
            "--seed", "1", "--no-progress",
        ]
        wall = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": ROOT})
        whole_s = time.perf_counter() - wall
        if result.returncode:
            print(result.stdout, result.stderr, file=sys.stderr)
            return 1
        load_after = os.getloadavg()

    paired = [b["wall_s"] / p["wall_s"] for b, p in zip(base, pre)]
    paired_cpu = [b["cpu_s"] / p["cpu_s"] for b, p in zip(base, pre)]
    paired_call = [b["wall_s"] / p["call_s"] for b, p in zip(base, pre)]
    ratio, ratio_cpu = statistics.median(paired), statistics.median(paired_cpu)
    mbps = lambda runs: corpus_bytes / 1e6 / statistics.median(r["wall_s"] for r in runs)  # noqa: E731
    peak_worker = max(p["peak_rss_worker_mib"] for p in pre)
    peak_main = max(p["peak_rss_main_mib"] for p in pre)
    print(f"corpus: {corpus_bytes / 1e6:.1f} MB, {len(texts)} documents, {base[0]['tokens']} tokens; "
          f"{args.workers} workers / threads on {os.cpu_count()} CPUs, {args.repeats} rounds")
    print(f"tokenizer only ({library_name}): {mbps(base):.2f} MB/s "
          f"(median wall {statistics.median(r['wall_s'] for r in base):.2f} s)")
    print(f"preprocessing, input-only r={args.ratio}: {mbps(pre):.2f} MB/s "
          f"(median wall {statistics.median(r['wall_s'] for r in pre):.2f} s; "
          f"{pre[0]['switched_words']} words switched, {pre[0]['masked_tokens']} tokens masked)")
    print(f"preprocessing / tokenizer throughput per round: {', '.join(f'{r:.3f}' for r in paired)} "
          f"(median {ratio:.3f}); by CPU time {ratio_cpu:.3f}; "
          f"whole call incl. tokenizer and table setup {statistics.median(paired_call):.3f}")
    print(f"whole process (tools/preprocess_data.py, {args.workers} workers): {whole_s:.2f} s "
          f"= {corpus_bytes / 1e6 / whole_s:.2f} MB/s")
    print(f"peak memory: main process {peak_main:.0f} MiB, largest worker {peak_worker:.0f} MiB "
          f"(in-process runs; the main process of this bench also holds the parsed corpus)")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(result.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "metric": "preprocess_vs_tokenizer_throughput_ratio",
        "value": round(ratio, 4),
        "tokenizer_family": args.tokenizer_family,
        "tokenizer_limit": library_name,
        "target": 0.9,
        "higher_is_better": True,
        "per_round": [round(r, 4) for r in paired],
        "value_cpu_time": round(ratio_cpu, 4),
        "value_whole_call": round(statistics.median(paired_call), 4),
        "tokenizer_mb_per_s": round(mbps(base), 3),
        "preprocess_mb_per_s": round(mbps(pre), 3),
        "whole_process_s": round(whole_s, 2),
        "corpus_mb": round(corpus_bytes / 1e6, 2),
        "peak_rss_worker_mib": round(peak_worker),
        "peak_rss_worker_target_mib": 1024,
        "workers": args.workers,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
