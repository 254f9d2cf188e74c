"""Run a function on N real gloo ranks (fresh processes) and collect what each returns.

Each rank gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), so the
code under test initialises through `megatron_prealign.runtime.initialize` exactly as under
torchrun. A failing rank's traceback is raised in the test process; a hung rank fails the test
after `timeout` seconds instead of hanging the suite.

Ranks are forked from multiprocessing's fork server, which imports torch and megatron-core once
(`PRELOAD`) and runs nothing else: every rank starts as clean as a spawned interpreter but
without its ~6 s of imports. Like spawn, a rank gets the test process's sys.path and working
directory, and (passed explicitly) its environment at launch time. A rank's stdout and stderr go
to files that the test process prints once the ranks have ended (a forked rank would otherwise
write to the fork server's streams, out of reach of pytest's capture of this test).
"""

import multiprocessing
import os
import socket
import sys
import tempfile
import traceback

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PRELOAD = ["torch", "megatron.core", "megatron_prealign.model", "megatron_prealign.training.loop"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def _rank_main(fn, rank, world_size, port, out_dir, args, kwargs, environ):
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        handle = os.open(os.path.join(out_dir, f"rank{rank}.{stream}"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    os.environ.clear()
    os.environ.update(environ)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    try:
        result = fn(*args, **kwargs)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    except BaseException:
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        from megatron_prealign import runtime

        runtime.shutdown()


def run_distributed(fn, world_size: int, *args, timeout: float = 300, **kwargs) -> list:
    """Call `fn(*args, **kwargs)` on `world_size` gloo ranks; return the per-rank results."""
    port = free_port()
    with tempfile.TemporaryDirectory() as out_dir:
        procs = [
            _CONTEXT.Process(
                target=_rank_main,
                args=(fn, rank, world_size, port, out_dir, args, kwargs, dict(os.environ)),
            )
            for rank in range(world_size)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
        for rank, p in enumerate(procs):
            p.join()
            for stream in ("stdout", "stderr"):
                path = os.path.join(out_dir, f"rank{rank}.{stream}")
                if os.path.exists(path):
                    with open(path, encoding="utf-8", errors="replace") as handle:
                        getattr(sys, stream).write(handle.read())
                    getattr(sys, stream).flush()
        errors = []
        for rank in range(world_size):
            err = os.path.join(out_dir, f"rank{rank}.err")
            if os.path.exists(err):
                errors.append(f"--- rank {rank} ---\n" + open(err).read())
        if errors:
            raise RuntimeError("distributed run failed:\n" + "\n".join(errors))
        if hung:
            raise TimeoutError(f"ranks {hung} still running after {timeout}s")
        bad = [rank for rank, p in enumerate(procs) if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"ranks {bad} exited with codes {[procs[r].exitcode for r in bad]}")
        return [
            torch.load(os.path.join(out_dir, f"rank{rank}.pt"), weights_only=True)
            for rank in range(world_size)
        ]
