"""Resource plan of a `megatron_prealign.pretrain` launch: parameter count, parallel layout,
tokens and FLOPs per step, expected step time and memory per GPU, from the very flags a launch
script passes to the driver. The `examples/pretrain_*.sh` scripts call it for `--dry-run`:

    python -m megatron_prealign.cli.launch_plan --nnodes 4 --gpus-per-node 8 --gpu a100 --mfu 0.4 \\
        --node-counts 1 2 4 8 -- --model-size 1.3B --seq-length 1024 ... (the pretrain flags)

Nothing is allocated and no data file is read (the tokenizer model is read when it exists, to
get the vocabulary; otherwise `--assumed-vocab-size`). Exit status 2 with a message when the
layout is invalid for the node count.

Formulas (s sequence length, b micro batch, h hidden, a heads, L layers, t TP, p PP, d DP,
V padded vocabulary, N parameters, T tokens per step):

* parameters: `megatron_prealign.model.count_parameters` (the builder's own formulas; the tests
  compare them with a built GPTModel).
* weights + gradients + optimizer, bytes per parameter held by a GPU (Megatron-LM's accounting;
  the driver keeps gradients in fp32, `grad_reduce_in_fp32=True`): bf16 weights 2, fp32
  gradients 4, Adam state 12 (fp32 main weights, m, v); the distributed optimizer shards the 12
  over the d data-parallel ranks: 18 -> 6 + 12/d. A GPU holds the parameters of its pipeline
  stage with the TP-sharded ones divided by t (norms, row-parallel biases and learned positions
  are replicated).
* activations, bytes per layer and microbatch (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", Sec. 4): `s*b*h*(10 + 24/t + c*a*s/(h*t))`, with
  sequence parallelism `s*b*h/t*(34 + c*a*s/h)`; c = 5 in the paper (fused softmax storing
  bf16 probabilities); megatron-core's `local` attention runs an unfused softmax in fp32 and
  saves its fp32 output, so c = 7 there. Selective recompute (and flash attention, i.e.
  `--transformer-impl transformer_engine`) drops the c*a*s/h term; full recompute keeps only
  each layer's input, 2*s*b*h (/t with SP), plus one layer's activations while it recomputes.
  The first pipeline stage keeps min(p, microbatches) microbatches of its L/p layers. Outside
  the layers: embedding dropout mask s*b*h (1 byte), final norm and LM-head input 4*s*b*h and
  fp32 logits for the cross entropy 4*s*b*V/t.
* pre-alignment steps add one alignment microbatch per DP rank: the step's word forms packed
  into r rows of s tokens (r = ceil(words per DP rank * 16 / s), 16 tokens per word group
  assumed; r = b with PP > 1 on local layers, where stages exchange fixed shapes). It is one more microbatch
  through the schedule (no more in flight at once), and its layer outputs are kept for the
  contrastive loss: (L/p + 2)*2*s*r*h/t, plus its block-diagonal mask r*s^2 (1 byte).
* transient: local attention's fp32 score copies, 8*b*a*s^2/t, plus an assumed 3 GiB for the
  CUDA context, NCCL buffers and allocator fragmentation.
* FLOPs per step (model FLOPs, recompute not counted, as MFU is defined):
  `6*N_mm*T + 12*L*s*h*T`, N_mm the matmul parameters (non-embedding + the LM head V*h; the
  embedding lookups are not matmuls), the second term the attention scores and their
  application (forward 4*s*h per token and layer, backward twice that). T = global batch * s;
  pre-alignment steps add the alignment microbatches, d*r*s tokens.
* step time = FLOPs per step / (GPUs * peak * MFU), peak the dense bf16 peak (A100 312, H100
  989 TFLOP/s) also for fp8 runs: give fp8's gain as a higher `--mfu`.
* fp8 (Transformer Engine) adds a cached fp8 copy of the weights, 1 byte per parameter.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import TYPE_CHECKING, Dict, List, Optional

from megatron_prealign.data.tokenizer import build_tokenizer_from_spec
from megatron_prealign.training import arguments
from megatron_prealign.training.config import TrainConfig
from megatron_prealign.training.vocab import pad_vocab_size

# megatron-core warns at import time about optional kernels (apex, TE); a plan does not use them.
warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")

if TYPE_CHECKING:  # model.py (torch, megatron-core) is imported once the arguments are parsed
    from megatron_prealign.model import ModelArgs


def count_parameters(model: ModelArgs) -> Dict[str, int]:
    """``model.count_parameters``, imported when a plan is computed."""
    from megatron_prealign.model import count_parameters as count

    return count(model)

GIB = 1024 ** 3
FRAMEWORK_OVERHEAD_GIB = 3.0

# Dense peak TFLOP/s per GPU (NVIDIA data sheets, SXM parts) and memory in GiB.
GPUS = {
    "a100": {"name": "A100 80GB SXM", "memory_gib": 80, "bf16": 312.0, "fp8": None},
    "h100": {"name": "H100 80GB SXM", "memory_gib": 80, "bf16": 989.0, "fp8": 1979.0},
}


@dataclasses.dataclass
class Layout:
    world: int
    tp: int
    pp: int
    dp: int
    micro_batch: int
    global_batch: int
    microbatches: int  # LM microbatches per step per DP rank


def padded_vocab(vocab: int, tp: int) -> int:
    """The driver's padding of a fresh run (training/vocab.py): a multiple of 128 x TP."""
    return pad_vocab_size(vocab, tp)


