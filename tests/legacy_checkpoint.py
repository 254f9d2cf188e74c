"""Checkpoints written by megatron-prealign 0.1.0 on megatron-core 0.16.1 (Python 3.11), kept in
tests/data/mcore016_checkpoint/ so that the suite shows they resume exactly on the current stack.

Made once with the old release (commit fe51a77, megatron-core 0.16.1):

    python -m tests.legacy_checkpoint tests/data/mcore016_checkpoint

which, for the plain and the distributed optimizer at DP=2, trains 2 steps of a tiny model with
dropout on (so that the RNG state matters), saves, trains 2 more and records those 2 losses and
the learning rate in expected.json. The test loads each checkpoint on the current stack and
takes the same 2 steps.
"""

import json
import os
import sys

VARIANTS = {"adam": False, "distopt": True}


def _scheduler(optimizer):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=1e-2, min_lr=1e-3, lr_warmup_steps=2, lr_decay_steps=10,
        lr_decay_style="cosine", start_wd=0.0, end_wd=0.0, wd_incr_steps=10, wd_incr_style="constant",
    )


def run(root: str, load: bool, use_distributed_optimizer: bool) -> dict:
    """Rank body: save after 2 steps (load=False) or load, then 2 more steps."""
    from megatron_prealign import runtime
    from megatron_prealign.training import checkpointing
    from tests import parallel_lm

    runtime.initialize(1, 1, seed=5)
    args = parallel_lm.tiny_args(num_layers=2, hidden_dropout=0.1, attention_dropout=0.1)
    chunks, optimizer = parallel_lm.make_model_and_optimizer(args, use_distributed_optimizer)
    scheduler = _scheduler(optimizer)
    steps_before = 0 if load else 2
    if load:
        checkpointing.load_checkpoint(root, chunks, optimizer, scheduler)
    for _ in range(steps_before):
        parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch())
        scheduler.step(1)
    if steps_before:
        checkpointing.save_checkpoint(root, steps_before, chunks, optimizer, scheduler)
    losses = []
    for _ in range(2):
        losses.append(parallel_lm.train_step(chunks, optimizer, parallel_lm.global_batch())[0])
        scheduler.step(1)
    return {"losses": losses, "lr": optimizer.param_groups[0]["lr"]}


def main(out: str):
    from megatron.core import package_info

    from tests.dist_utils import run_distributed

    expected = {"megatron_core": package_info.__version__, "python": sys.version.split()[0]}
    for name, distributed in VARIANTS.items():
        results = run_distributed(run, 2, os.path.join(out, name), False, distributed)
        expected[name] = [{"losses": [float(x) for x in r["losses"]], "lr": float(r["lr"])} for r in results]
    with open(os.path.join(out, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
