"""`import_hf`: a transformers directory -> this project's distributed checkpoint, written by
the model's own `sharded_state_dict` through megatron-core's dist_checkpointing at any TP x PP;
`export_hf`: a checkpoint of any layout -> a transformers directory (safetensors shards + index,
config.json, generation_config.json, optionally the tokenizer).

Both check everything they can (architecture, shapes against the config, shards, layout)
before writing, stream tensor by tensor (each rank reads only the transformers tensors of its
own parameters; the export holds the model once plus one output shard), and write to a
temporary sibling directory renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.utils import unwrap_model
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from megatron_prealign import runtime
from megatron_prealign.data.atomic import staging_directory
from megatron_prealign.generation.model_loading import EvaluationError, load_model, read_architecture
from megatron_prealign.hf.config import (
    SPECIAL_TOKEN_IDS, ConversionError, config_to_json, hf_config_from_args, model_args_from_hf,
    token_ids_in_vocab,
)
from megatron_prealign.hf.tokenizer import check_tokenizer
from megatron_prealign.hf.weights import expected_hf_shapes, export_tensors, rules_for
from megatron_prealign.model import ModelArgs, build_model
from megatron_prealign.training import checkpointing

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -- reading transformers checkpoints --------------------------------------------------------


class SafetensorsReader:
    """The tensors of a transformers directory (one file or shards with an index), read one at
    a time. Refuses pickled (.bin) checkpoints: loading them would run arbitrary code."""

    def __init__(self, directory: str):
        index_path, single = os.path.join(directory, INDEX), os.path.join(directory, WEIGHTS)
        if os.path.isfile(index_path):
            weight_map = _weight_map(index_path)
        elif os.path.isfile(single):
            weight_map = None
        else:
            pickled = [f for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")
                       if os.path.exists(os.path.join(directory, f))]
            hint = (" (only pickled .bin weights found: re-save them with safetensors, e.g. "
                    "model.save_pretrained(dir, safe_serialization=True))") if pickled else ""
            raise ConversionError(f"--hf-dir {directory}: neither {WEIGHTS} nor {INDEX}{hint}")
        files = sorted(set(weight_map.values())) if weight_map else [WEIGHTS]
        missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        if missing:
            raise ConversionError(f"--hf-dir {directory}: shard(s) {', '.join(missing)} named in "
                                  f"{INDEX} are missing")
        self.handles = {}
        for f in files:
            try:
                self.handles[f] = safe_open(os.path.join(directory, f), framework="pt")
            except (SafetensorError, OSError) as error:
                raise ConversionError(f"--hf-dir {directory}: {f} is not a readable safetensors file "
                                      f"(truncated or corrupt? {error}); download it again") from None
        self.where = weight_map or {k: WEIGHTS for k in self.handles[WEIGHTS].keys()}

    def keys(self):
        return self.where.keys()

    def _read(self, name: str, what):
        shard = self.where.get(name)
        if shard is None:
            raise ConversionError(f"tensor {name} is in no shard of the checkpoint (its index or files are incomplete)")
        try:
            return what(self.handles[shard])
        except (SafetensorError, OSError, KeyError) as error:
            raise ConversionError(f"{shard}: cannot read tensor {name} (truncated or "
                                  f"corrupt file, or an index naming the wrong shard? {error})") from None

    def shape(self, name: str):
        return tuple(self._read(name, lambda handle: handle.get_slice(name).get_shape()))

    def get(self, name: str) -> torch.Tensor:
        return self._read(name, lambda handle: handle.get_tensor(name))


def _weight_map(index_path: str) -> Dict[str, str]:
    try:
        with open(index_path, encoding="utf-8") as handle:
            weight_map = json.load(handle).get("weight_map")
    except (ValueError, AttributeError) as error:
        raise ConversionError(f"{index_path}: not a JSON object ({error})") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise ConversionError(f"{index_path}: no 'weight_map' (tensor name -> shard file); "
                              "re-save the model with save_pretrained")
    return weight_map


def _gpt2_prefix(reader: SafetensorsReader) -> str:
    # GPT2LMHeadModel saves "transformer.h.0..."; the original OpenAI upload has no prefix.
    return "transformer." if any(k.startswith("transformer.") for k in reader.keys()) else ""


def check_weights(args: ModelArgs, reader: SafetensorsReader, rules) -> None:
    """Every tensor the config implies is present with its shape (before anything is written)."""
    expected = expected_hf_shapes(args, rules)
    missing = [k for k in expected if k not in reader.where]
    if missing:
        raise ConversionError(
            f"the checkpoint lacks {len(missing)} tensor(s) its config.json implies, e.g. "
            f"{', '.join(missing[:3])}")
    wrong = [f"{k}: config implies {list(v)}, weights have {list(reader.shape(k))}"
             for k, v in expected.items() if reader.shape(k) != v]
    if wrong:
        raise ConversionError("config.json disagrees with the weights: " + "; ".join(wrong[:4]))


def read_hf_config(hf_dir: str):
    import transformers

    if not os.path.isfile(os.path.join(hf_dir, "config.json")):
        raise ConversionError(f"--hf-dir {hf_dir}: no config.json")
    return transformers.AutoConfig.from_pretrained(hf_dir)


# -- atomic output ---------------------------------------------------------------------------


def _refuse_existing(path: str, flag: str):
    if os.path.exists(path):
        raise ConversionError(f"{flag} {path} already exists; choose a new path (nothing is overwritten)")


def _move_into_place(staging: str, path: str, flag: str):
    """Rename the finished staging directory to ``path``; refuse if another run got there first."""
    if os.path.exists(path):  # rename() would replace an empty directory
        shutil.rmtree(staging, ignore_errors=True)
        _refuse_existing(path, flag)
    try:
        os.rename(staging, path)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConversionError(f"{flag} {path}: cannot move the finished output into place "
                              f"({error.strerror or error}); nothing was written there") from None


# -- import ----------------------------------------------------------------------------------


def _local_shard(full: torch.Tensor, param: torch.nn.Parameter, glu: bool) -> torch.Tensor:
    if not getattr(param, "tensor_model_parallel", False):
        return full
    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    dim = param.partition_dim
    if glu:  # [gate; up]: each rank holds its slice of both
        return torch.cat([half.chunk(tp, dim)[rank] for half in full.chunk(2, dim)], dim)
    return full.chunk(tp, dim)[rank]


def _global_name(model, local_name: str) -> str:
    """decoder.layers.{local}.x -> decoder.layers.{global}.x (the layer knows its number)."""
    parts = local_name.split(".")
    if parts[:2] == ["decoder", "layers"]:
        parts[2] = str(model.decoder.layers[int(parts[2])].layer_number - 1)
    return ".".join(parts)


def fill_model(model, args: ModelArgs, reader: SafetensorsReader, rules, progress: bool = True):
    """Copy this rank's shard of every parameter from the transformers tensors."""
    by_name = {r.megatron: r for r in rules}
    tied_output = by_name.get("embedding.word_embeddings.weight")
    params = [(n, p) for n, p in model.named_parameters()]
    for local_name, param in tqdm(params, desc="import", disable=not progress):
        name = _global_name(model, local_name)
        # A tied output layer on a pipeline stage without the embedding holds a copy of it.
        rule = by_name.get(name) or (tied_output if name == "output_layer.weight" else None)
        if rule is None:
            raise ConversionError(f"no conversion rule for the model's parameter {name}")
        full = rule.to_megatron(*(reader.get(n) for n in rule.hf))
        glu = name.endswith("mlp.linear_fc1.weight") and args.resolved_activation() == "swiglu"
        shard = _local_shard(full, param, glu)
        if tuple(shard.shape) != tuple(param.shape):
            raise ConversionError(f"{name}: converted shard {list(shard.shape)} != parameter "
                                  f"{list(param.shape)}")
        with torch.no_grad():
            param.copy_(shard)


