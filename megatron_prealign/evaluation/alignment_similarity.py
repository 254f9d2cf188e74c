"""Per-layer cosine similarity of aligned word forms against random pairs (the paper's Figures 5
and 6), split into the table words seen during pre-alignment and those held out of it.

The word states are computed exactly as in training, by :class:`AlignmentPass` (each form run on
its own, subword states mean-pooled per layer state: input embedding, every transformer layer
output, final norm output, output embedding) in forward-only mode; its statistics give, per
state, the mean cosine of aligned pairs (two forms of one word) and of random pairs (forms of
different words in the same batch). Seen / held-out follows
:func:`megatron_prealign.data.alignment_table.is_held_out` with the training run's
``--alignment-held-out-fraction`` (and split seed).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_prealign import runtime
from megatron_prealign.alignment import AlignmentPass
from megatron_prealign.alignment.metrics import AlignmentStatistics
from megatron_prealign.data.alignment_table import is_held_out, read_table
from megatron_prealign.data.alignment_words import AlignmentWordDataset, encode_groups
from megatron_prealign.data.atomic import save_figure
from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.data.enclone import ENCLONE, EncloneMapping, default_shared_ids
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.generation.model_loading import EvaluationError, LoadedModel
from megatron_prealign.training.batches import alignment_microbatch


def state_names(num_layers: int) -> List[str]:
    return (["input embedding"] + [f"layer {i}" for i in range(1, num_layers)]
            + [f"layer {num_layers} (final norm)", "output embedding"])


def check_table_vocabulary(entries, encoder: TextEncoder, model_vocab: int, path: str):
    """Refuse a table written for another tokenizer: ids outside the model vocabulary, or
    En-Clone ids that are not the shifted ids of this tokenizer's tokens."""
    if encoder.vocab_size > model_vocab:
        raise EvaluationError(
            f"the tokenizer has {encoder.vocab_size} tokens, the checkpoint's model {model_vocab}: "
            "another tokenizer was used for training")
    mapping = EncloneMapping(encoder.vocab_size, default_shared_ids(encoder))
    checked = mismatched = 0
    for entry in entries:
        for language, id_forms in entry.token_ids.items():
            for ids in id_forms:
                if any(i < 0 or i >= model_vocab for i in ids):
                    raise EvaluationError(
                        f"{path}: word {entry.word!r} ({language}) has token ids {ids} outside "
                        f"the model vocabulary [0, {model_vocab}): the table was made with another "
                        "tokenizer")
            if language == ENCLONE and id_forms:
                checked += 1
                try:
                    expected = mapping.clone(encoder.form_ids(entry.word)).tolist()
                except ValueError:
                    expected = None
                mismatched += expected != list(id_forms[0])
    if checked and mismatched * 2 > checked:
        raise EvaluationError(
            f"{path}: {mismatched} of {checked} En-Clone forms are not this tokenizer's tokens of "
            "their word shifted by its vocabulary size: the table was made with another tokenizer")


def _statistics(model: LoadedModel, groups, words_per_batch: int, seed: int) -> Optional[AlignmentStatistics]:
    if len(groups) < 2:
        return None
    words_per_batch = max(2, min(words_per_batch, len(groups)))
    dataset = AlignmentWordDataset(groups, words_per_batch, model.seq_length, seed, pack=True)

    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    if words_per_batch % dp_size:
        words_per_batch -= words_per_batch % dp_size
        dataset = AlignmentWordDataset(groups, words_per_batch, model.seq_length, seed, pack=True)
    batches = [dataset.batch(step, dp_rank, dp_size) for step in range(dataset.steps_per_epoch)]
    # Pipeline stages exchange fixed-size activations: pack every batch into the same rows.
    rows = [b.tokens.shape[0] for b in batches]
    rows_tensor = torch.tensor([max(rows)], device=runtime.device())
    torch.distributed.all_reduce(rows_tensor, op=torch.distributed.ReduceOp.MAX)
    alignment = AlignmentPass(model.chunks, max_forms_per_rank=dataset.max_forms_per_rank(dp_size))
    total = AlignmentStatistics(alignment.num_states)
    try:
        for words in batches:
            model_args = model.model_args
            micro = alignment_microbatch(
                words, int(rows_tensor.item()), model.seq_length, alignment.attention_path,
                (model_args.tensor_model_parallel_size or 1) if model_args.sequence_parallel else 1,
                bool(model_args.fp8_format))
            alignment.begin_step(1)
            with torch.no_grad():
                get_forward_backward_func()(
                    forward_step_func=lambda it, chunk: alignment.forward_step(next(it), chunk),
                    data_iterator=iter([micro]), model=model.chunks, num_microbatches=1,
                    seq_length=model.seq_length, micro_batch_size=micro.num_sequences,
                    forward_only=True,
                )
            total.sums += alignment.end_step().sums
    finally:
        alignment.remove()
    return total


def evaluate_alignment(model: LoadedModel, tokenizer, table_path: str,
                       languages: Optional[Sequence[str]] = None, held_out_fraction: float = 0.0,
                       split_seed: int = 0, words_per_batch: int = 64, seed: int = 1234) -> Dict:
    encoder = TextEncoder(tokenizer)
    try:
        entries = read_table(table_path)
    except (BadInputError, FileNotFoundError) as error:
        raise EvaluationError(str(error)) from error
    if not entries:
        raise EvaluationError(f"{table_path}: the table is empty (nothing to evaluate)")
    check_table_vocabulary(entries, encoder, model.vocab_size, table_path)
    seen = [e for e in entries if not is_held_out(e.word, held_out_fraction, split_seed)]
    unseen = [e for e in entries if is_held_out(e.word, held_out_fraction, split_seed)]
    result = {"table": table_path, "states": state_names(model.model_args.num_layers),
              "held_out_fraction": held_out_fraction, "split_seed": split_seed, "splits": {}}
    any_groups = False
    for name, subset in (("seen", seen), ("unseen", unseen)):
        try:
            groups, dropped = encode_groups(subset, encoder, languages)
        except ValueError as error:
            raise EvaluationError(f"{table_path}: {error}") from error
        for group in groups:
            for form in group.forms:
                if len(form.ids) > model.seq_length:
                    raise EvaluationError(f"form {form.text!r} is longer than --seq-length")
        stats = _statistics(model, groups, words_per_batch, seed)
        any_groups |= stats is not None
        result["splits"][name] = {
            "words": len(groups), "dropped_words": len(dropped),
            "aligned": stats.aligned_similarity() if stats else None,
            "random": stats.random_similarity() if stats else None,
        }
    if not any_groups:
        raise EvaluationError(
            f"{table_path}: fewer than two word groups with two or more forms"
            + (f" in languages {list(languages)}" if languages else "") + " (empty evaluation set)")
    return result


def plot_alignment(result: Dict, path: str, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = result["states"]
    x = np.arange(len(states))
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, style in (("seen", "-o"), ("unseen", "-s")):
        split = result["splits"].get(name) or {}
        if split.get("aligned"):
            axis.plot(x, [v if v is not None else np.nan for v in split["aligned"]], style,
                      label=f"aligned, {name} in pre-alignment ({split['words']} words)")
            axis.plot(x, [v if v is not None else np.nan for v in split["random"]], style[0] + "-",
                      alpha=0.5, label=f"random pairs ({name})")
    axis.set_xticks(x)
    axis.set_xticklabels(states, rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("cosine similarity")
    axis.set_title(title or "word-state similarity per layer")
    axis.legend(fontsize=7)
    return save_figure(figure, path)
