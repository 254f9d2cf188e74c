"""Online (per-sample) codeswitching in the training data pipeline.

The preprocessed mode (``tools/preprocess_data.py --alignment-table``) switches each document
once, so every epoch sees the same switched words. Online mode reads *plain* token data
(preprocessed with ``--codeswitch-mode none``) and switches each training sample when the
DataLoader reads it, with the same rules (:mod:`.codeswitch`): table words are found in the
token ids, so no word boundaries, offsets or text need to be stored and nothing is re-tokenized
except the translations (once per process).

A sample is megatron-core's window of ``seq_length + 1`` tokens (``GPTDataset``; the same
document, sample and shuffle indices and cache files as without switching). Switching changes
lengths, so the window is read with one token of left context (a word continued from before the
window is not taken for a word start) and look-ahead tokens after it (the words at the window's
end see their next token, and a window that shrinks is filled up); the switched stream is then
cut at the window's first token to ``seq_length + 1`` tokens. Spans are cut at document
boundaries, so words never cross an EOD. Only the edges differ from switching whole documents:
a word that begins before the window's first token is never switched, and a translation at
the window's end may be cut (its tokens are inputs only in input-only mode anyway). Stored
loss masks must be all ones (what preprocessing writes without codeswitching); a zero means the
data was switched already and is an error.

Draws are a hash of (``--seed``, sample index, data prefix and split, span, word position):
a pure function of the sample, so the result does not depend on DataLoader workers or on the
data-parallel layout, every TP/PP rank of a data-parallel group gets the same tokens, a resumed
run (which restarts the sampler at the consumed samples) sees exactly the same switches, and
samples of later epochs (new sample indices) draw new switches.

Input-only semantics as preprocessed: the replaced tokens get mask 0, and the loss mask of label
position t is the mask of token t+1, so they are inputs only, never targets.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy
import torch
from megatron.core.datasets.gpt_dataset import GPTDataset

from megatron_prealign.data.alignment_table import read_table
from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.data.codeswitch import Codeswitcher, span_keys
from megatron_prealign.data.indexed_writer import loss_mask_prefix
from megatron_prealign.data.lm_dataset import MaskedGPTDataset, apply_token_mask
from megatron_prealign.data.preprocess import resolve_languages
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_text_tokenizer
from megatron_prealign.errors import ConfigError

DEFAULT_RATIO = 0.05  # as tools/preprocess_data.py


@dataclass(frozen=True)
class OnlineCodeswitch:
    """Settings of online codeswitching (plain data, so datasets stay picklable)."""

    tokenizer: Dict[str, Any]  # megatron_prealign.data.tokenizer.spec_from_args
    table: str
    languages: Tuple[str, ...]  # empty: all languages of the table
    ratio: float = DEFAULT_RATIO
    mode: str = "input-only"  # or "original": switched tokens stay targets
    seed: int = 1234

    def cache_key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


_SWITCHERS: Dict[str, Any] = {}  # one Codeswitcher per settings and process (forked workers inherit it)


def build_switcher(settings: OnlineCodeswitch):
    """The process's Codeswitcher for ``settings`` (built once: tokenizer, table, numba kernels)."""
    key = settings.cache_key()
    if key not in _SWITCHERS:
        entries = read_table(settings.table)
        try:
            languages, _ = resolve_languages(settings.table, entries, list(settings.languages))
        except BadInputError as error:
            raise ConfigError(str(error)) from error
        encoder = TextEncoder(build_text_tokenizer(settings.tokenizer))
        try:
            encoder.token_classes()
        except NotImplementedError as error:
            raise ConfigError(f"--codeswitch-online: {error}") from error
        _SWITCHERS[key] = Codeswitcher(entries, languages, settings.ratio, settings.mode,
                                       settings.seed, encoder)
    return _SWITCHERS[key]


