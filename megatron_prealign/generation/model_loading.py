"""Load a training checkpoint of any TP / PP layout into a model built at the evaluation's own
layout, and run forward passes through megatron-core's pipeline schedule.

The architecture comes from the checkpoint's run state (``run_state["architecture"]``, written
by the training driver); the layout (``--tensor-model-parallel-size`` /
``--pipeline-model-parallel-size``) and the sequence length come from the evaluation's flags.
Weights are sharded tensors with their global layout, so
:func:`megatron_prealign.training.checkpointing.load_checkpoint` reshards them (optimizer and
RNG are not loaded). Everything runs through :mod:`megatron_prealign.runtime` (CUDA + nccl on a
GPU, gloo + CPU otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.inference.utils import InferenceMode
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_prealign import runtime
from megatron_prealign.data.tokenizer import build_tokenizer_from_args
from megatron_prealign.errors import ConfigError, EvaluationError  # noqa: F401  (EvaluationError: re-exported)
from megatron_prealign.model import ModelArgs, build_model
from megatron_prealign.training import checkpointing

POSITION_KEY = "embedding.position_embeddings.weight"


def _one_line(error: BaseException) -> str:
    """``Type: message`` of an error, for torch's CheckpointException that of each failed rank
    (its own text is a multi-line traceback)."""
    if isinstance(error, CheckpointException):
        return "; ".join(f"rank {rank}: {_one_line(failure[0])}" for rank, failure in error.failures.items())
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _warn(message: str, flush: bool = True) -> None:
    print(message, file=sys.stderr, flush=flush)


def _checkpoint_directory(load: str, iteration: Optional[int], flag: str = "--iteration") -> str:
    """The checkpoint to read: ``iteration`` if complete, else ``latest``'s, else (a garbage or
    dangling pointer) the newest complete one with a warning, as training resumes."""
    if not os.path.isdir(load):
        raise EvaluationError(f"--load {load} is not a directory")
    try:
        iteration = checkpointing.resolve_iteration(load, iteration, announce=_warn, flag=flag,
                                                    action="load")
    except ConfigError as error:
        raise EvaluationError(str(error)) from None
    if iteration is None:
        raise EvaluationError(
            f"--load {load}: no {checkpointing.LATEST} (not a training checkpoint directory, "
            "or no save finished)")
    return checkpointing.checkpoint_dir(load, iteration)


def _saved_position_rows(directory: str) -> Optional[int]:
    """Rows of the saved learned position table (GPT-2 family), from the checkpoint metadata."""
    try:
        metadata = dist_checkpointing.load_tensors_metadata(directory)
    except Exception:  # metadata layout of another version: fall back to the flags
        return None
    for key, value in metadata.items():
        if key.endswith(POSITION_KEY) and getattr(value, "global_shape", None):
            return int(value.global_shape[0])
    return None


@dataclasses.dataclass
class LoadedModel:
    chunks: List[torch.nn.Module]
    model_args: ModelArgs
    run_state: dict
    directory: str

    @property
    def vocab_size(self) -> int:
        return self.model_args.vocab_size

    @property
    def seq_length(self) -> int:
        return self.model_args.seq_length


def _reading(trusted: bool):
    """How a checkpoint's non-tensor items are unpickled: as torch does for a trusted one,
    else weights-only (checkpointing.untrusted_items_weights_only)."""
    return contextlib.nullcontext() if trusted else checkpointing.untrusted_items_weights_only()


def read_architecture(load: str, iteration: Optional[int] = None, flag: str = "--iteration",
                      trusted: bool = False) -> dict:
    """The checkpoint's directory, run state and architecture. Unless ``trusted``, its metadata
    is first checked to hold nothing but checkpoint metadata (torch's reader unpickles it)."""
    directory = _checkpoint_directory(load, iteration, flag)
    if not trusted:
        try:
            checkpointing.verify_metadata(directory)
        except ConfigError as error:
            raise EvaluationError(str(error)) from None
    try:
        with _reading(trusted):
            run_state = checkpointing.read_run_state(directory)
    except (Exception, CheckpointException) as error:  # the latter is a BaseException
        raise EvaluationError(f"{directory}: cannot read the checkpoint's run state ({_one_line(error)}); "
                              "a truncated or corrupt file, or (without --trusted-checkpoint) an item "
                              "that is not plain data") from None
    architecture = run_state.get("architecture")
    if not architecture:
        raise EvaluationError(
            f"{directory} has no run_state['architecture'] (not written by megatron_prealign's "
            "training driver); cannot know which model to build")
    return {"directory": directory, "run_state": run_state, "architecture": architecture}


def check_architecture(architecture: dict, expected: Dict[str, object], load: str):
    """``expected``: architecture values the user asserted (flags); a mismatch is an error."""
    checkpointing.check_architecture(architecture, expected, f"--load {load}", other="requested",
                                     error=EvaluationError)


def load_model(
    load: str,
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    seq_length: Optional[int] = None,
    iteration: Optional[int] = None,
    expected_architecture: Optional[Dict[str, object]] = None,
    seed: int = 1234,
    bf16: bool = False,
    trusted: bool = False,
    transformer_impl: Optional[str] = None,
) -> LoadedModel:
    """Initialise the runtime at the given layout, build the checkpoint's architecture and load
    its weights (resharded). Dropout is off (evaluation). `transformer_impl`: build with these
    layers instead of the checkpoint's ("local" loads a Transformer Engine checkpoint: the local
    spec maps TE's fused norm names on load)."""
    info = read_architecture(load, iteration, trusted=trusted)
    architecture, directory = info["architecture"], info["directory"]
    check_architecture(architecture, expected_architecture or {}, load)
    positions = _saved_position_rows(directory) if architecture.get("family") == "gpt2" else None
    seq_length = seq_length or positions
    if seq_length is None:
        raise EvaluationError("give --seq-length (the checkpoint does not record it)")
    if positions is not None and seq_length > positions:
        raise EvaluationError(
            f"--seq-length {seq_length} exceeds the checkpoint's {positions} learned positions")
    model_args = ModelArgs.from_architecture(
        architecture, seq_length=seq_length,
        max_position_embeddings=positions or architecture.get("max_position_embeddings") or seq_length,
        hidden_dropout=0.0, attention_dropout=0.0,
        bf16=bf16, tensor_model_parallel_size=tensor_model_parallel_size,
        **({"transformer_impl": transformer_impl} if transformer_impl else {}),
        pipeline_model_parallel_size=pipeline_model_parallel_size,
    )
    world = runtime.detect_launcher().world_size
    try:
        model_args.validate(world)
    except ValueError as error:
        raise EvaluationError(str(error)) from error
    runtime.initialize(tensor_model_parallel_size, pipeline_model_parallel_size, seed=seed)
    chunks = build_model(model_args, wrap_with_ddp=False)
    try:
        with _reading(trusted):
            run_state = checkpointing.load_checkpoint(
                load, chunks, optimizer=None, scheduler=None,
                iteration=int(os.path.basename(directory).split("_")[1]), load_rng=False)
    except (Exception, CheckpointException) as error:  # the latter is a BaseException
        raise EvaluationError(
            f"cannot load the weights of {directory} into the model its run state describes "
            f"({_one_line(error)}): a truncated or corrupt file? Load another iteration") from None
    for chunk in chunks:
        chunk.eval()
    return LoadedModel(chunks, model_args, run_state, directory)


# -- forward passes ---------------------------------------------------------------------------


def _broadcast_from_last_stage(tensor: Optional[torch.Tensor], shape, dtype) -> torch.Tensor:
    """The last pipeline stage's tensor on every rank of the pipeline group."""
    group = parallel_state.get_pipeline_model_parallel_group()
    if dist.get_world_size(group) == 1:
        return tensor
    if tensor is None:
        tensor = torch.empty(shape, dtype=dtype, device=runtime.device())
    source = parallel_state.get_pipeline_model_parallel_last_rank()
    dist.broadcast(tensor.contiguous(), src=source, group=group)
    return tensor


def _run(model: LoadedModel, microbatches: List[dict], loss_func_factory) -> List[dict]:
    seq = microbatches[0]["tokens"].shape[1]
    micro = microbatches[0]["tokens"].shape[0]

    def forward_step(iterator, chunk):
        batch = next(iterator)
        labels = batch.get("labels")
        output = chunk(batch["tokens"], batch["position_ids"], None, labels=labels)
        return output, loss_func_factory(batch)

    with torch.no_grad():
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(microbatches), model=model.chunks,
            num_microbatches=len(microbatches), seq_length=seq, micro_batch_size=micro,
            forward_only=True,
        )
    return outputs or []


