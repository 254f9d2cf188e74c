"""Training logs: Megatron-style console lines, TensorBoard scalars and `--log-json` lines.

Every rank computes the same (all-reduced) record; only the last rank writes, as in Megatron-LM.
"""

import json
import math
import os
import time
from typing import Optional

import torch.distributed as dist

from megatron_prealign.data.atomic import atomic_text_writer


def _truncate_log(path: str, start_iteration: int):
    """Keep only the records up to the iteration this run starts from, so that a resumed run's
    log is one consistent run (the iterations after the checkpoint are replayed)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    kept = []
    for line in lines:
        try:
            iteration = json.loads(line).get("iteration", 0)
        except ValueError:  # a line cut by a kill
            continue
        if isinstance(iteration, int) and iteration <= start_iteration:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        with atomic_text_writer(path) as handle:
            handle.writelines(kept)


class TrainingLogger:
    def __init__(self, tensorboard_dir: Optional[str], log_json: Optional[str], start_iteration: int = 0):
        self.writes = dist.get_rank() == dist.get_world_size() - 1
        self.start = time.time()
        self.tensorboard = None
        self.json_file = None
        if not self.writes:
            return
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=tensorboard_dir)
        if log_json:
            os.makedirs(os.path.dirname(os.path.abspath(log_json)), exist_ok=True)
            _truncate_log(log_json, start_iteration)
            self.json_file = open(log_json, "a", encoding="utf-8")

    def elapsed(self) -> float:
        return time.time() - self.start

    def log(self, record: dict):
        if not self.writes:
            return
        parts = [f"iteration {record['iteration']:8d}/{record['total_iters']:8d}", f"stage {record['stage']}"]
        for key, fmt in (("lm_loss", ".6E"), ("alignment_loss", ".6E"), ("lr", ".3E"),
                         ("grad_norm", ".3f"), ("tokens_per_sec", ".1f")):
            value = record.get(key)
            if value is not None:
                parts.append(f"{key.replace('_', ' ')}: {value:{fmt}}")
        print(" | ".join(parts), flush=True)
        if self.tensorboard is not None:
            step = record["iteration"]
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "iteration":
                    self.tensorboard.add_scalar(f"train/{key}", value, step)
            for name in ("alignment_similarity", "random_similarity"):
                for layer, value in enumerate(record.get(name) or []):
                    if value is not None:
                        self.tensorboard.add_scalar(f"{name}/layer_{layer:02d}", value, step)
            self.tensorboard.flush()
        if self.json_file is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
            self.json_file.write(json.dumps(clean) + "\n")
            self.json_file.flush()

    def log_validation(self, iteration: int, losses: dict):
        if not self.writes:
            return
        text = " | ".join(f"{name}: lm loss {loss:.6E}" for name, loss in losses.items())
        print(f"validation at iteration {iteration} | {text}", flush=True)
        if self.tensorboard is not None:
            for name, loss in losses.items():
                self.tensorboard.add_scalar(f"validation/{name}", loss, iteration)
        if self.json_file is not None:
            self.json_file.write(json.dumps({"iteration": iteration, "validation_lm_loss": losses}) + "\n")
            self.json_file.flush()

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.json_file is not None:
            self.json_file.close()
