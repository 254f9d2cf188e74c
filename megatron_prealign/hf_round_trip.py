"""The Hugging Face round trip of `examples/gpu_check.sh`: a tiny random LLaMA made with
transformers -> `import-hf` -> a few `--sft-packing` fine-tuning steps -> `export-hf` -> the
exported model's logits in transformers against this project's logits of the fine-tuned
checkpoint. The shell script runs the tools between the steps of this module, whose command line is
:mod:`megatron_prealign.cli.hf_round_trip`:

    python -m megatron_prealign.cli.hf_round_trip prepare --out DIR --tokenizer-model SPM_MODEL
    python -m megatron_prealign.cli.hf_round_trip compare --load CKPT --hf-dir DIR --output FILE.json \\
        [--original-hf-dir DIR] [--bf16]

`compare` loads the checkpoint with the run's layers (Transformer Engine when it trained with
them) and compares fp32 logits (``--bf16``: ours in bf16, as the run computed them) on a few
random sequences. Tolerance (max |difference| / (1 + max |transformers' logit|)): 1e-4 in fp32,
where both sides compute the same function with other kernels and summation orders
(tests/test_hf_interop.py finds ~1e-6); 3e-2 in bf16, whose 8-bit mantissa (relative rounding
2^-9 per operation, a few dozen roundings on the way to a logit) allows about 1 %; a conversion
error (a transposed or misordered QKV / gate-up block, a lost norm) moves logits by far more.
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Optional

from megatron_prealign.data.synthetic import ENGLISH

# The tiny LLaMA: grouped-query attention, untied output layer, head dim 32 (TE's fused
# attention kernels take it), SwiGLU.
MODEL = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-5,
             tie_word_embeddings=False)
# The same shapes as training flags (the details without flags come from the checkpoint).
TRAIN_FLAGS = ["--model-family", "llama", "--num-layers", "2", "--hidden-size", "128",
               "--num-attention-heads", "4", "--num-query-groups", "2", "--ffn-hidden-size", "256"]
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}


def make_model(out: str, vocab_size: int, seed: int = 0) -> None:
    import torch  # torch, transformers, megatron-core: where used (cli/hf_round_trip.py --help stays light)
    import transformers

    config = transformers.LlamaConfig(vocab_size=vocab_size, **MODEL)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(out)


# A compact prompt: the synthetic corpus' tokenizer spells the Alpaca preamble out in ~100 tokens.
TEMPLATE = {"prompt_input": "Q: {instruction}\n{input}\nA:", "prompt_no_input": "Q: {instruction}\nA:"}


def make_data(out: str, records: int = 48, seed: int = 0) -> None:
    """Alpaca-format records (repeat / reverse a sentence of the synthetic corpus' words) in
    ``out`` and their prompt template in ``out``.template.json."""
    with open(out + ".template.json", "w", encoding="utf-8") as handle:
        json.dump(TEMPLATE, handle)

    rng = random.Random(seed)
    with open(out, "w", encoding="utf-8") as handle:
        for index in range(records):
            words = [rng.choice(ENGLISH) for _ in range(rng.randint(3, 12))]
            task, output = (("Repeat the text.", words) if index % 2 else ("Reverse the words.", words[::-1]))
            record = {"instruction": task, "input": " ".join(words), "output": " ".join(output)}
            handle.write(json.dumps(record) + "\n")


def prepare(out: str, tokenizer_model: str) -> None:
    """``out``/hf_in (the tiny LLaMA, the SentencePiece model's vocabulary) and
    ``out``/instructions.jsonl (+ .template.json)."""
    import sentencepiece  # optional: examples/gpu_check.sh skips the round trip without it

    os.makedirs(out, exist_ok=True)
    vocab = sentencepiece.SentencePieceProcessor(model_file=tokenizer_model).get_piece_size()
    make_model(os.path.join(out, "hf_in"), vocab)
    make_data(os.path.join(out, "instructions.jsonl"))


def _our_logits(load: str, tokens, bf16: bool):
    """[b, s, padded vocab] fp32 logits of the checkpoint, built with the layers it trained with."""
    import torch
    from megatron.core import tensor_parallel

    from megatron_prealign.generation import model_loading

    loaded = model_loading.load_model(load, 1, 1, seq_length=tokens.shape[1], bf16=bf16)

    def factory(batch):
        def loss_func(logits):
            full = tensor_parallel.gather_from_tensor_model_parallel_region(logits.float())
            return full.sum() * 0, torch.ones((), dtype=torch.int, device=full.device), {"logits": full}
        return loss_func

    n, s = tokens.shape
    batch = {"tokens": tokens, "position_ids": torch.arange(s).expand(n, s).contiguous()}
    outputs = model_loading._run(loaded, [model_loading._to_device(batch)], factory)
    return outputs[0]["logits"].float().cpu(), loaded.model_args.transformer_impl


def compare(load: str, hf_dir: str, bf16: bool, original_dir: Optional[str] = None, sequences: int = 2,
            length: int = 64, seed: int = 0) -> dict:
    """``original_dir``: the model before fine-tuning; its logits must differ from the exported
    model's by more than the tolerance (the round trip carries the fine-tuned weights)."""
    import torch
    import transformers

    exported = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    vocab = exported.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (sequences, length), generator=generator)
    with torch.no_grad():
        theirs = exported(tokens).logits.float()
    ours, impl = _our_logits(load, tokens, bf16)
    ours = ours[..., :vocab]
    scale = 1.0 + theirs.abs().max().item()
    difference = (ours - theirs).abs().max().item()
    precision = "bfloat16" if bf16 else "float32"
    relative = difference / scale
    ok = math.isfinite(relative) and relative <= TOLERANCE[precision]
    changed = None
    if original_dir:
        original = transformers.AutoModelForCausalLM.from_pretrained(original_dir, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            changed = (original(tokens).logits.float() - theirs).abs().max().item() / scale
        ok = ok and changed > TOLERANCE[precision]
    return {"ok": ok, "changed_by_finetuning": changed,
            "max_abs_difference": difference, "relative_difference": relative,
            "tolerance": TOLERANCE[precision], "precision": precision, "transformer_impl": impl,
            "exported_class": type(exported).__name__, "tokens": list(tokens.shape)}