class OnlineCodeswitchGPTDataset(MaskedGPTDataset):
    """``GPTDataset`` whose samples are codeswitched when read (``config.codeswitch_online``)."""

    LOOKAHEAD_FRACTION = 4  # first try: seq_length / 4 + 16 tokens after the window

    def __init__(self, indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config):
        super().__init__(indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config)
        settings: Optional[OnlineCodeswitch] = getattr(config, "codeswitch_online", None)
        if settings is None:
            raise ConfigError("OnlineCodeswitchGPTDataset needs config.codeswitch_online")
        self.codeswitch = settings
        # Different prefixes / splits of a blend draw independently for the same sample index.
        name = f"{os.path.basename(dataset_path or '')}:{index_split.name}"
        self._key_index = zlib.crc32(name.encode("utf-8"))
        self._switcher = build_switcher(settings)
        self._last: Optional[Tuple[int, Optional[numpy.ndarray]]] = None

    def __getstate__(self):  # spawned DataLoader workers rebuild the switcher
        state = dict(self.__dict__)
        state["_switcher"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def switcher(self):
        if self._switcher is None:
            self._switcher = build_switcher(self.codeswitch)
        return self._switcher

    # -- reading a window with context -------------------------------------------------------

    def _parts(self, idx: int, lookahead: int):
        """(tokens, document-index position) of each span of the sample's window plus context:
        the window, one token before it (if inside a document) and ``lookahead`` tokens after it.
        Also the number of context tokens, and whether the look-ahead was cut by the data's end."""
        window, _, lengths = GPTDataset._query_document_sample_shuffle_indices(self, idx)
        j = int(self.shuffle_index[idx])
        beg_pos, beg_off = (int(v) for v in self.sample_index[j])
        end_pos, end_off = (int(v) for v in self.sample_index[j + 1])
        positions = list(range(beg_pos, beg_pos + len(lengths)))
        cuts = numpy.cumsum(lengths)[:-1]
        parts = [list(p) for p in zip(numpy.split(window[: sum(lengths)], cuts), positions)]
        context = 0
        if beg_off > 0 and parts:
            before = self.dataset.get(int(self.document_index[beg_pos]), offset=beg_off - 1, length=1)
            parts[0][0] = numpy.concatenate([before, parts[0][0]])
            context = 1
        total = self.config.sequence_length + self.config.add_extra_token_to_sequence
        exhausted = sum(lengths) < total
        if not exhausted:
            pos, off, need = end_pos, end_off + self.config.add_extra_token_to_sequence, lookahead
            while need > 0 and pos < len(self.document_index):
                doc = int(self.document_index[pos])
                take = min(int(self.dataset.sequence_lengths[doc]) - off, need)
                if take > 0:
                    tokens = self.dataset.get(doc, offset=off, length=take)
                    if parts and parts[-1][1] == pos:
                        parts[-1][0] = numpy.concatenate([parts[-1][0], tokens])
                    else:
                        parts.append([tokens, pos])
                    need -= take
                pos, off = pos + 1, 0
            exhausted = need > 0
        return parts, context, exhausted

    def switched_window(self, idx: int):
        """(token ids, document ids, per-document lengths, loss mask of the tokens or None) of
        the sample, codeswitched; ``seq_length + 1`` tokens, padded at the data's end."""
        total = self.config.sequence_length + self.config.add_extra_token_to_sequence
        stored = self.stored_mask(idx)  # preprocessing writes all ones without codeswitching
        if stored is not None and not bool(stored.all()):
            raise ConfigError(_ALREADY_SWITCHED.format(prefix=self.dataset_path))
        lookahead = total // self.LOOKAHEAD_FRACTION + 16
        while True:
            parts, context, exhausted = self._parts(idx, lookahead)
            ids = numpy.concatenate([p[0] for p in parts]).astype(numpy.int64, copy=False)
            lens = numpy.array([len(p[0]) for p in parts], dtype=numpy.int64)
            keys = span_keys(self.codeswitch.seed, idx, self._key_index, len(parts))
            out, out_lens, mask = self.switcher.switch_token_spans(ids, lens, keys, first=context)
            if len(out) - context >= total or exhausted:
                break
            lookahead *= 2  # translations shorter than their words: read further
        text = out[context : context + total]
        mask = None if mask is None else mask[context : context + total]
        # Per-document lengths inside the window (megatron-core's inter-document masking).
        starts = numpy.cumsum(out_lens) - out_lens
        inside = numpy.minimum(starts + out_lens, context + total) - numpy.maximum(starts, context)
        keep = inside > 0
        document_ids = numpy.array([int(self.document_index[p[1]]) for p in parts], dtype=numpy.int64)[keep]
        document_lengths = [int(n) for n in inside[keep]]
        if len(text) < total:  # the data's end: padding, never a target
            pad = total - len(text)
            text = numpy.concatenate([text, numpy.full(pad, self._pad_token_id, dtype=numpy.int64)])
            if mask is not None:
                mask = numpy.concatenate([mask, numpy.zeros(pad, dtype=numpy.uint8)])
        return text, document_ids, document_lengths, mask

    def _query_document_sample_shuffle_indices(self, idx: int):
        text, document_ids, document_lengths, mask = self.switched_window(idx)
        self._last = (idx, mask)
        return text, document_ids, document_lengths

    def __getitem__(self, idx: Optional[int]):
        self._last = None
        sample = GPTDataset.__getitem__(self, idx)
        mask = self._last[1] if self._last is not None else None
        if mask is None:
            return sample
        return apply_token_mask(sample, torch.from_numpy(mask), self.config)


def online_settings(tokenizer: Dict[str, Any], table: str, languages: Optional[Sequence[str]],
                    ratio: Optional[float], mode: str, seed: int) -> OnlineCodeswitch:
    """The training run's online codeswitching (--codeswitch-online): its tokenizer spec,
    --alignment-table, --codeswitch-languages (None: all), --codeswitch-ratio (None: the
    default), --codeswitch-mode and --seed."""
    return OnlineCodeswitch(
        tokenizer=tokenizer, table=table, languages=tuple(languages or ()),
        ratio=DEFAULT_RATIO if ratio is None else ratio, mode=mode, seed=seed,
    )


_ALREADY_SWITCHED = (
    "--codeswitch-online: --data-path {prefix} holds loss-mask zeros, i.e. it was codeswitched "
    "(input-only) or built as instruction data at preprocessing and would be switched twice; "
    "preprocess the corpus with --codeswitch-mode none, or drop --codeswitch-online to train on the "
    "stored switches")

CHECKED_MASK_BYTES = 1 << 22  # validation reads this much of each mask file


def check_plain_data(prefixes: List[str]) -> None:
    """Online switching needs data preprocessed without codeswitching: the start of every
    loss-mask sibling must be all ones (the dataset checks each sample's mask as it reads it;
    data switched in ``original`` mode has no zeros and cannot be told apart)."""
    for prefix in prefixes:
        path = loss_mask_prefix(prefix) + ".bin"
        if not os.path.isfile(path) or not os.path.getsize(path):
            continue
        head = numpy.memmap(path, dtype=numpy.uint8, mode="r")[:CHECKED_MASK_BYTES]
        if not bool(head.all()):
            raise ConfigError(_ALREADY_SWITCHED.format(prefix=prefix))
