"""Generation speed with megatron-core's KV cache: tokens/s of 128 new tokens after a 256-token
prompt with the cache (prefill once, then one token per step) over the recompute-everything loop
(the whole prefix through the model for every new token), same model, same greedy output (checked),
one process on the CPU (or the GPU when there is one). Default model: llama family, 6 layers x 512
hidden (~19M non-embedding parameters; the paper's smallest model has 150M). The cache removes
the per-token compute over the prefix, so the ratio grows with the model; on toy models the fixed
Python cost of one forward pass through megatron-core dominates both loops.

    .venv/bin/python bench/generate.py [--repeats 3] [--hidden-size 512] [--num-layers 6]

The last line is JSON: {"metric", "value", "target"}.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind (fastest)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-layers", type=int, default=6)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--num-attention-heads", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--family", default="llama", choices=["gpt2", "llama"])
    options = parser.parse_args()
    torch.set_num_threads(1)
    for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=os.environ.get("MASTER_PORT", "29531")).items():
        os.environ.setdefault(key, value)

    from megatron_prealign import runtime
    from megatron_prealign.generation.model_loading import LoadedModel
    from megatron_prealign.generation import generate
    from megatron_prealign.model import ModelArgs, build_model

    runtime.initialize(1, 1, seed=1)
    seq = options.prompt_tokens + options.new_tokens
    args = ModelArgs(vocab_size=options.vocab_size, seq_length=seq, family=options.family,
                     num_layers=options.num_layers, hidden_size=options.hidden_size,
                     num_attention_heads=options.num_attention_heads, hidden_dropout=0.0,
                     attention_dropout=0.0)
    chunks = build_model(args, wrap_with_ddp=False)
    for chunk in chunks:
        chunk.eval()
    model = LoadedModel(chunks, args, {}, "")
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, options.vocab_size, (options.prompt_tokens,), generator=generator).tolist()
               for _ in range(options.batch_size)]

    def run(use_cache):
        start = time.perf_counter()
        out = generate(model, prompts, options.new_tokens, batch_size=options.batch_size, use_cache=use_cache)
        elapsed = time.perf_counter() - start
        assert all(len(g.tokens) == options.new_tokens for g in out)
        return elapsed, [g.tokens for g in out]

    run(True)  # warm-up
    cached, recomputed = [], []
    for _ in range(options.repeats):  # interleaved, so load changes hit both alike
        time_cached, tokens_cached = run(True)
        time_recomputed, tokens_recomputed = run(False)
        cached.append(time_cached)
        recomputed.append(time_recomputed)
    same = tokens_cached == tokens_recomputed
    tokens = options.batch_size * options.new_tokens
    fast, slow = min(cached), min(recomputed)
    print(f"{options.family} {options.num_layers} layers x {options.hidden_size}, {options.prompt_tokens}-token "
          f"prompt(s) x {options.batch_size}, {options.new_tokens} new tokens, device {runtime.device()}")
    print(f"KV cache: {tokens / fast:.1f} tokens/s; recompute everything: {tokens / slow:.1f} tokens/s "
          f"(fastest of {options.repeats}); same greedy tokens: {same}")
    print(json.dumps({"metric": "generation_tokens_per_s_cached_over_recompute", "value": round(slow / fast, 3),
                      "target": 5.0}))
    runtime.shutdown()
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
