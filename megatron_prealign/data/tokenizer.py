"""Building a megatron-core tokenizer from Megatron-LM's command-line flags.

Tools and training call :func:`build_tokenizer` (or :func:`add_tokenizer_args` +
:func:`build_tokenizer_from_args`), which fills in Megatron-LM's defaults and delegates to
megatron-core's own ``megatron.core.tokenizers.utils.build_tokenizer`` so that the flag ->
library mapping is exactly Megatron-LM's:

* ``SentencePieceTokenizer`` / ``GPTSentencePieceTokenizer`` / ``Llama2Tokenizer``:
  ``--tokenizer-model`` is a SentencePiece ``.model`` file. For preprocessing,
  :func:`build_text_tokenizer` gives the SentencePiece processor itself where megatron-core's
  wrapper only forwards to it (:class:`SentencePieceText`): no torch / megatron-core import.
* ``HuggingFaceTokenizer``: ``--tokenizer-model`` is a directory (or hub name; nothing is
  downloaded at run time here, so use a directory) loaded with ``transformers.AutoTokenizer``.
  A byte-level BPE trained with the ``tokenizers`` library is saved as such a directory by
  :func:`megatron_prealign.data.tokenizer_training.train_byte_level_bpe`.
* ``GPT2BPETokenizer`` etc. with ``--vocab-file`` / ``--merge-file``; ``NullTokenizer`` with
  ``--vocab-size``; ``TikTokenizer`` (``--tokenizer-model`` a tiktoken JSON vocabulary,
  ``--vocab-size``, ``--tiktoken-num-special-tokens``, ``--tiktoken-pattern``).

For preprocessing, :func:`build_text_tokenizer` also builds ``HuggingFaceTokenizer``
directories, ``GPT2BPETokenizer`` files and ``TikTokenizer`` vocabularies straight with their
library (:mod:`.library_tokenizers`) where that gives megatron-core's ids.
"""

from __future__ import annotations

import argparse
import os
from types import SimpleNamespace
from typing import Any, Dict, Optional
from megatron_prealign.data import library_tokenizers
from megatron_prealign.errors import ConfigError

# Megatron-LM's defaults for every tokenizer setting we take (its flag names, megatron-core 0.19).
_DEFAULTS: Dict[str, Any] = dict(
    tokenizer_type=None,
    tokenizer_model=None,
    vocab_file=None,
    merge_file=None,
    vocab_size=None,
    special_tokens=None,
    tokenizer_hf_no_use_fast=False,
    tokenizer_hf_no_include_special_tokens=False,
    trust_remote_code=False,
    tokenizer_sentencepiece_legacy=False,
    tokenizer_metadata=None,
    tiktoken_pattern=None,
    tiktoken_num_special_tokens=1000,
)

# What megatron-core's build_tokenizer reads besides the settings above, fixed here: no chat
# template (prompts are rendered by instruct/templates.py), SentencePiece's own whitespace
# handling (the library's default, as in earlier releases), and no vocabulary padding (the
# model pads, training/vocab.py).
_LIBRARY_FIXED: Dict[str, Any] = dict(
    chat_template=None,
    tokenizer_sentencepiece_ignore_extra_whitespaces=True,
    pad_vocab_size=False,
)

TOKENIZER_TYPES = (
    "SentencePieceTokenizer",
    "GPTSentencePieceTokenizer",
    "Llama2Tokenizer",
    "HuggingFaceTokenizer",
    "GPT2BPETokenizer",
    "BertWordPieceLowerCase",
    "BertWordPieceCase",
    "TikTokenizer",
    "NullTokenizer",
)


def tokenizer_spec(**kwargs: Any) -> Dict[str, Any]:
    """A plain, picklable dict of tokenizer settings (Megatron-LM names), defaults filled in."""
    unknown = set(kwargs) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown tokenizer settings: {sorted(unknown)}")
    spec = dict(_DEFAULTS)
    spec.update({k: v for k, v in kwargs.items() if v is not None})
    if spec["tokenizer_type"] not in TOKENIZER_TYPES:
        raise ConfigError(
            f"--tokenizer-type {spec['tokenizer_type']!r} is not one of {', '.join(TOKENIZER_TYPES)}"
        )
    return spec


def build_tokenizer(tokenizer_type: str, tokenizer_model: Optional[str] = None, **kwargs: Any):
    """Build a megatron-core tokenizer (``MegatronTokenizerBase``) from Megatron-LM settings."""
    from megatron.core.tokenizers.utils.build_tokenizer import build_tokenizer as _mcore_build_tokenizer

    spec = tokenizer_spec(tokenizer_type=tokenizer_type, tokenizer_model=tokenizer_model, **kwargs)
    library_args = dict(spec, **_LIBRARY_FIXED)
    library_args["metadata_path"] = library_args.pop("tokenizer_metadata")
    return _mcore_build_tokenizer(SimpleNamespace(**library_args))


