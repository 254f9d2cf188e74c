"""The alignment pass inside megatron-core's pipeline schedules.

The training driver owns one :class:`AlignmentPass` per model and calls, per training step::

    alignment.begin_step(num_alignment_microbatches=k, total_lm_tokens=T)
    losses = get_forward_backward_func()(forward_step_func=forward_step, ...)
    statistics = alignment.end_step()          # same on every rank; .as_log_dict() for logging

with a ``forward_step`` that hands alignment microbatches to the pass::

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        if is_alignment_batch(batch):
            return alignment.forward_step(batch, model)
        return lm_forward_step(batch, model)        # the usual (output, loss_func)

so LM and alignment microbatches mix freely in one ``forward_backward_func`` call. The pass's
capture hooks (a :class:`capture.CaptureSession`) stay on the model chunks until
``alignment.remove()``; each step's microbatches are forgotten by ``end_step``.

Objective: each alignment microbatch contributes ``loss_weight / k`` times its alignment loss
(Eq. 3: the sum over layer states of the contrastive loss of the microbatch's global batch,
i.e. the union of that microbatch over the data-parallel ranks) to the step's objective, on top
of whatever the LM microbatches contribute; megatron's division of every returned loss by the
number of microbatches does not apply to it. The gradient enters the backward pass directly
(capture.py), pre-multiplied by what megatron-core will later divide the gradients by:

* megatron's DDP multiplies the sum over DP ranks of the local gradients by a factor fixed
  when it is built (1 if the config had ``calculate_per_token_loss``, else 1 / DP size); each
  rank injects only its own forms' share of the global loss, so the share is divided by it;
* with ``config.calculate_per_token_loss`` the schedule hands the step's LM loss tokens to
  ``finalize_model_grads``, which divides every gradient by their number over all DP ranks;
  the driver passes that number as ``total_lm_tokens`` (0 when the step has no LM
  microbatches: nothing is divided then).

fp16 loss scaling (``config.grad_scale_func``) is applied the same way as to the LM loss.
"""

from __future__ import annotations

from typing import Optional
from megatron_prealign.errors import ConfigError

import torch

from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel
from megatron.core.utils import unwrap_model

from megatron_prealign.alignment import attention_path, capture
from megatron_prealign.alignment.microbatch import AlignmentBatch, block_diagonal_causal_mask
from megatron_prealign.alignment.contrastive import (
    DEFAULT_TEMPERATURE,
    anchor_terms,
    check_temperature,
    count_anchors,
)
from megatron_prealign.alignment.metrics import AlignmentStatistics, pair_similarity_sums
from megatron_prealign.alignment.collectives import (
    complete_partial_sums,
    gather_over_data_parallel,
    sum_gradients_over_data_parallel,
    sum_over_data_parallel,
)

ALIGNMENT_MARKER = "alignment_microbatches"
# Cap on the [states, n, N] similarity tensors built at once (fp32: 4 bytes each, a few copies).
SIMILARITY_ELEMENTS_PER_CHUNK = 1 << 24


def is_alignment_batch(batch) -> bool:
    return all(hasattr(batch, name) for name in ("tokens", "position_ids", "segment_ids", "form_group"))


