"""Test perplexity of words seen vs unseen in pre-alignment (PreAlign's Figure 6).

Each text's words (the table builder's definition, ``data.words.WORD_RE``: hyphen-joined parts
stay one word) are looked up, normalised as table keys, among the alignment table's forms of
``--language`` (``en``: the table's head words; another code: its translations). A word of a
table entry that pre-alignment used is *seen*; one of an entry held out of it
(:func:`~megatron_prealign.data.alignment_table.is_held_out` with the training run's
``--alignment-held-out-fraction`` and split seed) is *held_out*; any other word is
*not_in_table*. A token belongs to the first word its character span overlaps; tokens of no
word (spaces, punctuation, end of document) are *other*. The texts form one token stream cut into
windows as for ``perplexity``; each group's perplexity is exp(mean NLL of its tokens as targets).
The four groups partition the scored tokens, so their token-weighted losses add up to the whole
stream's (checked in the tests).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.alignment_table import is_held_out, normalize_word
from megatron_prealign.data.atomic import save_figure
from megatron_prealign.data.text_encoder import token_indices_in_span
from megatron_prealign.data.words import WORD_RE
from megatron_prealign.errors import EvaluationError

GROUPS = ("seen", "held_out", "not_in_table", "other")


def word_groups(entries, language: str, held_out_fraction: float, split_seed: int) -> Dict[str, str]:
    """Lowercased form -> "seen" / "held_out" for the table's forms in ``language``."""
    lookup: Dict[str, str] = {}
    for entry in entries:
        group = "held_out" if is_held_out(entry.word, held_out_fraction, split_seed) else "seen"
        forms = [entry.word] if language == "en" else entry.translations.get(language, [])
        for form in forms:
            lookup.setdefault(normalize_word(form), group)
    if not lookup:
        raise EvaluationError(f"the alignment table has no forms of language {language!r} (--language)")
    return lookup


def group_stream(texts: Sequence[str], encoder, lookup: Dict[str, str], eod: Optional[int],
                 bos: Optional[int] = None, max_tokens: Optional[int] = None
                 ) -> Tuple[np.ndarray, Dict[str, np.ndarray], Dict[str, int]]:
    """(tokens, {group: 0/1 mask over tokens}, {group: distinct words}) of the texts in order."""
    tokens: List[int] = []
    labels: List[str] = []  # the group of each token
    words = {group: set() for group in GROUPS}
    for text in texts:
        ids, offsets = encoder.encode_with_offsets(text)
        owner = ["other"] * len(ids)
        for match in WORD_RE.finditer(text):
            form = normalize_word(match.group())
            group = lookup.get(form, "not_in_table")
            words[group].add(form)
            for index in token_indices_in_span(offsets, match.start(), match.end()):
                if owner[index] == "other":
                    owner[index] = group
        if bos is not None:
            tokens.append(bos)
            labels.append(None)  # given, not predicted
        tokens.extend(ids)
        labels.extend(owner)
        if eod is not None:
            tokens.append(eod)
            labels.append("other")
        if max_tokens and len(tokens) >= max_tokens + 1:
            break
    if len(tokens) < 2:
        raise EvaluationError("no text to evaluate (empty evaluation set)")
    labels_array = np.array(labels, dtype=object)
    masks = {group: (labels_array == group).astype(np.int64) for group in GROUPS}
    return np.asarray(tokens, dtype=np.int64), masks, {g: len(w) for g, w in words.items()}


def evaluate(model, texts: Sequence[str], to_ids, lookup: Dict[str, str], max_tokens: Optional[int] = None,
             micro_batch_size: int = 8) -> Dict:
    from megatron_prealign.evaluation.perplexity import evaluate_stream  # torch: only for the forward passes

    if to_ids.mapping is not None:
        raise EvaluationError("word-perplexity reads text in the tokenizer's own ids (no --enclone-mapping)")
    tokens, masks, distinct = group_stream(texts, to_ids.encoder, lookup, to_ids.eod, to_ids.bos, max_tokens)
    result = {"all": evaluate_stream(model, tokens, sum(masks.values()), max_tokens, micro_batch_size),
              "groups": {}}
    for group in GROUPS:
        scored = masks[group][1:][: max_tokens] if max_tokens else masks[group][1:]
        if scored.sum() == 0:
            result["groups"][group] = {"perplexity": None, "loss": None, "tokens": 0, "words": distinct[group]}
            continue
        result["groups"][group] = {**evaluate_stream(model, tokens, masks[group], max_tokens, micro_batch_size),
                                   "words": distinct[group]}
    return result


def plot(result: Dict, path: str, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [g for g in GROUPS[:3] if result["groups"][g]["perplexity"] is not None]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    bars = axis.bar(range(len(shown)), [result["groups"][g]["perplexity"] for g in shown],
                    color=["tab:blue", "tab:orange", "tab:gray"][:len(shown)])
    for bar, group in zip(bars, shown):
        axis.annotate(f"{result['groups'][group]['tokens']} tok", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=7)
    axis.set_xticks(range(len(shown)))
    axis.set_xticklabels([{"seen": "seen in pre-alignment", "held_out": "held out of it",
                           "not_in_table": "not in the table"}[g] for g in shown], fontsize=8)
    axis.set_ylabel("test perplexity of the words' tokens")
    axis.set_title(title or f"{result.get('language', '')} word perplexity (PreAlign Fig. 6)")
    return save_figure(figure, path)