def resolve_vocab(cfg: TrainConfig, assumed: int) -> (int, str):
    if cfg.model.padded_vocab_size:
        return cfg.model.padded_vocab_size, "--padded-vocab-size"
    tp = cfg.parallel.tensor_model_parallel_size
    if cfg.tokenizer.tokenizer_model and os.path.exists(cfg.tokenizer.tokenizer_model) and not cfg.alignment.enclone_mapping:
        try:
            size = build_tokenizer_from_spec(cfg.tokenizer.spec()).vocab_size
            return padded_vocab(size, tp), f"tokenizer {cfg.tokenizer.tokenizer_model} ({size} tokens), padded"
        except Exception as error:  # a dry run must not fail on a tokenizer it cannot load here
            print(f"note: could not load the tokenizer ({error}); assuming {assumed} tokens", file=sys.stderr)
    source = f"assumed {assumed} tokens (VOCAB_SIZE), padded to 128 x TP"
    if cfg.alignment.enclone_mapping:
        assumed *= 2
        source = f"assumed 2 x {assumed // 2} tokens (En-Clone), padded"
    return padded_vocab(assumed, tp), source


def check_layout(cfg: TrainConfig, model: ModelArgs, world: int) -> Layout:
    """The driver's checks that depend only on the flags and the world size (ValueError)."""
    tp, pp = cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size
    model.validate_parallel_layout(world)  # the training run's own check (heads, layers, vocab)
    dp = world // (tp * pp)
    if cfg.schedule.global_batch_size % (cfg.schedule.micro_batch_size * dp):
        raise ValueError(
            f"global batch {cfg.schedule.global_batch_size} is not a multiple of micro batch "
            f"{cfg.schedule.micro_batch_size} x DP {dp} on {world} GPUs"
        )
    aligning = cfg.aligning
    if aligning and cfg.alignment.alignment_words_per_batch % dp:
        raise ValueError(f"--alignment-words-per-batch {cfg.alignment.alignment_words_per_batch} is not divisible by DP {dp}")
    return Layout(world, tp, pp, dp, cfg.schedule.micro_batch_size, cfg.schedule.global_batch_size,
                  cfg.schedule.global_batch_size // (cfg.schedule.micro_batch_size * dp))


def parameters_per_gpu(model: ModelArgs, tp: int, pp: int) -> Dict[str, int]:
    """Parameters held by the GPU of the largest pipeline stage (first or last), TP-sharded."""
    h = model.hidden_size
    llama = model.family == "llama"
    final_norm = count_parameters(dataclasses.replace(model, num_layers=0))["non_embedding"]
    per_layer = count_parameters(dataclasses.replace(model, num_layers=1))["non_embedding"] - final_norm
    norm = h if llama else 2 * h
    replicated = 2 * norm + (0 if llama else 2 * h)  # norms, attention-proj and fc2 biases
    layer_gpu = (per_layer - replicated) // tp + replicated
    layers = model.num_layers // pp
    word = model.vocab_size * h // tp
    positions = 0 if llama else (model.max_position_embeddings or model.seq_length) * h
    first = word + positions + layers * layer_gpu
    last = layers * layer_gpu + final_norm + (word if (llama or pp > 1) else 0)
    if pp == 1:
        first = last = first + final_norm + (word if llama else 0)
    return {"first_stage": first, "last_stage": last, "max": max(first, last)}


def attention_coefficient(cfg: TrainConfig) -> int:
    return 5 if cfg.model.transformer_impl == "transformer_engine" else 7


# Packed alignment microbatches: tokens per word group (the English word and its translations,
# each a few tokens) assumed for the estimate; the real number depends on the table.
TOKENS_PER_WORD_GROUP = 16


def alignment_rows(cfg: TrainConfig, dp: int) -> int:
    """Rows of --seq-length tokens a DP rank's alignment microbatch takes, as the driver builds it
    (training/loop.py): the word forms packed into rows of --seq-length, with PP > 1 on local
    layers padded to --micro-batch-size rows (pipeline stages exchange fixed shapes); on
    Transformer Engine layers one form per row, about as many tokens (shapes exchanged per
    microbatch at PP > 1)."""
    if cfg.parallel.pipeline_model_parallel_size > 1 and cfg.model.transformer_impl == "local":
        return cfg.schedule.micro_batch_size
    words = cfg.alignment.alignment_words_per_batch // max(dp, 1)
    return max(1, -(-words * TOKENS_PER_WORD_GROUP // cfg.model.seq_length))


def activation_bytes(cfg: TrainConfig, model: ModelArgs, layout: Layout, aligning: bool) -> Dict[str, float]:
    s, b, h, a = model.seq_length, layout.micro_batch, model.hidden_size, model.num_attention_heads
    t, p, v, L = layout.tp, layout.pp, model.vocab_size, model.num_layers
    sp = cfg.parallel.sequence_parallel
    flash = cfg.model.transformer_impl == "transformer_engine"
    attn = 0.0 if (flash or cfg.model.recompute_granularity == "selective") else attention_coefficient(cfg) * a * s / h
    if sp:
        per_layer = s * b * h / t * (34 + attn)
    else:
        per_layer = s * b * h * (10 + 24 / t + attn / t)
    layers_on_stage = L // p
    microbatches = layout.microbatches + (1 if aligning else 0)
    in_flight = min(p, microbatches)
    if cfg.model.recompute_granularity == "full":
        kept = 2 * s * b * h / (t if sp else 1)
        layers = layers_on_stage * in_flight * kept + per_layer  # + one layer being recomputed
    else:
        layers = layers_on_stage * in_flight * per_layer
    embedding = s * b * h * in_flight / (t if sp else 1)
    head = 4 * s * b * h / (t if sp else 1) + 4 * s * b * v / t
    result = {"layers": layers, "embedding_and_head": embedding + head if p == 1 else max(embedding, head)}
    if aligning:
        rows = alignment_rows(cfg, layout.dp)
        result["alignment_captures"] = (layers_on_stage + 2) * 2 * s * rows * h / t + rows * s * s
    return result


def memory(cfg: TrainConfig, model: ModelArgs, layout: Layout, aligning: bool) -> Dict[str, float]:
    params = parameters_per_gpu(model, layout.tp, layout.pp)["max"]
    half = cfg.model.bf16 or cfg.model.fp16
    weight_bytes = (2 if half else 4) + (1 if cfg.model.fp8_format else 0)  # + TE's cached fp8 copies
    grad_bytes = 4
    optim_bytes = 12 if half else 8
    if cfg.parallel.use_distributed_optimizer:
        optim_bytes = optim_bytes / layout.dp
    act = activation_bytes(cfg, model, layout, aligning)
    s, b, a = model.seq_length, layout.micro_batch, model.num_attention_heads
    scores = 0.0 if cfg.model.transformer_impl == "transformer_engine" else 8 * b * a * s * s / layout.tp
    out = {
        "weights": params * weight_bytes / GIB,
        "gradients": params * grad_bytes / GIB,
        "optimizer": params * optim_bytes / GIB,
        "activations": sum(act.values()) / GIB,
        "transient": scores / GIB + FRAMEWORK_OVERHEAD_GIB,
    }
    out["total"] = sum(out.values())
    out["activation_parts"] = {k: v / GIB for k, v in act.items()}
    return out


def flops_per_step(model: ModelArgs, tokens: int) -> float:
    counts = count_parameters(model)
    matmul = counts["non_embedding"] + model.vocab_size * model.hidden_size
    return 6.0 * matmul * tokens + 12.0 * model.num_layers * model.seq_length * model.hidden_size * tokens


def plan(argv: List[str], nnodes: int, gpus_per_node: int, gpu: str = "a100", mfu: float = 0.4,
         assumed_vocab: int = 50257) -> dict:
    cfg = arguments.parse_config(argv)
    vocab, vocab_source = resolve_vocab(cfg, assumed_vocab)
    model = arguments.model_args(cfg, vocab)
    world = nnodes * gpus_per_node
    layout = check_layout(cfg, model, world)
    counts = count_parameters(model)
    aligning = cfg.aligning
    tokens = cfg.schedule.global_batch_size * cfg.model.seq_length
    align_tokens = tokens + layout.dp * alignment_rows(cfg, layout.dp) * cfg.model.seq_length
    spec = GPUS[gpu]
    fp8 = cfg.model.fp8_format is not None
    # MFU is taken against the dense bf16 peak, also for fp8 runs (the usual convention): fp8's
    # speed-up shows as a higher achievable MFU (--mfu), not as a higher peak.
    peak = spec["bf16"]
    flops = flops_per_step(model, tokens)
    flops_align = flops_per_step(model, align_tokens)
    seconds = flops / (world * peak * 1e12 * mfu)
    seconds_align = flops_align / (world * peak * 1e12 * mfu)
    mem_train = memory(cfg, model, layout, aligning=False)
    mem_align = memory(cfg, model, layout, aligning=True) if aligning else None
    train_iters = arguments.train_iters(cfg)  # 0 with --train-epochs: known once the data is read
    total_seconds = seconds * train_iters + seconds_align * cfg.alignment.prealign_iters
    return {
        "model": {"size": cfg.model.model_size, "family": model.family, "layers": model.num_layers,
                  "hidden": model.hidden_size, "heads": model.num_attention_heads,
                  "seq_length": model.seq_length, "vocab": vocab, "vocab_source": vocab_source},
        "parameters": counts,
        "parameters_per_gpu": parameters_per_gpu(model, layout.tp, layout.pp),
        "layout": dataclasses.asdict(layout) | {"nnodes": nnodes, "gpus_per_node": gpus_per_node},
        "precision": "fp8 (" + cfg.model.fp8_format + ")" if fp8 else "bf16" if cfg.model.bf16 else "fp16" if cfg.model.fp16 else "fp32",
        "transformer_impl": cfg.model.transformer_impl,
        "recompute": cfg.model.recompute_granularity or "none",
        "sequence_parallel": cfg.parallel.sequence_parallel,
        "distributed_optimizer": cfg.parallel.use_distributed_optimizer,
        "tokens_per_step": tokens,
        "tokens_per_prealign_step": align_tokens if aligning else None,
        "flops_per_step": flops,
        "flops_per_prealign_step": flops_align if aligning else None,
        "gpu": spec["name"], "peak_tflops": peak, "mfu": mfu,
        "step_seconds": seconds,
        "prealign_step_seconds": seconds_align if aligning else None,
        "iterations": {"prealign": cfg.alignment.prealign_iters, "pretrain": train_iters},
        "train_epochs": cfg.schedule.train_epochs,
        "run_hours": None if cfg.schedule.train_epochs else total_seconds / 3600,
        "memory_gib": mem_train,
        "memory_gib_prealign": mem_align,
        "memory_capacity_gib": spec["memory_gib"],
    }


def _num(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:,.0f}"


def layout_summary(p: dict) -> str:
    lay = p["layout"]
    return f"TP={lay['tp']} PP={lay['pp']} DP={lay['dp']}"


def format_text(p: dict, others: Optional[Dict[int, str]] = None) -> str:
    lay, c, m = p["layout"], p["parameters"], p["model"]
    lines = [
        f"model: {m['size'] or 'custom'} ({m['family']}), {m['layers']} layers, hidden {m['hidden']}, "
        f"{m['heads']} heads, seq {m['seq_length']}, vocab {m['vocab']} ({m['vocab_source']})",
        f"parameters: {c['total']:,} total = {c['non_embedding']:,} non-embedding + {c['embedding']:,} embedding",
        f"parameters per GPU (largest stage, TP-sharded): {p['parameters_per_gpu']['max']:,}",
        f"layout: {lay['nnodes']} nodes x {lay['gpus_per_node']} GPUs = {lay['world']}: {layout_summary(p)}; "
        f"micro batch {lay['micro_batch']}, global batch {lay['global_batch']} "
        f"({lay['microbatches']} microbatches per DP rank per step)",
        f"precision: {p['precision']}, --transformer-impl {p['transformer_impl']}, recompute {p['recompute']}, "
        f"sequence parallel {'on' if p['sequence_parallel'] else 'off'}, distributed optimizer "
        f"{'on' if p['distributed_optimizer'] else 'off'}",
        f"tokens per step: {p['tokens_per_step']:,}"
        + (f" (pre-alignment steps: {p['tokens_per_prealign_step']:,} with the alignment microbatches)"
           if p["tokens_per_prealign_step"] else ""),
        f"FLOPs per step: {p['flops_per_step']:.3e} (6*N_mm*T + 12*L*s*h*T)"
        + (f"; pre-alignment step {p['flops_per_prealign_step']:.3e}" if p["flops_per_prealign_step"] else ""),
        f"expected step time at {p['mfu']:.0%} MFU of {p['peak_tflops']:.0f} TFLOP/s ({p['gpu']}): "
        f"{p['step_seconds']:.2f} s"
        + (f" (pre-alignment {p['prealign_step_seconds']:.2f} s)" if p["prealign_step_seconds"] else "")
        + (f"; whole run: --train-epochs {p['train_epochs']:g} (iterations follow from the data)"
           if p.get("train_epochs") else
           f"; whole run ({p['iterations']['prealign']} + {p['iterations']['pretrain']} iterations): "
           f"{p['run_hours']:.1f} h"),
    ]
    for title, mem in (("pretraining", p["memory_gib"]), ("pre-alignment", p["memory_gib_prealign"])):
        if mem is None:
            continue
        parts = ", ".join(f"{k} {v:.2f}" for k, v in mem["activation_parts"].items())
        lines.append(
            f"memory per GPU, {title} (GiB): weights {mem['weights']:.2f} + gradients {mem['gradients']:.2f} "
            f"+ optimizer {mem['optimizer']:.2f} + activations {mem['activations']:.2f} ({parts}) "
            f"+ transient {mem['transient']:.2f} = {mem['total']:.2f} of {p['memory_capacity_gib']} "
            f"({mem['total'] / p['memory_capacity_gib']:.0%})"
        )
    if others:
        lines.append("layouts for the node counts this script names:")
        for nodes, text in others.items():
            lines.append(f"  NNODES={nodes}: {text}")
    return "\n".join(lines)


MARKDOWN_HEADER = (
    "| nodes x GPUs | layout (TP, PP, DP) | micro / global batch | tokens per step | FLOPs per step "
    "| step time | memory per GPU: model states + activations + transient = total |\n"
    "|---|---|---|---|---|---|---|"
)


def format_markdown(plans: List[dict]) -> str:
    """A table for one size and launch configuration, one row per node count."""
    first = plans[0]
    c, m = first["parameters"], first["model"]
    title = (f"**{m['size']}**: {c['total']:,} parameters ({c['non_embedding']:,} non-embedding), "
             f"{m['layers']} layers x {m['hidden']} hidden, {m['heads']} heads, vocabulary {m['vocab']}; "
             f"{first['precision']}, --transformer-impl {first['transformer_impl']}, recompute "
             f"{first['recompute']}, distributed optimizer {'on' if first['distributed_optimizer'] else 'off'}; "
             f"{first['gpu']}, step time at {first['mfu']:.0%} MFU of {first['peak_tflops']:.0f} TFLOP/s"
             + ("; pre-alignment steps (with the alignment microbatches) in brackets"
                if first["prealign_step_seconds"] else "")
             + (f"; --train-epochs {first['train_epochs']:g}" if first.get("train_epochs") else
                f"; {first['iterations']['prealign']} + {first['iterations']['pretrain']} iterations: "
                f"{first['run_hours']:.1f} h on {first['layout']['nnodes']} node(s)"))
    rows = [title, "", MARKDOWN_HEADER]
    for p in plans:
        lay = p["layout"]
        mem = p["memory_gib_prealign"] or p["memory_gib"]
        states = mem["weights"] + mem["gradients"] + mem["optimizer"]
        align = p["prealign_step_seconds"]
        flops = f"{p['flops_per_step']:.3e}" + (f" ({p['flops_per_prealign_step']:.3e})" if align else "")
        step = f"{p['step_seconds']:.2f} s" + (f" ({align:.2f} s)" if align else "")
        rows.append(
            f"| {lay['nnodes']} x {lay['gpus_per_node']} | {lay['tp']}, {lay['pp']}, {lay['dp']} "
            f"| {lay['micro_batch']} / {lay['global_batch']} | {p['tokens_per_step']:,} | {flops} | {step} "
            f"| {states:.1f} + {mem['activations']:.1f} + {mem['transient']:.1f} = {mem['total']:.1f} GiB |"
        )
    return "\n".join(rows)
