"""Tokenizers of the preprocessing path built straight from the tokenizer library.

megatron-core's wrappers import torch and megatron-core (and transformers for the Hugging Face
families: seconds per process) and add a Python call per document. Where the wrapper only
forwards to a library object built from the tokenizer files, the preprocessing path builds that
object itself (:func:`megatron_prealign.data.tokenizer.build_text_tokenizer`), so
:class:`~megatron_prealign.data.text_encoder.TextEncoder` calls the library's own batch encoder.
tests/test_library_tokenizers.py checks ids, special ids, vocabulary size and text against
megatron-core's wrapper on varied text; every case these builders refuse (``None``) goes to
megatron-core's own tokenizer.

* ``HuggingFaceTokenizer`` with a directory: the ``tokenizers`` tokenizer of its
  ``tokenizer.json`` (:func:`hf_directory_tokenizer`), where transformers would use that file as
  it is (a generic fast tokenizer class, no settings that change encoding, every named special
  token already a special added token, no truncation or padding).
* ``GPT2BPETokenizer`` with ``--vocab-file`` / ``--merge-file``: GPT-2's byte-level BPE built
  by ``tokenizers`` from the two files as transformers' ``GPT2Tokenizer`` builds it
  (:func:`gpt2_bpe_tokenizer`). (megatron-core 0.19 loads it through
  ``AutoTokenizer.from_pretrained("gpt2", vocab_file=..., merges_file=...)``, which needs the
  Hugging Face hub or its cache for the name "gpt2".)
* ``TikTokenizer``: the ``tiktoken.Encoding`` megatron-core builds from the vocabulary JSON
  (:class:`TikTokenText`): ranks shifted by ``--tiktoken-num-special-tokens``, the special
  tokens first, pattern v1/v2.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from typing import Any, Dict, List, Optional

# --------------------------------------------------------------------------- Hugging Face

# tokenizer_config.json keys that do not change how transformers encodes text with the
# tokenizer.json as it is (decoding: clean_up_tokenization_spaces, see HFFastText.detokenize).
_HF_CONFIG_KEYS = {
    "tokenizer_class", "model_max_length", "clean_up_tokenization_spaces", "padding_side",
    "truncation_side", "model_input_names", "chat_template", "name_or_path", "added_tokens_decoder",
    "additional_special_tokens", "extra_special_tokens", "backend", "errors", "split_special_tokens",
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
}
_HF_NAMED = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_HF_GENERIC_CLASSES = (None, "PreTrainedTokenizerFast", "TokenizersBackend")


def _content(token: Any) -> Optional[str]:
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict):
        return token.get("content")
    return None


def _read_json(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class HFFastText:
    """A ``tokenizers.Tokenizer`` with the interface the data pipeline reads from megatron-core's
    ``HuggingFaceTokenizer`` wrapper: ``tokenize`` = ``tokenizer(text).input_ids`` (special tokens
    of the post-processor included, Megatron-LM's default) or, with
    ``--tokenizer-hf-no-include-special-tokens``, the tokens without them; ``eod`` = the eos
    token (else sep), ``bos`` = the bos token (else cls), ``vocab_size`` = ``len(tokenizer)``."""

    def __init__(self, backend, special: Dict[str, Optional[str]], include_special_tokens: bool,
                 clean_up_tokenization_spaces: bool = False) -> None:
        backend.no_truncation()
        backend.no_padding()
        self.backend_tokenizer = backend
        self.include_special_tokens = include_special_tokens
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        eos = special.get("eos_token") or special.get("sep_token")
        bos = special.get("bos_token") or special.get("cls_token")
        self.eod: Optional[int] = backend.token_to_id(eos) if eos else None
        self.bos: Optional[int] = backend.token_to_id(bos) if bos else None

    @property
    def _tokenizer(self) -> "HFFastText":
        """Where TextEncoder looks for the library object of a megatron-core wrapper."""
        return self

    @property
    def tokenizer(self) -> "HFFastText":
        """As transformers' tokenizer: ``.backend_tokenizer`` is the ``tokenizers`` object."""
        return self

    def tokenize(self, text: str) -> List[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=self.include_special_tokens).ids

    def detokenize(self, ids) -> str:
        text = self.backend_tokenizer.decode(list(ids), skip_special_tokens=not self.include_special_tokens)
        if self.clean_up_tokenization_spaces:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                         (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text


def hf_directory_tokenizer(spec: Dict[str, Any]) -> Optional[HFFastText]:
    """:class:`HFFastText` of a ``HuggingFaceTokenizer`` directory, or None where transformers
    might encode differently from its ``tokenizer.json`` (module docstring)."""
    path = spec["tokenizer_model"]
    if (not path or not os.path.isdir(path) or spec["tokenizer_hf_no_use_fast"]
            or spec["special_tokens"] or spec["tokenizer_metadata"] or spec["trust_remote_code"]
            or spec["vocab_file"] or spec["merge_file"]):
        return None
    tokenizer_file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tokenizer_file):
        return None
    config = _read_json(os.path.join(path, "tokenizer_config.json"))
    special_map = _read_json(os.path.join(path, "special_tokens_map.json"))
    if set(config) - _HF_CONFIG_KEYS or config.get("tokenizer_class") not in _HF_GENERIC_CLASSES:
        return None
    if config.get("split_special_tokens") or config.get("errors", "replace") != "replace":
        return None
    if set(special_map) - set(_HF_NAMED) - {"additional_special_tokens"}:
        return None
    with open(tokenizer_file, encoding="utf-8") as handle:
        raw = json.load(handle)
    if raw.get("truncation") is not None or raw.get("padding") is not None:
        return None
    added = {t["content"]: t for t in raw.get("added_tokens", [])}
    special = {name: _content(special_map.get(name, config.get(name))) for name in _HF_NAMED}
    extra = [_content(t) for key in ("additional_special_tokens", "extra_special_tokens")
             for t in (config.get(key) or special_map.get(key) or [])]
    # Every special token transformers registers must already be a special added token of the
    # file (else transformers adds it or changes how it splits the text).
    for token in [t for t in special.values() if t] + extra:
        if token is None or token not in added or not added[token]["special"]:
            return None
    for index, entry in (config.get("added_tokens_decoder") or {}).items():
        mine = added.get(entry.get("content"))
        if mine is None or mine["id"] != int(index) or any(
                entry.get(k, mine[k]) != mine[k] for k in
                ("special", "lstrip", "rstrip", "normalized", "single_word")):
            return None
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(tokenizer_file)
    return HFFastText(backend, special, not spec["tokenizer_hf_no_include_special_tokens"],
                      bool(config.get("clean_up_tokenization_spaces", False)))


GPT2_EOD = "<|endoftext|>"


def gpt2_bpe_tokenizer(spec: Dict[str, Any]) -> Optional[HFFastText]:
    """GPT-2's byte-level BPE from ``--vocab-file`` / ``--merge-file``, built by ``tokenizers`` as
    transformers' ``GPT2Tokenizer`` builds it (BPE without unknown token, byte-level
    pre-tokenizer without prefix space, ``<|endoftext|>`` the special bos/eos/unk token), or None
    (megatron-core's path) with ``--special-tokens`` or a vocabulary without ``<|endoftext|>``."""
    vocab_file, merge_file = spec["vocab_file"], spec["merge_file"]
    if (not vocab_file or not merge_file or not os.path.isfile(vocab_file)
            or not os.path.isfile(merge_file) or spec["special_tokens"] or spec["tokenizer_metadata"]):
        return None
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model = models.BPE.from_file(vocab_file, merge_file, dropout=None, continuing_subword_prefix="",
                                 end_of_word_suffix="", fuse_unk=False)
    backend = Tokenizer(model)
    if backend.token_to_id(GPT2_EOD) is None:
        return None
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(GPT2_EOD, special=True, normalized=False)])
    special = {"bos_token": GPT2_EOD, "eos_token": GPT2_EOD, "unk_token": GPT2_EOD}
    return HFFastText(backend, special, not spec["tokenizer_hf_no_include_special_tokens"])