def build_tokenizer_from_spec(spec: Dict[str, Any]):
    return build_tokenizer(**spec)


SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer")


class SentencePieceText:
    """A SentencePiece model with the interface the data pipeline reads from megatron-core's
    tokenizer, for the settings where megatron-core 0.19's wrapper only forwards to the
    processor (not legacy, no --special-tokens, no metadata, the library's whitespace handling):
    ``tokenize`` = ``encode_as_ids``, ``detokenize`` = ``decode_ids``, ``eod`` = ``eos_id()``,
    ``bos`` = ``bos_id()``, ``vocab_size`` = the piece count. tests/test_startup.py compares it
    with megatron-core's tokenizer."""

    def __init__(self, model_path: str) -> None:
        import sentencepiece

        self.tokenizer = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self.vocab_size: int = self.tokenizer.get_piece_size()
        self.eod: int = self.tokenizer.eos_id()
        self.bos: int = self.tokenizer.bos_id()

    @property
    def _tokenizer(self) -> "SentencePieceText":
        """Where TextEncoder finds the library object of megatron-core's wrapper (its ``.tokenizer``
        is the processor)."""
        return self

    def tokenize(self, text: str):
        return self.tokenizer.encode_as_ids(text)

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode_ids(list(ids))


def build_text_tokenizer(spec: Dict[str, Any]):
    """The tokenizer of the preprocessing path: the tokenizer library's own object where it gives
    exactly megatron-core's ids, else megatron-core's own (which imports torch and megatron-core,
    and transformers for the Hugging Face families; each costs seconds per process):

    * SentencePiece types: :class:`SentencePieceText`;
    * ``HuggingFaceTokenizer`` with a directory, ``GPT2BPETokenizer`` with vocab and merges files:
      the ``tokenizers`` tokenizer (:mod:`.library_tokenizers`);
    * ``TikTokenizer``: the ``tiktoken`` encoding (:class:`.library_tokenizers.TikTokenText`).
    """
    kind = spec["tokenizer_type"]
    if (kind in SENTENCEPIECE_TYPES and not spec["tokenizer_sentencepiece_legacy"]
            and not spec["special_tokens"] and not spec["tokenizer_metadata"]
            and spec["tokenizer_model"] and os.path.isfile(spec["tokenizer_model"])):
        return SentencePieceText(spec["tokenizer_model"])
    if kind in ("HuggingFaceTokenizer", "GPT2BPETokenizer", "TikTokenizer"):
        build = {"HuggingFaceTokenizer": library_tokenizers.hf_directory_tokenizer,
                 "GPT2BPETokenizer": library_tokenizers.gpt2_bpe_tokenizer,
                 "TikTokenizer": library_tokenizers.tiktoken_text}[kind]
        tokenizer = build(spec)
        if tokenizer is not None:
            return tokenizer
    return build_tokenizer_from_spec(spec)


def add_tokenizer_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add Megatron-LM's tokenizer flags to ``parser``."""
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES)
    group.add_argument("--tokenizer-model", help="SentencePiece .model file or HF directory")
    group.add_argument("--vocab-file")
    group.add_argument("--merge-file")
    group.add_argument("--vocab-size", type=int, help="only for NullTokenizer / TikTokenizer")
    group.add_argument("--tokenizer-hf-no-use-fast", action="store_true",
                       help="HuggingFaceTokenizer: the Python tokenizer instead of the fast one")
    group.add_argument("--tokenizer-hf-no-include-special-tokens", action="store_true")
    group.add_argument("--trust-remote-code", action="store_true")
    group.add_argument("--special-tokens", nargs="+")
    group.add_argument("--tokenizer-sentencepiece-legacy", action="store_true")
    group.add_argument("--tokenizer-metadata", help="megatron-core tokenizer metadata JSON")
    group.add_argument("--tiktoken-pattern")
    group.add_argument("--tiktoken-num-special-tokens", type=int, default=1000)
    return parser


def spec_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The tokenizer settings of parsed arguments as a picklable dict."""
    return tokenizer_spec(**{k: getattr(args, k) for k in _DEFAULTS if hasattr(args, k)})


def build_tokenizer_from_args(args: argparse.Namespace):
    return build_tokenizer_from_spec(spec_from_args(args))
