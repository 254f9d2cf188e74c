#!/usr/bin/env python
"""Benchmark the table builder's word counting: the fast finder against NLTK's tokenizer.

On a generated English corpus of about --mb MB (megatron_prealign.data.synthetic documents; one in
--varied-every also gets sentences with quotes, clitics, contractions, dashes and other scripts,
so that more of NLTK's rules fire), each of --repeats rounds counts all words twice in this
process: with the definition (``count_words``, NLTK's ``NLTKWordTokenizer``: what the table
builder used before) and with ``corpus_words`` (what it uses now; a fresh ``WordFinder`` each round,
so that filling its cache of pieces is timed too). Both counters must be equal
(the bench fails otherwise). Then (once) ``count_corpus_words`` with --workers processes (the
tool's parallel path: chunks counted in workers, counts summed), also checked equal.

Value: median over rounds of (NLTK CPU time / fast CPU time); wall-time ratios are printed too. Target: >= 5. The last line printed is a
JSON object with metric, value, target and the details.

    .venv/bin/python bench/build_table.py [--mb 4] [--repeats 3] [--workers 2]
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.data.bad_input import SkipCounter  # noqa: E402
from megatron_prealign.data.synthetic import english_document  # noqa: E402
from megatron_prealign.data.table_builder import count_corpus_words  # noqa: E402
from megatron_prealign.data.words import WordFinder, count_words  # noqa: E402

VARIED = [
    'She said "it\'s the bank\'s money," and they didn\'t argue.',
    "We can't, won't and cannot go; I'm gonna try -- maybe. 'Tis true.",
    "The state-of-the-art model (v2.1) costs $3,000 (about 2,800 EUR) in the U.S.",
    "He asked: 'Why?' ... then left! Prices rose 5% on 12/03/2024; see p. 4.",
    "Ünïcödé café naïve — résumé – Straße; 银行 和 河岸。 Русский текст, hindi हिंदी.",
    "They'd've known; you're right, we'll see, O'Neil's rock'n'roll band.",
]


def make_texts(megabytes: float, varied_every: int, seed: int = 1):
    rng = random.Random(seed)
    texts, size = [], 0
    while size < megabytes * 1e6:
        text = english_document(rng, 20)
        if varied_every and len(texts) % varied_every == 0:
            text += " " + " ".join(rng.sample(VARIED, 3))
        texts.append(text)
        size += len(text.encode("utf-8"))
    return texts, size


def read_texts(path: str, megabytes: float):
    texts, size = [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if size >= megabytes * 1e6:
                break
            texts.append(json.loads(line)["text"])
            size += len(texts[-1].encode("utf-8"))
    return texts, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=4.0, help="corpus size in MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--varied-every", type=int, default=4,
                        help="every N-th document gets varied sentences (0: none)")
    parser.add_argument("--input", help="instead of generated text: the first --mb MB of this "
                        "JSON-lines file's 'text' (real text, e.g. the real-language demo's "
                        "results/demo_real/work/text/en_train.jsonl)")
    args = parser.parse_args()
    texts, size = read_texts(args.input, args.mb) if args.input else make_texts(args.mb, args.varied_every)

    def timed(words_of):
        # CPU time of this (single-threaded) process: on a shared machine less noisy than wall
        # time, which is reported too.
        start, wall = time.process_time(), time.perf_counter()
        counts = Counter()
        for text in texts:
            counts.update(words_of(text))
        walls.append(time.perf_counter() - wall)
        return time.process_time() - start, counts

    nltk_s, fast_s, walls = [], [], []
    for _ in range(args.repeats):  # interleaved, so that load changes hit both
        t, reference = timed(count_words)
        nltk_s.append(t)
        t, fast = timed(WordFinder())  # a fresh cache each round
        fast_s.append(t)
        if fast != reference:
            print("error: the fast counts differ from NLTK's", file=sys.stderr)
            return 1

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.jsonl")
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
        start = time.perf_counter()
        parallel = count_corpus_words([path], "text", SkipCounter(False), args.workers)
        parallel_s = time.perf_counter() - start
    if parallel != reference:
        print("error: the parallel counts differ from one pass", file=sys.stderr)
        return 1

    speedups = [n / f for n, f in zip(nltk_s, fast_s)]
    wall_speedups = [n / f for n, f in zip(walls[0::2], walls[1::2])]
    value = statistics.median(speedups)
    mb = size / 1e6
    print(f"corpus: {mb:.1f} MB, {len(texts)} documents, {sum(reference.values())} words, "
          f"{len(reference)} types; counts identical")
    print(f"NLTK (count_words):    {mb / statistics.median(nltk_s):.2f} MB per CPU second "
          f"(median {statistics.median(nltk_s):.2f} s)")
    print(f"fast (corpus_words):   {mb / statistics.median(fast_s):.2f} MB per CPU second "
          f"(median {statistics.median(fast_s):.2f} s)")
    print(f"speed-up per round (CPU time): {', '.join(f'{s:.2f}' for s in speedups)} "
          f"(median {value:.2f}); by wall time: {', '.join(f'{s:.2f}' for s in wall_speedups)}")
    print(f"tool path (count_corpus_words, {args.workers} workers, JSON parsing included): "
          f"{mb / parallel_s:.2f} MB/s; counts identical; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({
        "metric": "word_count_speedup_vs_nltk",
        "value": round(value, 3),
        "target": 5.0,
        "higher_is_better": True,
        "per_round": [round(s, 3) for s in speedups],
        "per_round_wall": [round(s, 3) for s in wall_speedups],
        "nltk_mb_per_s": round(mb / statistics.median(nltk_s), 3),
        "fast_mb_per_s": round(mb / statistics.median(fast_s), 3),
        "tool_mb_per_s_workers": round(mb / parallel_s, 3),
        "workers": args.workers,
        "corpus_mb": round(mb, 2),
        "counts_identical": True,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