def plan_import(hf_dir: str, tensor_parallel: int, pipeline_parallel: int, divisible_by: int = 128):
    """(config, ModelArgs, reader, rules), every check done: safe to call on every rank."""
    config = read_hf_config(hf_dir)
    args = model_args_from_hf(config, tensor_parallel, pipeline_parallel, divisible_by)
    groups = args.num_query_groups or args.num_attention_heads
    if groups % tensor_parallel or args.num_attention_heads % tensor_parallel:
        raise ConversionError(
            f"--tensor-model-parallel-size {tensor_parallel} does not divide the {groups} "
            f"key/value heads ({args.num_attention_heads} attention heads) of {hf_dir}")
    try:
        args.validate()
    except ValueError as error:
        raise ConversionError(str(error)) from error
    reader = SafetensorsReader(hf_dir)
    rules = rules_for(args, _gpt2_prefix(reader) if args.family == "gpt2" else "")
    check_weights(args, reader, rules)
    return config, args, reader, rules


def import_hf(hf_dir: str, save: str, tensor_parallel: int = 1, pipeline_parallel: int = 1,
              divisible_by: int = 128, params_dtype: str = "float32", progress: bool = True) -> str:
    """Run on tensor_parallel x pipeline_parallel (x any data-parallel) ranks; returns `save`."""
    _refuse_existing(save, "--save")
    config, args, reader, rules = plan_import(hf_dir, tensor_parallel, pipeline_parallel, divisible_by)
    args.bf16, args.fp16 = params_dtype == "bfloat16", params_dtype == "float16"
    args.use_cpu_initialization = True
    runtime.initialize(tensor_parallel, pipeline_parallel)
    (chunk,) = build_model(args, wrap_with_ddp=False)
    fill_model(unwrap_model(chunk), args, reader, rules, progress and dist.get_rank() == 0)
    # One staging directory per run, made by rank 0 and shared with the other ranks.
    staging = [staging_directory(save) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(staging, src=0)
    try:
        checkpointing.save_checkpoint(staging[0], 0, [chunk], run_state={
            "architecture": args.architecture(), "consumed_samples": 0, "alignment_steps": 0,
            "stage": "imported", "hf_config": config_to_json(config)})
        if dist.get_rank() == 0:
            _move_into_place(staging[0], save, "--save")
    except BaseException:
        if dist.get_rank() == 0:
            shutil.rmtree(staging[0], ignore_errors=True)
        raise
    dist.barrier()
    return save


# -- export ----------------------------------------------------------------------------------


class ShardWriter:
    """safetensors shards of at most `max_bytes`, named and indexed as transformers does."""

    def __init__(self, directory: str, max_bytes: int):
        self.directory, self.max_bytes = directory, max_bytes
        self.pending: Dict[str, torch.Tensor] = {}
        self.pending_bytes, self.files, self.weight_map, self.total = 0, [], {}, 0

    def add(self, name: str, tensor: torch.Tensor):
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.detach().cpu().contiguous()
        self.pending_bytes += size
        self.total += size

    def _flush(self):
        path = os.path.join(self.directory, f"shard-{len(self.files)}.tmp")
        save_file(self.pending, path, metadata={"format": "pt"})
        self.files.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self):
        if self.pending or not self.files:
            self._flush()
        n = len(self.files)
        for i, (path, names) in enumerate(self.files):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.rename(path, os.path.join(self.directory, final))
            self.weight_map.update({name: final for name in names})
        index = {"metadata": {"total_size": self.total}, "weight_map": self.weight_map}
        with open(os.path.join(self.directory, INDEX), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)


