"""The figures and verdict of `examples/gpu_check.sh`: per layout, exact resume (the resumed run
logs the losses of the uninterrupted one), a finite evaluation, throughput in tokens/s, achieved
TFLOP/s and MFU from the launch plan's FLOP formula (`launch_plan.flops_per_step`), and the peak
GPU memory `nvidia-smi` sampled, the Hugging Face round trip's comparison
(`megatron_prealign.hf_round_trip`); one JSON line last. Exit status 1 when a check fails.

Per layout, ``tokens_per_sec`` / ``tflops`` / ``mfu`` are the pretraining steps' (pre-alignment
off) and ``with_prealignment`` the same for the pre-alignment steps (LM FLOPs only).

    python -m megatron_prealign.cli.gpu_check --layout NAME STRAIGHT_DIR RESUMED_DIR EVAL_JSON GPUS \\
        [--layout ...] --resume-iteration K [--memory-samples FILE] [--gpu-name NAME] \\
        [--hf-round-trip COMPARE_JSON] [--skipped NAME WHY ...] -- PRETRAIN_FLAGS
"""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import List, Optional

# Dense bf16 peak TFLOP/s (NVIDIA data sheets), by a substring of nvidia-smi's upper-cased name;
# the first match wins, so the PCIe / NVL parts come before their SXM defaults.
PEAK_BF16_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIE", 756.0),
                    ("H100", 989.0), ("A100", 312.0))


def peak_tflops(gpu_name: Optional[str]) -> Optional[float]:
    for key, peak in PEAK_BF16_TFLOPS:
        if gpu_name and key in gpu_name.upper():
            return peak
    return None


def read_log(directory: str) -> List[dict]:
    path = os.path.join(directory, "log.jsonl")
    with open(path) as handle:
        return [json.loads(line) for line in handle if '"stage"' in line]


def resume_mismatches(straight: List[dict], resumed: List[dict], after: int, rtol: float) -> List[str]:
    """Iterations after `after` whose losses differ between the two logs."""
    expected = {r["iteration"]: r for r in straight}
    problems = []
    got = [r for r in resumed if r["iteration"] > after]
    if not got:
        problems.append(f"the resumed run logged no iteration after {after}")
    for record in got:
        reference = expected.get(record["iteration"])
        if reference is None:
            problems.append(f"iteration {record['iteration']} is missing from the uninterrupted run")
            continue
        for key in ("lm_loss", "alignment_loss"):
            a, b = reference.get(key), record.get(key)
            if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)):
                problems.append(f"iteration {record['iteration']} {key}: uninterrupted {a} vs resumed {b}")
    return problems


def throughput(records: List[dict], flops_per_token: float, gpus: int, peak: Optional[float],
               stage: str = "pretrain") -> dict:
    """Median over the log records of `stage`, the first one (warm-up, compilation) left out.
    For "prealign" the FLOPs are the LM tokens' only: the alignment pass's cost shows as a
    lower MFU than pretraining's."""
    pretraining = [r for r in records if r["stage"] == stage and r.get("tokens_per_sec")]
    samples = pretraining[1:] or pretraining
    if not samples:
        return {"tokens_per_sec": None, "tflops": None, "mfu": None}
    tokens_per_sec = statistics.median(r["tokens_per_sec"] for r in samples)
    tflops = tokens_per_sec * flops_per_token / 1e12
    return {"tokens_per_sec": tokens_per_sec, "tflops": tflops,
            "tflops_per_gpu": tflops / gpus, "mfu": tflops / (gpus * peak) if peak else None}


def flops_per_token(pretrain_flags: List[str]) -> float:
    from megatron_prealign import launch_plan
    from megatron_prealign.training import arguments

    config = arguments.parse_config(pretrain_flags)
    vocab, _ = launch_plan.resolve_vocab(config, 50257)
    model = arguments.model_args(config, vocab)
    tokens = config.schedule.global_batch_size * config.model.seq_length
    return launch_plan.flops_per_step(model, tokens) / tokens


def peak_memory_mib(path: Optional[str]) -> Optional[float]:
    """Largest per-GPU memory.used sample (MiB) of `nvidia-smi --query-gpu=memory.used`."""
    if not path or not os.path.exists(path):
        return None
    values = []
    with open(path) as handle:
        for line in handle:
            try:
                values.append(float(line.strip().split(",")[-1]))
            except ValueError:
                continue
    return max(values) if values else None


def summarize(layouts_given, resume_iteration: int, pretrain_flags: List[str], resume_rtol: float = 0.0,
              memory_samples: Optional[str] = None, gpu_name: Optional[str] = None, short_run=(),
              skipped=(), hf_round_trip: Optional[str] = None) -> dict:
    """The verdict (module docstring) from the runs' outputs: ``layouts_given`` holds
    (name, straight dir, resumed dir, evaluation JSON, GPUs) per layout, ``short_run``
    (name, log dir), ``skipped`` (name, why); ``ok`` and ``failures`` say whether a check failed."""
    per_token = flops_per_token(pretrain_flags)
    peak = peak_tflops(gpu_name)
    layouts, failures = {}, []
    for name, straight_dir, resumed_dir, eval_json, gpus in layouts_given:
        entry = {"gpus": int(gpus)}
        try:
            straight, resumed = read_log(straight_dir), read_log(resumed_dir)
            problems = resume_mismatches(straight, resumed, resume_iteration, resume_rtol)
            entry["exact_resume"] = not problems
            failures += [f"{name}: {p}" for p in problems]
            entry.update(throughput(straight, per_token, int(gpus), peak))
            entry["with_prealignment"] = throughput(straight, per_token, int(gpus), peak, stage="prealign")
            with open(eval_json) as handle:
                evaluation = json.load(handle)
            perplexities = [s.get("perplexity") for s in evaluation.get("sources", {}).values()] \
                if isinstance(evaluation.get("sources"), dict) else []
            entry["evaluation"] = evaluation.get("sources", evaluation)
            if not perplexities or not all(isinstance(p, (int, float)) and math.isfinite(p) for p in perplexities):
                failures.append(f"{name}: evaluation gave no finite perplexity ({eval_json})")
        except (OSError, ValueError, KeyError) as error:
            failures.append(f"{name}: {type(error).__name__}: {error}")
        layouts[name] = entry
    short_runs = {}
    for name, log_dir in short_run:
        try:
            records = read_log(log_dir)
        except (OSError, ValueError):
            records = []
        losses = [r.get(key) for r in records for key in ("lm_loss", "alignment_loss") if r.get(key) is not None]
        ok = bool(records) and any(r["stage"] == "prealign" for r in records) and all(map(math.isfinite, losses))
        short_runs[name] = {"ok": ok, "steps": len(records), "losses": losses[-4:]}
        if not ok:
            failures.append(f"{name}: no finite pre-alignment losses logged ({log_dir})")
    round_trip = None
    if hf_round_trip:
        try:
            with open(hf_round_trip) as handle:
                round_trip = json.load(handle)
        except (OSError, ValueError) as error:
            round_trip = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        if not round_trip.get("ok"):
            failures.append(f"hf_round_trip: {round_trip.get('error') or round_trip} "
                            f"(logs beside {hf_round_trip})")
    first = next(iter(layouts.values()))
    return {
        "metric": "gpu_check_mfu", "value": first.get("mfu"), "target": None,
        "ok": not failures, "failures": failures, "gpu": gpu_name, "peak_bf16_tflops": peak,
        "flops_per_token": per_token, "peak_memory_mib": peak_memory_mib(memory_samples),
        "layouts": layouts, "short_runs": short_runs, "hf_round_trip": round_trip, "skipped": dict(skipped),
    }