# --------------------------------------------------------------------------- tiktoken

# megatron-core 0.19's TikTokenTokenizer constants (tests compare them with megatron-core's).
TIKTOKEN_PATTERNS = {
    "v1": r"[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "v2": "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",  # noqa: E501
}
TIKTOKEN_DEFAULT_VOCAB = 2**17
TIKTOKEN_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<mask>", "<pad>", "<cls>", "<sep>"]


class TikTokenText:
    """megatron-core's ``TikTokenizer`` for the data pipeline without torch / megatron-core: the
    same ``tiktoken.Encoding`` (ranks of the JSON vocabulary shifted by ``num_special_tokens``,
    the special tokens ``<unk> <s> </s> <mask> <pad> <cls> <sep>`` (or ``--special-tokens``)
    then ``<SPECIAL_i>`` fillers at ids 0..num_special_tokens-1), ``tokenize`` =
    ``encode(text, allowed_special="all")`` (special-token text in a document becomes the special
    id, as in megatron-core), ``eod`` = ``</s>``, ``bos`` = ``<s>``."""

    def __init__(self, path: str, special_tokens: Optional[List[str]] = None,
                 num_special_tokens: int = 1000, pattern: str = "v2",
                 vocab_size: int = TIKTOKEN_DEFAULT_VOCAB) -> None:
        import tiktoken

        special_tokens = list(special_tokens) if special_tokens else list(TIKTOKEN_SPECIAL_TOKENS)
        if pattern not in TIKTOKEN_PATTERNS:
            raise ValueError(f"Expected tiktoken pattern to be `v1` or `v2`, but got {pattern}.")
        if (len(set(special_tokens)) != len(special_tokens)
                or not len(special_tokens) <= num_special_tokens < vocab_size
                or not set(TIKTOKEN_SPECIAL_TOKENS) <= set(special_tokens)):
            raise ValueError(f"invalid tiktoken special tokens / sizes: {special_tokens}, "
                             f"{num_special_tokens}, {vocab_size}")
        self.special_tokens = special_tokens + [
            f"<SPECIAL_{i}>" for i in range(len(special_tokens), num_special_tokens)]
        self.num_special_tokens = num_special_tokens
        self.vocab_size = vocab_size
        self.eod = special_tokens.index("</s>")
        self.bos = special_tokens.index("<s>")
        ranks = _tiktoken_ranks(path, vocab_size - num_special_tokens, num_special_tokens)
        if set(ranks.values()) != set(range(num_special_tokens, vocab_size)):
            raise ValueError(f"{path}: the vocabulary has fewer than {vocab_size - num_special_tokens} "
                             "tokens (--vocab-size)")
        self.tokenizer = tiktoken.Encoding(
            name=os.path.basename(os.path.dirname(os.path.abspath(path))),
            pat_str=TIKTOKEN_PATTERNS[pattern], mergeable_ranks=ranks,
            special_tokens={t: i for i, t in enumerate(self.special_tokens)},
        )

    @property
    def _tokenizer(self) -> "TikTokenText":
        return self

    def tokenize(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, allowed_special="all")

    def detokenize(self, ids) -> str:
        ids = list(ids)
        return self.tokenizer.decode(ids) if ids else ""


