"""One run per --save directory: a lock file naming the host and pid of the run that writes it.

Two runs writing the same --save (e.g. two processes started without a launcher, each a world
of one) would delete each other's checkpoints and race on the `latest` pointer. The lock is
taken by global rank 0 before anything is loaded or saved and removed when the run ends. A lock
left by a run that died is recognised as stale: same host and its pid no longer runs, or the
same SLURM job (a requeued job cannot still be running) — and replaced, with a note.
"""

import json
import os
import socket
import time
from typing import Optional

from megatron_prealign.errors import ConfigError

LOCK_NAME = ".prealign-save.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _holder(path: str) -> Optional[dict]:
    try:
        with open(path) as handle:
            holder = json.load(handle)
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None  # unreadable: a lock killed while being written


def _stale(holder: Optional[dict]) -> bool:
    if holder is None:
        return True
    if holder.get("host") == socket.gethostname():
        return holder.get("pid") == os.getpid() or not _pid_alive(int(holder.get("pid", 0)))
    job = os.environ.get("SLURM_JOB_ID")
    return bool(job) and holder.get("slurm_job_id") == job


class SaveLock:
    def __init__(self, save: str):
        self.path = os.path.join(save, LOCK_NAME)
        self.held = False

    def acquire(self, announce=print):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        for _ in range(3):
            # The lock appears complete or not at all: written under a private name, then linked
            # into place (link fails if a lock exists), so no reader ever sees a half-written one.
            private = f"{self.path}.{me['host']}.{me['pid']}"
            with open(private, "w") as handle:
                json.dump(me, handle)
            try:
                os.link(private, self.path)
            except FileExistsError:
                holder = _holder(self.path)
                if not _stale(holder):
                    raise ConfigError(
                        f"--save {os.path.dirname(self.path)} is in use by another run (host "
                        f"{holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}; "
                        f"lock {self.path}). Two runs must not write one --save: wait for it, use another "
                        "directory, or delete the lock file if that run is gone. (Several processes "
                        "started without torchrun or srun each train alone: launch with torchrun.)")
                if announce:
                    announce(f"note: removing the stale lock {self.path} of a run that is gone ({holder})", flush=True)
                self._remove_if_still(holder, private + ".stale")
                continue
            finally:
                os.remove(private)
            self.held = True
            return
        raise ConfigError(f"cannot take the lock {self.path}: it keeps reappearing (another run starting?)")

    def _remove_if_still(self, holder: Optional[dict], grave: str):
        """Remove the lock only if it is still the stale one we read: two runs replacing the same
        stale lock must not delete each other's new one."""
        try:
            os.rename(self.path, grave)  # atomic: whatever lock was there is now ours to inspect
        except FileNotFoundError:
            return
        if _holder(grave) != holder:  # replaced since we looked: put the live lock back
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        os.remove(grave)

    def release(self):
        if self.held:
            holder = _holder(self.path)
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                os.remove(self.path)
            self.held = False
