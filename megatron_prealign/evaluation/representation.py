"""Sentence-level representation alignment across layers (x-LLaMA's middle-layer analysis; the
sentence-level version of PreAlign's Figures 5-6).

Parallel sentences (JSON lines ``{"en": ..., "de": ...}`` or two line-aligned files) are run one
sentence per row; the layer states are captured by the alignment pass's hooks
(:mod:`megatron_prealign.alignment.capture`, each sentence one "form") and mean-pooled over the
sentence's tokens at every state: input embedding, each transformer layer, final norm. Per state:

- ``aligned``: mean cosine similarity of the translation pairs (source i, target i);
- ``random``: mean cosine of all non-translation pairs (source i, target j != i);
- ``retrieval_acc@1``: share of sources whose most similar target (cosine, over all targets) is
  their translation.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import unwrap_model

from megatron_prealign import runtime
from megatron_prealign.alignment import capture
from megatron_prealign.alignment.microbatch import block_diagonal_causal_mask
from megatron_prealign.alignment.collectives import complete_partial_sums
from megatron_prealign.data.atomic import save_figure
from megatron_prealign.evaluation.alignment_similarity import state_names
from megatron_prealign.evaluation.translation import read_pairs
from megatron_prealign.generation.model_loading import EvaluationError, LoadedModel


def pooled_states(model: LoadedModel, sentences: Sequence[Sequence[int]], batch_size: int = 8,
                  skip_first: bool = False) -> torch.Tensor:
    """[states, n, hidden] fp32 on every rank: each sentence's mean token state per layer state
    (input embedding, layers 1..L-1, final norm output); ``skip_first``: not the first token (a
    BOS, the same in every sentence)."""
    num_layers = model.model_args.num_layers
    num_states = num_layers + 1
    longest = max(len(s) for s in sentences)
    if longest > model.seq_length:
        raise EvaluationError(f"a sentence has {longest} tokens, more than --seq-length {model.seq_length}")
    if min(len(s) for s in sentences) <= int(skip_first):
        raise EvaluationError("a sentence tokenizes to nothing")
    gpt_models = unwrap_model(list(model.chunks))
    hidden = model.model_args.hidden_size
    pooled = torch.zeros(num_states, len(sentences), hidden, dtype=torch.float32)
    with capture.CaptureSession(gpt_models) as session:
        for start in range(0, len(sentences), batch_size):
            rows = list(sentences[start:start + batch_size])
            tokens = torch.zeros(len(rows), longest, dtype=torch.long)
            segments = torch.full((len(rows), longest), -1, dtype=torch.long)
            for i, ids in enumerate(rows):
                tokens[i, :len(ids)] = torch.as_tensor(list(ids))
                segments[i, :len(ids)] = i
            pooled_segments = segments.clone()  # which tokens are averaged; all are attended to
            if skip_first:
                pooled_segments[:, 0] = -1
            device = runtime.device()
            batch = {"tokens": tokens.to(device), "segments": segments.to(device),
                     "pooled_segments": pooled_segments.to(device),
                     "positions": torch.arange(longest).expand(len(rows), longest).contiguous().to(device)}
            contexts = []

            def forward_step(iterator, chunk):
                b = next(iterator)
                mask = block_diagonal_causal_mask(b["segments"])
                context = capture.MicrobatchContext(b["pooled_segments"], len(rows), mask, num_layers,
                                                    sequence_parallel=False, needs_backward=False)
                with session.running(context):
                    output = chunk(b["tokens"], b["positions"], mask, output_processor=capture.decoder_output)
                contexts.append(context)
                return output, lambda out: (out.sum() * 0, torch.tensor(1, dtype=torch.int), {})

            with torch.no_grad():
                get_forward_backward_func()(
                    forward_step_func=forward_step, data_iterator=iter([batch]), model=model.chunks,
                    num_microbatches=1, seq_length=longest, micro_batch_size=len(rows), forward_only=True)
            sums = torch.zeros(num_states, len(rows), hidden, dtype=torch.float32, device=device)
            for context in contexts:
                for state, slot in context.slots.items():
                    if state < num_states:
                        value = complete_partial_sums(slot.sums[None])[0] if slot.partial_over_tp else slot.sums
                        sums[state] = value.float()
            group = parallel_state.get_pipeline_model_parallel_group()
            if dist.get_world_size(group) > 1:  # each stage holds its own layers' states
                dist.all_reduce(sums, group=group)
            lengths = torch.tensor([len(r) - int(skip_first) for r in rows], dtype=torch.float32)
            pooled[:, start:start + len(rows)] = sums.cpu() / lengths[None, :, None]
    return pooled


def similarity_by_state(source: torch.Tensor, target: torch.Tensor) -> Dict[str, List[float]]:
    """``source`` / ``target`` [states, n, h] pooled states of translation pairs."""
    n = source.shape[1]
    if n < 2:
        raise EvaluationError("need at least two sentence pairs (random pairs and retrieval)")
    a = torch.nn.functional.normalize(source.double(), dim=-1)
    b = torch.nn.functional.normalize(target.double(), dim=-1)
    cosine = a @ b.transpose(1, 2)  # [states, n, n]
    diagonal = cosine.diagonal(dim1=1, dim2=2)
    off = (cosine.sum((1, 2)) - diagonal.sum(1)) / (n * n - n)
    hits = (cosine.argmax(-1) == torch.arange(n)).double().mean(-1)
    return {"aligned": diagonal.mean(1).tolist(), "random": off.tolist(), "retrieval_acc@1": hits.tolist()}


def read_parallel(jsonl, src_file, tgt_file, src_lang, tgt_lang):
    pairs = read_pairs(src_file, tgt_file, jsonl, src_lang, tgt_lang)
    return pairs["sources"], pairs["references"]


def evaluate_representation(model: LoadedModel, to_ids, sources: Sequence[str], targets: Sequence[str],
                            batch_size: int = 8) -> Dict:
    if len(sources) != len(targets):
        raise EvaluationError(f"{len(sources)} source sentences but {len(targets)} targets")
    ids = [to_ids(s) for s in list(sources) + list(targets)]
    pooled = pooled_states(model, ids, batch_size, skip_first=to_ids.bos is not None)
    n = len(sources)
    result = similarity_by_state(pooled[:, :n], pooled[:, n:])
    names = state_names(model.model_args.num_layers)[:-1]  # no output-embedding state here
    return {"states": names, "pairs": n, **result}


def plot_representation(result: Dict, path: str, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(result["states"]))
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(x, result["aligned"], "-o", label="translation pairs (cosine)")
    axis.plot(x, result["random"], "--", label="random pairs (cosine)")
    axis.plot(x, result["retrieval_acc@1"], "-s", label="retrieval acc@1")
    axis.set_xticks(x)
    axis.set_xticklabels(result["states"], rotation=45, ha="right", fontsize=7)
    axis.set_title(title or f"sentence representations per layer ({result['pairs']} pairs)")
    axis.legend(fontsize=7)
    return save_figure(figure, path)