def _tiktoken_ranks(path: str, max_vocab: int, num_special_tokens: int) -> Dict[bytes, int]:
    """megatron-core's ``reload_mergeable_ranks``: the JSON list of {rank, token_bytes,
    token_str}, cut to ``max_vocab``, ranks shifted by ``num_special_tokens``."""
    if not path.endswith(".json"):
        raise ValueError(f"{path}: a TikTokenizer vocabulary is a .json file")
    with open(path, encoding="utf-8") as handle:
        vocab = json.load(handle)
    ranks: Dict[bytes, int] = {}
    for i, entry in enumerate(vocab[:max_vocab]):
        token = base64.b64decode(entry["token_bytes"])
        if set(entry) != {"rank", "token_bytes", "token_str"} or entry["rank"] != i or (
                i < 256 and token != bytes([i])):
            raise ValueError(f"{path}: entry {i} is not a tiktoken vocabulary entry of rank {i}")
        ranks[token] = i + num_special_tokens
    if len(ranks) != min(len(vocab), max_vocab):
        raise ValueError(f"{path}: repeated token bytes")
    return ranks


def tiktoken_text(spec: Dict[str, Any]) -> Optional[TikTokenText]:
    """:class:`TikTokenText` of a ``TikTokenizer`` spec, or None (megatron-core's path) where
    tiktoken is not installed or with --tokenizer-metadata."""
    path = spec["tokenizer_model"]
    if not path or not os.path.isfile(path) or spec["tokenizer_metadata"]:
        return None

    if importlib.util.find_spec("tiktoken") is None:
        return None
    return TikTokenText(path, spec["special_tokens"], spec["tiktoken_num_special_tokens"],
                        spec["tiktoken_pattern"] or "v2", spec["vocab_size"] or TIKTOKEN_DEFAULT_VOCAB)
