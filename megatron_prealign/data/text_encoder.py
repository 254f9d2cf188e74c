"""Text -> token ids with character offsets, on top of a megatron-core tokenizer.

Codeswitching needs to know which tokens of a document belong to a replaced word. megatron-core's
tokenizer wrappers expose ``tokenize`` (ids) only, so for the two families we support we call the
library object the wrapper holds, which does give character offsets:

* SentencePiece (``SentencePieceTokenizer`` library): ``encode(text, out_type="offset_mapping")``;
  a word-start piece ("▁bank") spans the whitespace before the word.
* Hugging Face fast tokenizers, e.g. a byte-level BPE (``HuggingFaceTokenizer`` library, and
  ``GPT2BPETokenizer``): the ``tokenizers`` backend's ``encode(...).offsets``; "Ġbank" spans the
  space before the word. With megatron-core's ``include_special_tokens`` (Megatron-LM's default;
  off with ``--tokenizer-hf-no-include-special-tokens``) the post-processor's special tokens
  (e.g. a BOS) are encoded too, as ``tokenizer(text).input_ids`` does.
* tiktoken (``TikTokenizer``): ``encode(text, allowed_special="all")`` (megatron-core's call);
  character offsets come from the tokens' byte lengths (exact: a token that holds part of a
  multi-byte character spans that character).

At construction the ids of the fast path are checked against megatron-core's own ``tokenize``
on a probe text; when they differ (legacy SentencePiece special tokens, HF
``include_special_tokens`` with a tokenizer that does not match...) or for other tokenizer
families, :class:`TextEncoder` falls back to
``tokenize`` and ``supports_offsets`` is False (codeswitching with masks then refuses to run).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.chunk_cache import ChunkCache

Offsets = List[Tuple[int, int]]

_PROBE = "The bank, by the river-side 12 km.\n  Ufer, 银行 und naïve Straße!"
# Context used to tokenize a word form "as it appears after a space in running text".
_ANCHOR = "a"


class TextEncoder:
    """Wraps a megatron-core tokenizer; see the module docstring."""

    def __init__(self, tokenizer, chunk_cache: bool = False) -> None:
        """``chunk_cache``: encode batches of SentencePiece BPE text through
        :class:`~megatron_prealign.data.chunk_cache.ChunkCache` where the model allows it (same
        ids; for long runs over running text, e.g. preprocessing)."""
        self.tokenizer = tokenizer
        self.vocab_size: int = tokenizer.vocab_size
        self.eod: Optional[int] = _special_id(tokenizer, "eod")
        self.bos: Optional[int] = _special_id(tokenizer, "bos")
        self._sp = None
        self._hf = None
        self._hf_special = False  # the tokenizers post-processor's special tokens, as megatron-core
        self._tt = None  # tiktoken: (Encoding, its special tokens)
        self._classes = None
        library = getattr(tokenizer, "_tokenizer", None)  # megatron-core's library object
        processor = getattr(library, "tokenizer", None)
        if processor is not None and hasattr(processor, "encode_as_ids"):
            self._sp = processor
        elif processor is not None and getattr(processor, "backend_tokenizer", None) is not None:
            self._hf = processor.backend_tokenizer
            self._hf_special = bool(getattr(library, "include_special_tokens", False))
        elif processor is not None and hasattr(processor, "decode_single_token_bytes"):
            self._tt = (processor, processor.special_tokens_set)
        if self.supports_offsets and not self._fast_path_matches():
            self._sp = self._hf = self._tt = None
        self._chunk_cache = None
        if chunk_cache and self._sp is not None:
            try:
                self._chunk_cache = ChunkCache(self._sp)
            except ValueError:  # a unigram model, extra whitespace kept...: SentencePiece alone
                pass

    def _fast_path_matches(self) -> bool:
        try:
            return self.encode_with_offsets(_PROBE)[0] == list(self.tokenizer.tokenize(_PROBE))
        except Exception:  # any failure of the fast path means: do not use it
            return False

    @property
    def supports_offsets(self) -> bool:
        return self._sp is not None or self._hf is not None or self._tt is not None

    def encode(self, text: str) -> List[int]:
        """Token ids, identical to megatron-core's ``tokenizer.tokenize(text)``."""
        if self._sp is not None:
            return self._sp.encode_as_ids(text)
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=self._hf_special).ids
        if self._tt is not None:
            return self._tt[0].encode(text, allowed_special=self._tt[1])
        return list(self.tokenizer.tokenize(text))

    def encode_array(self, text: str) -> np.ndarray:
        """:meth:`encode` as an int64 array (SentencePiece writes it without a Python list)."""
        if self._sp is not None:
            return self._sp.encode(text, out_type="numpy").astype(np.int64)
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Token ids of several documents back to back (int64) and their lengths.

        One call into the tokenizer library for all of them (SentencePiece's batch ``encode``,
        the ``tokenizers`` batch encoder), so its native loop does the work instead of Python per
        document. SentencePiece runs single-threaded on purpose: preprocessing runs one of these
        per worker process (its default would start a thread per core in every worker); the
        ``tokenizers`` encoder follows ``TOKENIZERS_PARALLELISM``, which the workers set to false.
        tiktoken's batch encoder is a thread pool around its per-text encoder; here its Rust
        encoder writes each text's ids into a buffer read as an array (no Python int per token).
        With ``chunk_cache`` SentencePiece BPE batches go through the chunk cache instead.
        Returns ``(ids, lengths)``; identical to :meth:`encode_array` per text.
        """
        if self._chunk_cache is not None:
            return self._chunk_cache.encode_batch(texts)
        if self._sp is not None:
            encoded = self._sp.encode(list(texts), out_type="numpy", num_threads=1)
        elif self._hf is not None:
            encoded = [
                np.asarray(e.ids, dtype=np.int64)
                for e in self._hf.encode_batch(list(texts), add_special_tokens=self._hf_special)
            ]
        elif self._tt is not None:
            encoded = [self._tiktoken_array(text) for text in texts]
        else:
            encoded = [self.encode_array(text) for text in texts]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        ids = np.concatenate(encoded).astype(np.int64, copy=False) if encoded else np.zeros(0, np.int64)
        return ids, lengths

    def _tiktoken_array(self, text: str) -> np.ndarray:
        """tiktoken's ``encode(text, allowed_special="all")`` as a uint32 array: the same Rust call
        (``encode_to_numpy`` skips ``encode``'s repair of lone surrogates, so those go to
        ``encode``)."""
        encoding, special = self._tt
        try:
            return np.frombuffer(encoding._core_bpe.encode_to_tiktoken_buffer(text, special), np.uint32)
        except UnicodeEncodeError:
            return np.asarray(encoding.encode(text, allowed_special=special), dtype=np.uint32)

    def token_classes(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per token id (bool arrays over the vocabulary, computed once):

        * ``starts_word``: the token begins with a space ("▁bank", "Ġbank", "▁");
        * ``continues_word``: the token begins with a letter, digit, "-" or "_", or is a byte
          piece (possibly part of a letter), so a word before it is not finished;
        * ``ends_space``: the token ends with whitespace ("Ċ", "Ġ").
        """
        if self._classes is None:
            texts = self._token_texts()
            starts = np.array([t[:1] == " " for t in texts], dtype=bool)
            cont = np.array(
                [bool(t) and (t[0].isalnum() or t[0] in "-_\ufffd") for t in texts], dtype=bool
            )
            ends = np.array([t[-1:].isspace() for t in texts], dtype=bool)
            self._classes = (starts, cont, ends)
        return self._classes

    def _token_texts(self) -> List[str]:
        if self._sp is not None:
            sp = self._sp
            out = []
            for i in range(sp.get_piece_size()):
                if sp.is_byte(i):
                    out.append("\ufffd")
                elif sp.is_control(i) or sp.is_unknown(i):
                    out.append("")
                else:
                    out.append(sp.id_to_piece(i).replace("\u2581", " "))
            return out
        if self._hf is not None:
            special = set(self._hf.get_added_tokens_decoder())
            return [
                "" if i in special else self._hf.decode([i], skip_special_tokens=False)
                for i in range(self.vocab_size)
            ]
        if self._tt is not None:
            encoding = self._tt[0]
            out = []
            for i in range(self.vocab_size):
                try:
                    piece = encoding.decode_single_token_bytes(i)
                except KeyError:
                    piece = b""
                out.append("" if encoding.is_special_token(i) else piece.decode("utf-8", "replace"))
            return out
        raise NotImplementedError(
            f"{type(self.tokenizer).__name__}: codeswitching supports SentencePiece and Hugging "
            "Face fast (e.g. byte-level BPE) and tiktoken tokenizers"
        )

    def encode_with_offsets(self, text: str) -> Tuple[List[int], Offsets]:
        """Token ids and each token's ``(start, end)`` character span in ``text``.

        Byte-fallback pieces of one character may have empty spans at that character.
        """
        if self._sp is not None:
            result = self._sp.encode(text, out_type="offset_mapping")
            return list(result["ids"]), list(result["offsets"])
        if self._hf is not None:
            encoding = self._hf.encode(text, add_special_tokens=self._hf_special)
            return encoding.ids, encoding.offsets
        if self._tt is not None:
            return self._tiktoken_offsets(text)
        raise NotImplementedError(
            f"{type(self.tokenizer).__name__} does not expose character offsets; codeswitching "
            "supports SentencePiece, Hugging Face fast (e.g. byte-level BPE) and tiktoken tokenizers"
        )

    def _tiktoken_offsets(self, text: str) -> Tuple[List[int], Offsets]:
        """Character spans from the tokens' bytes: the tokens' bytes are exactly the text's UTF-8
        bytes, so byte offsets map to characters; a token holding part of a multi-byte character
        spans all of that character (as a byte-level BPE's offsets do)."""
        data = text.encode("utf-8")  # raises for lone surrogates: offsets would not be exact
        ids = self.encode(text)
        encoding = self._tt[0]
        # char_of[b]: index of the character that byte b belongs to; char_of[len] = len(text).
        char_of = np.repeat(np.arange(len(text)), [len(c.encode("utf-8")) for c in text]).tolist()
        char_of.append(len(text))
        offsets, pos = [], 0
        for i in ids:
            end = pos + len(encoding.decode_single_token_bytes(i))
            offsets.append((char_of[pos], char_of[end - 1] + 1 if end > pos else char_of[pos]))
            pos = end
        if pos != len(data):
            raise ValueError("tiktoken's tokens do not spell the text; no exact offsets")
        return ids, offsets

    def form_ids(self, form: str) -> List[int]:
        """Ids of ``form`` as it appears after a space in running text (" bank", " 银行").

        This is how preprocessing inserts a translation (it re-tokenizes the running text), so
        the alignment-word dataset and the codeswitched corpus agree on every form's tokens.
        """
        text = f"{_ANCHOR} {form}"
        ids, offsets = self.encode_with_offsets(text)
        start = len(_ANCHOR)
        picked = token_indices_in_span(offsets, start, len(text))
        if not picked or any(offsets[i][0] < start for i in picked):
            raise ValueError(f"cannot tokenize the running-text form of {form!r}")
        return [ids[i] for i in picked]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.detokenize(list(ids))


def _special_id(tokenizer, name: str) -> Optional[int]:
    """``tokenizer.eod`` / ``.bos``, or None where the tokenizer has none (SentencePiece: -1)."""
    try:
        value = getattr(tokenizer, name)
    except (AttributeError, NotImplementedError):
        return None
    return None if value is None or int(value) < 0 else int(value)


def token_indices_in_span(offsets: Offsets, start: int, end: int) -> List[int]:
    """Indices of tokens that overlap the character span ``[start, end)``.

    A token with an empty span (a byte-fallback piece) at position p counts as covering p.
    """
    return [
        i
        for i, (s, e) in enumerate(offsets)
        if s < end and max(e, s + 1) > start
    ]
