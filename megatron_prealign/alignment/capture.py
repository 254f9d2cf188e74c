"""Layer-state capture and gradient injection on megatron-core's GPTModel.

The alignment loss needs, for every *layer state* of an alignment microbatch, the mean of each
form's token states:

    state 0        input embedding output (word + position embeddings)   LanguageModelEmbedding
    state l        output of transformer layer l, 1 <= l < L              TransformerLayer
    state L        output of the last layer after the final norm          decoder.final_layernorm
    state L + 1    output embedding: LM-head rows of the form's tokens    (step.py)

(states 0..L are what Hugging Face's ``output_hidden_states`` returns, which the paper's code
used; megatron applies the final norm after the last layer, so state L is taken there.)

Design: *pool in the forward pass, inject the gradient in the backward pass.* Forward hooks
pool each state into per-form fp32 sums (tiny: [forms, h]) and wrap the state in
:class:`_InjectGradient`, an identity whose backward adds a gradient that is not known yet.
When the stage's forward is done, step.py computes every state's loss from the pooled sums and
stores d(loss)/d(sums) in the state's :class:`StateSlot`; the backward pass then picks it up
where the state lives. Like megatron-core's ``MoEAuxLossAutoScaler`` this puts an auxiliary
loss into the backward pass without sending anything but the normal activations between
pipeline stages, and unlike computing the loss inside the hooks it

* runs the collectives (TP partial sums, DP all-gather) once per stage and microbatch, in the
  forward pass, never inside the backward pass or a recomputation;
* counts every state exactly once under activation recompute: in a checkpointed layer the
  forward runs without autograd (the hook only pools) and the recomputation inside the backward
  pass re-inserts the injection with the same slot (the hook only injects).

The hooks and the microbatches they serve belong to a :class:`CaptureSession` (the alignment
pass owns one for the training run; the representation evaluation one per call). A recomputed
layer finds its microbatch through the attention mask: megatron's checkpoint hands the layer a
detached alias of the mask, which shares its storage. Each alignment microbatch has its own mask,
registered in the session by storage address while its backward pass may still need it (the
session keeps the mask referenced, so the address cannot be reused meanwhile). LM microbatches
(no or another mask) are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Dict, List, Optional, Tuple

import torch

from megatron.core import parallel_state
from megatron.core.tensor_parallel.utils import VocabUtility
from megatron.core.utils import make_viewless_tensor

from megatron_prealign.alignment.pooling import spread_to_tokens, sum_by_form


@dataclasses.dataclass
class StateSlot:
    """One layer state of one microbatch on this rank."""

    form_index: torch.Tensor  # [s_local, b]: form of each token of the captured tensor, -1 pad
    sums: torch.Tensor  # [forms, h] fp32 per-form sums (partial over TP if partial_over_tp)
    partial_over_tp: bool  # sums cover only this TP rank's share (sequence / vocab slice)
    gradient: Optional[torch.Tensor] = None  # [forms, h] fp32, scaled d(loss)/d(sums)
    fired: bool = False  # the backward pass has added the gradient


class MicrobatchContext:
    """What the hooks need to know about the alignment microbatch being run."""

    def __init__(self, segment_ids: torch.Tensor, num_forms: int, attention_mask, num_layers: int,
                 sequence_parallel: bool, needs_backward: bool):
        full = segment_ids.t().contiguous()  # [s, b], megatron's sequence-first layout
        self.full_form_index = full
        if sequence_parallel:
            tp = parallel_state.get_tensor_model_parallel_world_size()
            rank = parallel_state.get_tensor_model_parallel_rank()
            full = full.chunk(tp, dim=0)[rank]
        self.hidden_form_index = full
        self.sequence_parallel = sequence_parallel
        self.num_forms = num_forms
        self.attention_mask = attention_mask
        self.num_layers = num_layers
        self.needs_backward = needs_backward
        self.slots: Dict[int, StateSlot] = {}
        self.pooling = True  # False once the forward is done: recomputation only injects

    def capture(self, state: int, tensor: torch.Tensor, form_index: Optional[torch.Tensor] = None,
                partial_over_tp: Optional[bool] = None) -> torch.Tensor:
        if form_index is None:
            form_index = self.hidden_form_index
            partial_over_tp = self.sequence_parallel
        if self.pooling:
            if tensor.shape[:-1] != form_index.shape:
                raise RuntimeError(
                    f"layer state {state}: activation shape {tuple(tensor.shape)} does not match "
                    f"the alignment batch layout {tuple(form_index.shape)}"
                )
            self.slots[state] = StateSlot(
                form_index, sum_by_form(tensor.detach(), form_index, self.num_forms), partial_over_tp
            )
        slot = self.slots.get(state)
        if slot is None or not self.needs_backward or not torch.is_grad_enabled():
            return tensor
        injected = _InjectGradient.apply(tensor, slot)
        return make_viewless_tensor(injected, requires_grad=True, keep_graph=True)

    def backward_started(self) -> bool:
        return any(slot.fired for slot in self.slots.values())


class _InjectGradient(torch.autograd.Function):
    """Identity in the forward pass; the backward pass adds the state's alignment gradient,
    spread from the forms onto their tokens."""

    @staticmethod
    def forward(ctx, tensor, slot):
        ctx.slot = slot
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        slot = ctx.slot
        if slot.gradient is None:
            raise RuntimeError("alignment gradient missing: the stage's loss was not computed")
        slot.fired = True
        return grad + spread_to_tokens(slot.gradient, slot.form_index, grad.dtype), None


class _Sink(torch.autograd.Function):
    """A zero scalar depending on tensors: the last stage's output for the schedule's backward
    call, which then reaches every injection (the alignment loss has no other path to them)."""

    @staticmethod
    def forward(ctx, *tensors):
        ctx.shapes = [(t.shape, t.dtype, t.device) for t in tensors]
        return torch.zeros((), dtype=torch.float32, device=tensors[0].device)

    @staticmethod
    def backward(ctx, grad):
        return tuple(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.shapes)


def sink(*tensors) -> torch.Tensor:
    return _Sink.apply(*tensors)


# ------------------------------------------------------------------------------------------
# Which microbatch is running: a CaptureSession per set of hooked model chunks.


def _mask_key(mask) -> Optional[Tuple]:
    """What a recomputed layer's attention mask shares with the original: the storage (its
    address), the offset into it and the shape (megatron's checkpoint hands the layer a
    detached alias, a new tensor object without the original's Python attributes)."""
    if not isinstance(mask, torch.Tensor) or mask.numel() == 0:
        return None
    return mask.untyped_storage().data_ptr(), mask.storage_offset(), tuple(mask.shape)


class CaptureSession:
    """The capture hooks on a set of GPTModel chunks and the microbatches they serve.

    Lifetime: created with the hooks installed; :meth:`remove` (or leaving the ``with`` block)
    takes them off and forgets every microbatch. Within it, :meth:`running` marks the forward
    pass of one microbatch; a microbatch that needs a backward pass stays registered by its
    attention mask (recomputed layers find it that way) until :meth:`release_finished` sees its
    backward pass has run or :meth:`clear` ends the step. A registered microbatch keeps its mask
    referenced, so the storage address in its key cannot be reused by another tensor meanwhile.
    The hooks only act on this session's microbatches: several sessions on one model do not see
    each other's.
    """

    def __init__(self, gpt_models):
        self._active: Optional[MicrobatchContext] = None
        self._pending: Dict[Tuple, MicrobatchContext] = {}
        self._handles: List = []
        try:
            for gpt_model in gpt_models:
                self._install(gpt_model)
        except BaseException:
            self.remove()
            raise

    def __enter__(self) -> "CaptureSession":
        return self

    def __exit__(self, *exc_info):
        self.remove()

    def remove(self):
        """Take the hooks off and forget every microbatch (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    # -- microbatches ----------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, context: MicrobatchContext):
        """The forward pass of one microbatch through this stage's chunk runs inside this block
        (its layer states are pooled); afterwards only recomputations (injection) remain."""
        if self._active is not None:
            raise RuntimeError("a capture forward pass is already running (nested forward steps)")
        self._active = context
        if context.needs_backward:
            key = _mask_key(context.attention_mask)
            if key is not None:
                self._pending[key] = context
        try:
            yield context
        finally:
            self._active = None
            context.pooling = False

    def release_finished(self):
        """Forget microbatches whose backward pass has run. Called at the start of a forward step:
        megatron's schedules run a microbatch's backward step (with its recomputations) to the end
        before the next forward step, so a started backward is a finished one by then."""
        for key in [k for k, c in self._pending.items() if c.backward_started()]:
            del self._pending[key]

    def clear(self):
        """Forget every microbatch (the end of a step)."""
        self._active = None
        self._pending.clear()

    def pending(self) -> int:
        """Microbatches kept for a backward pass."""
        return len(self._pending)

    # -- hooks -----------------------------------------------------------------------------

    def _install(self, gpt_model):
        if gpt_model.pre_process:
            self._handles.append(gpt_model.embedding.register_forward_hook(self._embedding_hook))
        final_norm = getattr(gpt_model.decoder, "final_layernorm", None)
        hook = functools.partial(self._layer_hook, last_is_final_norm=final_norm is not None)
        for layer in gpt_model.decoder.layers:
            self._handles.append(layer.register_forward_hook(hook, with_kwargs=True))
        if final_norm is not None:
            self._handles.append(final_norm.register_forward_hook(self._final_norm_hook))

    def _embedding_hook(self, module, args, output):
        if self._active is None:
            return None
        return self._active.capture(0, output)

    def _layer_hook(self, module, args, kwargs, output, last_is_final_norm: bool):
        context = self._active
        if context is None:  # recomputation inside the backward pass
            context = self._pending.get(_mask_key(kwargs.get("attention_mask")))
        elif context.attention_mask is not kwargs.get("attention_mask"):
            context = None  # a forward without our mask (cannot happen in the schedules)
        if context is None:
            return None
        state = module.layer_number
        if state == context.num_layers and last_is_final_norm:
            return None  # taken after the final norm
        hidden, extra = output
        return context.capture(state, hidden), extra

    def _final_norm_hook(self, module, args, output):
        if self._active is None:
            return None
        return self._active.capture(self._active.num_layers, output)


def decoder_output(hidden_states, **_):
    """An ``output_processor`` for megatron-core's ``GPTModel.forward``: the model returns the
    decoder output (after the final norm) instead of logits. The capture needs no logits, and
    the vocabulary projection of a whole packed microbatch would be wasted work."""
    return hidden_states


# ------------------------------------------------------------------------------------------


def output_embedding_rows(gpt_model, token_ids_sb: torch.Tensor) -> torch.Tensor:
    """[s, b, h] LM-head rows of the tokens, this TP rank's vocabulary share only (zeros for ids
    it does not own), as ``VocabParallelEmbedding`` looks them up; summing over the TP group
    gives the full rows."""
    if gpt_model.share_embeddings_and_output_weights:
        weight = gpt_model.shared_embedding_or_output_weight()
    else:
        weight = gpt_model.output_layer.weight
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    first, last = VocabUtility.vocab_range_from_per_partition_vocab_size(weight.shape[0], tp_rank, tp_size)
    owned = (token_ids_sb >= first) & (token_ids_sb < last)
    local_ids = torch.where(owned, token_ids_sb - first, torch.zeros_like(token_ids_sb))
    rows = torch.nn.functional.embedding(local_ids, weight)
    return rows * owned.unsqueeze(-1).to(rows.dtype)
