#!/usr/bin/env python
"""Start-up of every command-line entry point: ``--help`` wall and CPU time, and heavy imports.

Each entry point (``tools/*.py`` and the ``python -m`` modules without a wrapper) runs ``--help``
in a fresh interpreter --repeats times; reported per tool: best wall time, best CPU time (user +
system of the child), and which of torch / megatron-core / transformers ``-X importtime`` saw
imported (should be none: arguments are parsed before them). Value: the slowest tool's best wall
time. Target: < 1 s on an idle 2-core machine. Last line printed: JSON (metric, value, target,
details). tests/test_startup.py runs :func:`heavy_imports` on every entry point.

    .venv/bin/python bench/startup.py [--repeats 3] [--only preprocess_data]
"""

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "megatron", "transformers")
# Entry points without a tools/ wrapper (console scripts or documented `python -m`).
MODULES = (
    "megatron_prealign.pretrain",
    "megatron_prealign.demo",
    "megatron_prealign.cli.launch_plan",
    "megatron_prealign.cli.gpu_check",
    "megatron_prealign.cli.hf_round_trip",
)


def entry_points():
    """{name: argv after the interpreter} for every entry point."""
    points = {os.path.relpath(path, ROOT): [path]
              for path in sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")))}
    points.update({f"-m {module}": ["-m", module] for module in MODULES})
    return points


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def heavy_imports(argv, extra=("--help",)):
    """(exit code, sorted heavy top-level packages imported) for one run under -X importtime."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv, *extra], cwd=ROOT,
                          env=_env(), capture_output=True, text=True)
    seen = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name.split(".")[0] in HEAVY:
                seen.add(name.split(".")[0])
    return proc.returncode, sorted(seen)


def time_help(argv, repeats):
    """(best wall seconds, best child CPU seconds) of ``--help`` over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, env=_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return min(walls), min(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="substrings of entry point names")
    args = parser.parse_args(argv)
    details = {}
    for name, point in entry_points().items():
        if args.only and not any(s in name for s in args.only):
            continue
        wall, cpu = time_help(point, args.repeats)
        _, heavy = heavy_imports(point)
        details[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "heavy_imports": heavy}
        print(f"{name:45s} wall {wall:6.3f} s  cpu {cpu:6.3f} s  heavy: {', '.join(heavy) or '-'}",
              flush=True)
    value = max(d["wall_s"] for d in details.values())
    print(json.dumps({"metric": "help_wall_seconds_slowest_tool_best_of_n", "value": value,
                      "target": 1.0, "repeats": args.repeats, "os_load_1min": os.getloadavg()[0],
                      "details": details}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
