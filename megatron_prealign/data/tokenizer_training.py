"""Training tokenizers offline: SentencePiece (byte fallback) and a byte-level BPE.

``tools/train_tokenizer.py`` and the tests use these. Corpus lines are sampled across files by
weight with a bounded reservoir per file, so memory is O(max_sentences) whatever the corpus size.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import shutil
from typing import Iterable, List, Optional, Sequence, Tuple

from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.jsonl_input import iter_raw_lines, parse_document

EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"


def _iter_file_sentences(path: str, json_key: str, skip: SkipCounter) -> Iterable[str]:
    for p, line_no, raw in iter_raw_lines([path]):
        try:
            text = parse_document(raw, [json_key], p, line_no)[json_key]
        except BadInputError as err:
            skip.raise_or_count(err)
            continue
        for sentence in text.split("\n"):
            if sentence.strip():
                yield sentence


def sample_sentences(
    files: Sequence[str],
    json_key: str,
    max_sentences: int,
    weights: Optional[Sequence[float]] = None,
    seed: int = 0,
    skip: Optional[SkipCounter] = None,
    progress=None,
) -> Tuple[List[str], List[dict]]:
    """Sample paragraphs (lines of the documents' text) across ``files`` by ``weights``.

    The total is ``T = min(max_sentences, number of lines in all files)`` and file i contributes
    ``T * w_i / sum(w)`` lines: a uniform sample of its lines, repeated when the file is smaller
    than its share (so a small, highly weighted language still gets its weight, but the total
    never exceeds the corpus). One pass; memory is O(max_sentences). Returns the sentences
    (shuffled) and per-file statistics.
    """
    weights = list(weights) if weights else [1.0] * len(files)
    if len(weights) != len(files):
        raise ValueError(f"--weights has {len(weights)} values for {len(files)} input files")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("--weights must be non-negative and not all zero")
    skip = skip or SkipCounter(False)
    rng = random.Random(seed)
    total_w = sum(weights)
    reservoirs: List[List[str]] = []
    seen_counts: List[int] = []
    for path, w in zip(files, weights):
        quota = int(round(max_sentences * w / total_w))  # the largest share file i can get
        reservoir: List[str] = []
        seen = 0
        for sentence in _iter_file_sentences(path, json_key, skip):
            seen += 1
            if len(reservoir) < quota:
                reservoir.append(sentence)
            else:
                j = rng.randrange(seen)
                if j < quota:
                    reservoir[j] = sentence
            if progress is not None:
                progress.update(1)
        rng.shuffle(reservoir)  # any prefix of a shuffled uniform sample is a uniform sample
        reservoirs.append(reservoir)
        seen_counts.append(seen)
    target = min(max_sentences, sum(seen_counts))
    sentences: List[str] = []
    stats = []
    for path, w, reservoir, seen in zip(files, weights, reservoirs, seen_counts):
        share = int(round(target * w / total_w))
        if reservoir and share > len(reservoir):
            picked = (reservoir * math.ceil(share / len(reservoir)))[:share]
        else:
            picked = reservoir[:share]
        stats.append({"file": path, "weight": w, "sentences": seen, "sampled": len(picked)})
        sentences.extend(picked)
    rng.shuffle(sentences)
    return sentences, stats


def train_sentencepiece(
    sentences: Sequence[str],
    model_prefix: str,
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 0.9995,
    hard_vocab_limit: bool = True,
    num_threads: int = 1,
) -> str:
    """Train a SentencePiece model with byte fallback; writes ``PREFIX.model`` / ``PREFIX.vocab``.

    ids: 0 <unk>, 1 <s>, 2 </s> (the EOD megatron-core uses), no pad. Digits are split so numbers
    do not eat vocabulary. Written to temporary names and renamed, like every output here.
    """
    import sentencepiece as spm

    if not sentences:
        raise ValueError("no training sentences")
    tmp_prefix = f"{model_prefix}.tmp-{os.getpid()}"
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=tmp_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            character_coverage=character_coverage,
            split_digits=True,
            hard_vocab_limit=hard_vocab_limit,
            input_sentence_size=0,
            max_sentence_length=1 << 16,
            num_threads=num_threads,
            minloglevel=2,
        )
        # SentencePiece does not report a failed write (a full disk leaves 0-byte files): check
        # that the new model loads and matches its .vocab before it replaces anything.
        verify_sentencepiece(tmp_prefix + ".model", tmp_prefix + ".vocab", model_prefix)
        os.replace(tmp_prefix + ".vocab", model_prefix + ".vocab")
        os.replace(tmp_prefix + ".model", model_prefix + ".model")
    finally:
        for ext in (".model", ".vocab"):
            if os.path.exists(tmp_prefix + ext):
                os.remove(tmp_prefix + ext)
    return model_prefix + ".model"


class TokenizerOutputError(OSError):
    """A tokenizer written by a trainer is missing, empty or does not load."""


def verify_sentencepiece(model_path: str, vocab_path: str, final_prefix: str) -> None:
    """Raise :class:`TokenizerOutputError` unless ``model_path`` loads and ``vocab_path`` lists
    exactly its pieces."""
    import sentencepiece as spm

    directory = os.path.dirname(os.path.abspath(final_prefix))
    problem = None
    for path in (model_path, vocab_path):
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            problem = f"{os.path.basename(path)} is empty or missing"
            break
    if problem is None:
        try:
            size = spm.SentencePieceProcessor(model_file=model_path).get_piece_size()
            with open(vocab_path, encoding="utf-8") as handle:
                lines = sum(1 for _ in handle)
            if lines != size:
                problem = f"{vocab_path} has {lines} lines for {size} pieces"
        except (OSError, RuntimeError, UnicodeDecodeError) as error:
            problem = f"the written model does not load ({error})"
    if problem is not None:
        raise TokenizerOutputError(
            f"writing {final_prefix}.model / .vocab failed: {problem} (no space left on device in "
            f"{directory}?); any earlier {final_prefix}.model is unchanged")


def train_byte_level_bpe(sentences: Sequence[str], out_dir: str, vocab_size: int) -> str:
    """Train a GPT-2 style byte-level BPE with ``tokenizers``; save it as a directory that
    megatron-core's ``HuggingFaceTokenizer`` (``transformers.AutoTokenizer``) loads.

    Special tokens: ``<|endoftext|>`` (id 0, EOD/eos) and ``<pad>`` (id 1).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: text is tokenized as written, a word after a space gets "Ġ".
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOD_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOD_TOKEN,
        "bos_token": EOD_TOKEN,
        "unk_token": EOD_TOKEN,
        "pad_token": PAD_TOKEN,
        "model_max_length": 1 << 30,
        "clean_up_tokenization_spaces": False,
    }
    # Written into a new sibling directory, checked (it loads, same vocabulary), then renamed
    # into place; an existing out_dir is replaced only after that.
    out_dir = os.path.abspath(out_dir)
    tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
    old_dir = f"{out_dir}.old-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        os.makedirs(tmp_dir)
        tokenizer.save(os.path.join(tmp_dir, "tokenizer.json"))
        with open(os.path.join(tmp_dir, "tokenizer_config.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=1)
        try:
            loaded = Tokenizer.from_file(os.path.join(tmp_dir, "tokenizer.json"))
            json.load(open(os.path.join(tmp_dir, "tokenizer_config.json"), encoding="utf-8"))
        except Exception as error:  # tokenizers raises plain Exception subclasses
            raise TokenizerOutputError(
                f"writing {out_dir} failed: the written tokenizer does not load ({error}; no space "
                f"left on device?); any earlier {out_dir} is unchanged") from error
        if loaded.get_vocab_size() != tokenizer.get_vocab_size():
            raise TokenizerOutputError(f"writing {out_dir} failed: the written tokenizer is incomplete")
        if os.path.isdir(out_dir):
            os.rename(out_dir, old_dir)
        os.rename(tmp_dir, out_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def _byte_decoder() -> dict:
    """GPT-2's printable character -> byte mapping of byte-level BPE tokens (the inverse of
    ``bytes_to_unicode``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def write_gpt2_files(hf_dir: str, out_dir: str) -> Tuple[str, str]:
    """``vocab.json`` and ``merges.txt`` (the files of ``--tokenizer-type GPT2BPETokenizer``) of a
    byte-level BPE directory written by :func:`train_byte_level_bpe`. Returns their paths."""
    from tokenizers import Tokenizer

    os.makedirs(out_dir, exist_ok=True)
    model = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json")).model
    vocab, merges = model.save(out_dir)
    return vocab, merges


def write_tiktoken_vocab(hf_dir: str, path: str) -> int:
    """A tiktoken vocabulary in megatron-core's ``TikTokenizer`` JSON format (a list of
    ``{rank, token_bytes, token_str}``) from a byte-level BPE directory: the 256 bytes, then each
    merge's token in merge order. Returns the number of tokens."""
    with open(os.path.join(hf_dir, "tokenizer.json"), encoding="utf-8") as handle:
        merges = json.load(handle)["model"]["merges"]
    to_byte = _byte_decoder()
    tokens = [bytes([b]) for b in range(256)]
    seen = set(tokens)
    for merge in merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        token = bytes(to_byte[c] for c in left + right)
        if token not in seen:
            seen.add(token)
            tokens.append(token)
    vocab = [{"rank": i, "token_bytes": base64.b64encode(t).decode("ascii"),
              "token_str": t.decode("utf-8", "replace")} for i, t in enumerate(tokens)]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(vocab, handle)
    return len(vocab)