def _verify_export(directory: str, expected: Dict[str, tuple]):
    """Re-open what was written: every expected tensor present once, with its shape."""
    reader = SafetensorsReader(directory)
    written = {k: reader.shape(k) for k in reader.keys()}
    if written != {k: tuple(v) for k, v in expected.items()}:
        raise ConversionError(f"written shards disagree with the expected tensors in {directory}")


def export_hf(load: str, out: str, tokenizer_args: Optional[dict] = None, dtype: Optional[str] = None,
              max_shard_bytes: int = 5 * 2**30, iteration: Optional[int] = None,
              progress: bool = True, trusted: bool = False) -> str:
    """Single process. Any TP x PP checkpoint is resharded to TP=PP=1 on load."""
    _refuse_existing(out, "--out")
    try:
        info = read_architecture(load, iteration, flag="--ckpt-step", trusted=trusted)
    except EvaluationError as error:
        raise ConversionError(str(error)) from error
    iteration = info["run_state"].get("iteration", iteration)  # resolved once (and warned once)
    args = ModelArgs.from_architecture(info["architecture"], seq_length=1)
    saved_config = info["run_state"].get("hf_config")
    if dtype is None:
        saved_dtype = (saved_config or {}).get("dtype") or (saved_config or {}).get("torch_dtype")
        dtype = saved_dtype if saved_dtype in DTYPES else "float32"
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    tokenizer = None
    if tokenizer_args:
        tokenizer = check_tokenizer(tokenizer_args, args.true_vocab_size or args.vocab_size)
    try:
        # Local layers whatever the checkpoint trained with: their names are the rules' (a TE
        # model's norms live in its linear layers), and the local spec loads TE checkpoints.
        model = load_model(load, 1, 1, seq_length=args.max_position_embeddings or 2048,
                           iteration=iteration, trusted=True,  # checked just above
                           transformer_impl="local")
    except EvaluationError as error:
        raise ConversionError(str(error)) from error
    args = model.model_args
    state = {k: v for k, v in unwrap_model(model.chunks[0]).state_dict().items()
             if not k.endswith("_extra_state")}
    rules = rules_for(args)
    unused = set(state) - {r.megatron for r in rules}
    if unused:
        raise ConversionError(f"{load}: tensors without a transformers counterpart: {sorted(unused)[:4]}")
    vocab = args.true_vocab_size or args.vocab_size
    config = hf_config_from_args(args, vocab, saved_config, dtype=dtype)
    _set_special_token_ids(config, tokenizer, vocab)

    staging = staging_directory(out)
    try:
        writer = ShardWriter(staging, max_shard_bytes)
        expected = {}
        for name, tensor in tqdm(export_tensors(state, rules), desc="export", disable=not progress,
                                 total=sum(len(r.hf) for r in rules)):
            tensor = tensor.to(DTYPES[dtype])
            writer.add(name, tensor)
            expected[name] = tuple(tensor.shape)
        writer.close()
        config.save_pretrained(staging)
        _generation_config(config, tokenizer).save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        _verify_export(staging, expected)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _move_into_place(staging, out, "--out")
    return out


def _set_special_token_ids(config, tokenizer, vocab: int):
    """BOS / EOS / PAD ids of the config: the exported tokenizer's, which generate() stops at
    (without a tokenizer the config keeps the ids of hf_config_from_args)."""
    if tokenizer is None:
        return
    for key in SPECIAL_TOKEN_IDS:
        setattr(config, key, token_ids_in_vocab(getattr(tokenizer, key, None), vocab))


def _generation_config(config, tokenizer):
    from transformers import GenerationConfig

    generation = GenerationConfig.from_model_config(config)
    if tokenizer is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, key, None)
            if value is not None and getattr(generation, key, None) is None:
                setattr(generation, key, value)
    return generation