def _to_device(batch: dict) -> dict:
    return {k: v.to(runtime.device()) for k, v in batch.items()}


def sequence_nll(model: LoadedModel, tokens: torch.Tensor, labels: torch.Tensor,
                 mask: torch.Tensor, micro_batch_size: int = 8) -> torch.Tensor:
    """[n, 2] fp64 on every rank: per row, the summed negative log-likelihood of the masked
    label positions and their count. ``tokens``/``labels``/``mask`` are [n, s]."""
    n, s = tokens.shape
    pad = (-n) % micro_batch_size
    if pad:
        tokens = torch.cat([tokens, tokens[:1].expand(pad, s)])
        labels = torch.cat([labels, labels[:1].expand(pad, s)])
        mask = torch.cat([mask, torch.zeros(pad, s, dtype=mask.dtype)])
    microbatches = []
    for start in range(0, tokens.shape[0], micro_batch_size):
        rows = slice(start, start + micro_batch_size)
        microbatches.append(_to_device({
            "tokens": tokens[rows].long(), "labels": labels[rows].long(),
            "position_ids": torch.arange(s).expand(tokens[rows].shape[0], s).contiguous(),
            "loss_mask": mask[rows].float(),
        }))

    def factory(batch):
        def loss_func(per_token_loss):
            weights = batch["loss_mask"]
            sums = (per_token_loss.float() * weights).sum(1).double()
            stacked = torch.stack([sums, weights.sum(1).double()], dim=1)
            return stacked.sum(), torch.ones((), dtype=torch.int, device=stacked.device), {"rows": stacked}
        return loss_func

    outputs = _run(model, microbatches, factory)
    result = torch.cat([o["rows"] for o in outputs]) if outputs else None
    result = _broadcast_from_last_stage(result, (tokens.shape[0], 2), torch.float64)
    return result[:n].cpu()