class AlignmentPass:
    """Capture hooks on the model chunks plus the per-step bookkeeping of the alignment loss."""

    def __init__(self, model_chunks, temperature: float = DEFAULT_TEMPERATURE, loss_weight: float = 1.0,
                 max_forms_per_rank: Optional[int] = None):
        """``max_forms_per_rank``: a bound on the word forms of any DP rank's alignment
        microbatch (``AlignmentWordDataset.max_forms_per_rank``); with it the data-parallel
        gather pads to the bound instead of reading the ranks' counts back to the host."""
        self.temperature = check_temperature(temperature)
        if not loss_weight >= 0:
            raise ConfigError(f"--alignment-loss-weight must be >= 0, got {loss_weight}")
        if max_forms_per_rank is not None and max_forms_per_rank < 1:
            raise ValueError(f"max_forms_per_rank must be >= 1, got {max_forms_per_rank}")
        self.loss_weight = float(loss_weight)
        self.max_forms_per_rank = max_forms_per_rank
        chunks = model_chunks if isinstance(model_chunks, (list, tuple)) else [model_chunks]
        self.gpt_models = unwrap_model(list(chunks))
        config = self.gpt_models[0].config
        if parallel_state.get_context_parallel_world_size() > 1:
            raise NotImplementedError("the alignment pass does not support context parallelism")
        # How forms are kept apart (attention_path.py): packed rows with a block-diagonal mask,
        # or one form per row under plain causal attention (TE / fused attention).
        self.attention_path = attention_path.choose(
            self.gpt_models, parallel_state.get_pipeline_model_parallel_world_size())
        # One form per row under pipeline parallelism: microbatch shapes differ from the LM
        # ones, so the steps with alignment exchange shapes (megatron-core's
        # variable_seq_lengths); the configs of the chunks, each once.
        self._variable_shapes = (self.attention_path == attention_path.ONE_FORM_PER_ROW
                                 and parallel_state.get_pipeline_model_parallel_world_size() > 1)
        self._configs = list({id(m.config): m.config for m in self.gpt_models}.values())
        self._saved_variable_seq_lengths = None
        self._checked_shapes = set()
        self.num_layers = config.num_layers
        self.num_states = config.num_layers + 2
        self._ddp_scale = _ddp_gradient_scale(chunks[0])
        # The capture hooks and the microbatches they serve, until remove().
        self.capture_session = capture.CaptureSession(self.gpt_models)
        for gpt_model in self.gpt_models:
            if gpt_model.post_process and not gpt_model.share_embeddings_and_output_weights:
                # The pass adds an autograd gradient to the untied output weight; once an LM
                # microbatch's fused weight-gradient accumulation has set grad_added_to_main_grad,
                # DDP's hook drops such gradients unless zero_out_wgrad (megatron-core sets it on
                # tied embeddings for the same reason).
                gpt_model.output_layer.weight.zero_out_wgrad = True
        self._statistics = AlignmentStatistics(self.num_states)
        self._step = None  # (alignment microbatches, LM loss tokens) of the running step

    # -- step lifecycle -------------------------------------------------------------------

    def begin_step(self, num_alignment_microbatches: int, total_lm_tokens: Optional[int] = None):
        """Declare the step's alignment microbatches (per DP rank) and, with
        ``calculate_per_token_loss``, the step's LM loss tokens over all DP ranks (an int, or a
        scalar tensor on the device to avoid a host sync; not needed for evaluation without
        gradients)."""
        if num_alignment_microbatches < 1:
            raise ValueError("num_alignment_microbatches must be >= 1")
        self.capture_session.clear()
        self._statistics = AlignmentStatistics(self.num_states)
        self._step = (int(num_alignment_microbatches), total_lm_tokens)
        if self._variable_shapes and self._saved_variable_seq_lengths is None:
            self._saved_variable_seq_lengths = [c.variable_seq_lengths for c in self._configs]
            for c in self._configs:
                c.variable_seq_lengths = True

    def _gradient_factor(self, config) -> float:
        """What the gradient of one microbatch's alignment loss is multiplied by (see above)."""
        num_alignment_microbatches, total_lm_tokens = self._step
        factor = self.loss_weight / num_alignment_microbatches / self._ddp_scale
        if config.calculate_per_token_loss:
            if total_lm_tokens is None:
                raise ConfigError(
                    "with calculate_per_token_loss, begin_step needs total_lm_tokens (the LM loss "
                    "tokens of the step over all data-parallel ranks)"
                )
            if isinstance(total_lm_tokens, torch.Tensor):  # stays on the device: no host sync
                return total_lm_tokens.double().clamp(min=1) * factor
            factor *= max(int(total_lm_tokens), 1)
        return factor

    def end_step(self) -> AlignmentStatistics:
        """Statistics of the step, complete on every rank (reduced over pipeline stages)."""
        self.capture_session.clear()
        self._step = None
        self._restore_variable_seq_lengths()
        return self._statistics.reduce(parallel_state.get_pipeline_model_parallel_group())

    def _restore_variable_seq_lengths(self):
        """Steps without alignment microbatches exchange fixed shapes again (no extra p2p)."""
        if self._saved_variable_seq_lengths is not None:
            for c, saved in zip(self._configs, self._saved_variable_seq_lengths):
                c.variable_seq_lengths = saved
            self._saved_variable_seq_lengths = None

    def remove(self):
        """Take the capture hooks off the model chunks (the end of the pass's lifetime)."""
        self._restore_variable_seq_lengths()
        self.capture_session.remove()

    # -- one microbatch --------------------------------------------------------------------

    def forward_step(self, batch, model):
        """Run one alignment microbatch through this stage's model chunk; returns what a
        megatron ``forward_step_func`` returns: (output tensor, loss function)."""
        if self._step is None:
            raise RuntimeError("call AlignmentPass.begin_step before the forward/backward pass")
        gpt_model = unwrap_model(model)
        config = gpt_model.config
        device = next(gpt_model.parameters()).device
        batch = AlignmentBatch.of(batch).to(device)
        tp = parallel_state.get_tensor_model_parallel_world_size()
        if config.sequence_parallel and batch.seq_length % tp:
            raise ValueError(f"sequence length {batch.seq_length} is not divisible by TP size {tp}")

        self.capture_session.release_finished()
        needs_backward = torch.is_grad_enabled()
        mask = block_diagonal_causal_mask(batch.segment_ids)
        if batch.tokens.shape not in self._checked_shapes:  # the attention kernel depends on it
            attention_path.check_mask_honoured(gpt_model, mask, batch.segment_ids)
            self._checked_shapes.add(batch.tokens.shape)
        context = capture.MicrobatchContext(
            batch.segment_ids, batch.num_forms, mask, self.num_layers, config.sequence_parallel,
            needs_backward,
        )
        with self.capture_session.running(context):
            output = model(batch.tokens, batch.position_ids, mask, output_processor=capture.decoder_output)
            outputs = [output]
            if gpt_model.post_process:
                _wait_for_output_weight(model, gpt_model)
                rows = capture.output_embedding_rows(gpt_model, batch.tokens.t())
                outputs.append(
                    context.capture(self.num_states - 1, rows, context.full_form_index, tp > 1)
                )
        self._stage_losses(context, batch, config, needs_backward)

        if not gpt_model.post_process:
            return output, _never_called
        result = capture.sink(*outputs) if needs_backward else torch.zeros((), device=device)
        return result, _alignment_loss_func

    def _stage_losses(self, context, batch: AlignmentBatch, config, needs_backward: bool):
        """Loss terms of this stage's layer states; their gradients go into the slots."""
        states = sorted(context.slots)
        if not states:
            return
        slots = [context.slots[state] for state in states]
        sums = torch.stack([slot.sums for slot in slots])
        partial = torch.tensor([slot.partial_over_tp for slot in slots])
        if partial.any():
            sums[partial] = complete_partial_sums(sums[partial])
        global_batch = gather_over_data_parallel(sums, batch.form_group, batch.form_lengths(),
                                                  self.max_forms_per_rank)
        groups, valid, mine = global_batch.groups, global_batch.valid, global_batch.mine
        num_anchors = count_anchors(groups, valid)
        leaf = global_batch.sums.detach().requires_grad_(needs_backward)
        with torch.enable_grad() if needs_backward else torch.no_grad():
            lengths = global_batch.lengths.clamp(min=1).to(leaf.dtype)
            means = leaf / lengths[None, :, None]
            # Several states per batched matmul ([states, n, N] similarities) instead of one
            # small matmul each, in chunks that bound the transient memory.
            rows = mine.stop - mine.start
            per_chunk = max(1, SIMILARITY_ELEMENTS_PER_CHUNK // max(1, rows * leaf.shape[1]))
            shares = []
            for chunk in means.split(per_chunk):
                terms, anchors = anchor_terms(chunk, groups, self.temperature, valid, mine)
                shares.append(terms.sum(dim=-1) / num_anchors.clamp(min=1))
            loss_shares = torch.cat(shares)  # [k]
            total = loss_shares.sum()
        # per state: this rank's share of (loss, anchors, aligned/random cosine sums and counts)
        local_statistics = torch.cat([
            loss_shares.detach().double()[:, None],
            anchors.sum().double().expand(len(states), 1),
            pair_similarity_sums(means, groups, valid, mine),
        ], dim=1)
        totals = sum_over_data_parallel(local_statistics)
        for index, state in enumerate(states):
            self._statistics.add(state, totals[index, 0], totals[index, 1], totals[index, 2:])
        if not needs_backward:
            return
        (gradient,) = torch.autograd.grad(total, leaf)
        gradient = sum_gradients_over_data_parallel(gradient, global_batch)
        scale = self._gradient_factor(config)
        if config.grad_scale_func is not None:
            scale = config.grad_scale_func(torch.ones((), device=gradient.device)) * scale
        for index, slot in enumerate(slots):
            slot.gradient = gradient[index] * scale


def _wait_for_output_weight(model_chunk, gpt_model):
    """With --overlap-param-gather megatron's DDP waits for a parameter's all-gather in the
    forward pre-hook of the module that owns it. The pass reads the untied output layer's
    weight without calling that module (the tied weight's module, the embedding, has run), so
    it runs DDP's pre-hook on it itself."""
    module = gpt_model.output_layer
    if gpt_model.share_embeddings_and_output_weights or module not in getattr(
            model_chunk, "remove_forward_pre_hook_handles", {}):
        return  # no all-gather pending: hooks off (no overlap, or disabled for a save)
    model_chunk._make_forward_pre_hook()(module)


def _ddp_gradient_scale(model_chunk) -> float:
    """The factor megatron's DDP applies to the sum over DP ranks of the local gradients."""
    if not isinstance(model_chunk, DistributedDataParallel) or not model_chunk.buffers:
        return 1.0  # no data-parallel reduction by megatron-core
    factors = {buffer.gradient_scaling_factor for buffer in model_chunk.buffers}
    if len(factors) != 1:
        raise NotImplementedError(f"DDP buffers with different gradient scaling factors {factors}")
    scale = factors.pop()
    if model_chunk.ddp_config.average_in_collective:
        scale /= model_chunk.intra_dp_cp_group.size()
    return scale


def _never_called(output_tensor):
    raise RuntimeError("the loss function runs on the last pipeline stage only")


def _alignment_loss_func(output_tensor):
    """A zero 'loss' (the alignment gradient is injected directly) contributing no LM tokens;
    the step's alignment numbers come from AlignmentPass.end_step()."""
    marker = {ALIGNMENT_MARKER: torch.ones((), device=output_tensor.device)}
    return output_tensor, torch.zeros((), dtype=torch.int, device=output_tensor.device), marker