def last_token_logits(model: LoadedModel, tokens: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                      inference_context=None, start_position: int = 0) -> torch.Tensor:
    """[n, vocab] fp32 on every rank: full-vocabulary logits after the last real token of each
    row (rows right-padded to a common length; ``lengths`` None: every row is full).

    With a megatron-core ``inference_context`` (a KV cache) ``tokens`` are the next tokens of
    every row at positions ``start_position...``: the cache holds the keys / values of the
    positions before them, and the model returns the last position's logits only."""
    n, s = tokens.shape
    last = (lengths - 1).long() if lengths is not None else torch.full((n,), s - 1)
    batch = _to_device({
        "tokens": tokens.long(),
        "position_ids": torch.arange(start_position, start_position + s).expand(n, s).contiguous(),
        "last": last if inference_context is None else torch.zeros(n, dtype=torch.long),
    })

    def forward_step(iterator, chunk):
        b = next(iterator)
        if inference_context is None:
            output = chunk(b["tokens"], b["position_ids"], None)
        else:  # megatron-core's inference mode gathers the vocabulary over TP itself
            output = chunk(b["tokens"], b["position_ids"], None, inference_context=inference_context,
                           runtime_gather_output=True)

        def loss_func(logits):
            # logits [b, s, vocab / TP] (parallel_output): gather the vocabulary over TP.
            picked = logits[torch.arange(logits.shape[0], device=logits.device), b["last"]].float()
            full = (picked if inference_context is not None
                    else tensor_parallel.gather_from_tensor_model_parallel_region(picked))
            return full.sum() * 0, torch.ones((), dtype=torch.int, device=full.device), {"logits": full}
        return output, loss_func

    # megatron-core's inference engines mark their forwards with InferenceMode; only then does
    # GPTModel keep the KV-cache path's logits to the last position (materialize_only_last_token_logits).
    inference_mode = InferenceMode.active() if inference_context is not None else contextlib.nullcontext()
    with torch.no_grad(), inference_mode:
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter([batch]), model=model.chunks,
            num_microbatches=1, seq_length=s, micro_batch_size=n, forward_only=True,
        )
    result = outputs[0]["logits"] if outputs else None
    result = _broadcast_from_last_stage(result, (n, model.vocab_size), torch.float32)
    return result.cpu()


def tokenizer_for(args, required: bool = True):
    """The tokenizer the parsed flags name (``--tokenizer-type`` ...), or None when not
    ``required`` and none is named."""
    if not args.tokenizer_type:
        if required:
            raise EvaluationError("this evaluation needs --tokenizer-type (and --tokenizer-model)")
        return None
    return build_tokenizer_from_args(args)


def load_for(args, iteration: Optional[int] = None):
    """:func:`load_model` with the checkpoint, layout and expected architecture of the parsed
    flags (``cli.options.add_checkpoint_args``); ``iteration`` overrides ``--iteration``."""
    expected = {"family": args.model_family, "num_layers": args.num_layers,
                "hidden_size": args.hidden_size, "num_attention_heads": args.num_attention_heads}
    return load_model(args.load, args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                      args.seq_length, iteration if iteration is not None else args.iteration, expected,
                      args.seed, args.bf16, trusted=args.trusted_checkpoint)
