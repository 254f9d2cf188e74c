"""Device check mode: make a CPU run fail where a CUDA run would put a tensor on the wrong device.

On the CPU every tensor is on `runtime.device()`, so a scalar made with `torch.tensor([x])` for
an NCCL all-reduce, or a batch handed to the model without moving it, goes unnoticed until the
first GPU run. Under this mode such tensors are *host* tensors and using one fails:

* a host tensor is one made by a factory call without a ``device=`` (``torch.tensor``,
  ``torch.zeros``, ``torch.as_tensor``, ``torch.from_numpy``, ...), one returned by
  ``.cpu()``, one handed out by a torch ``DataLoader``, and the result of an operation whose
  tensor inputs are all host tensors (an in-place operation keeps its target's kind);
* ``.to(device)`` / ``.cuda()`` and factories given a ``device=`` make device tensors (on the CPU
  ``runtime.device()`` is the CPU, so an explicit ``device=runtime.device()`` is what the code
  has to say; autograd's own results are device tensors);
* every ``torch.distributed`` collective and point-to-point call, and the forward of every
  megatron-core ``GPTModel`` (the model chunks), raise :class:`DeviceCheckError` for a host tensor or for a
  tensor on another device than ``runtime.device()`` (that part checks on CUDA too).

Switched on by ``PREALIGN_DEVICE_CHECK=1`` (``runtime.initialize`` enters it for the whole run)
or ``with device_check.enabled():`` in a test. The bookkeeping is a ``TorchFunctionMode``: slow,
for tests only. megatron-core's own calls are checked as well (it allocates with explicit
devices); its module-level aliases of two collectives (``dist_all_gather_func``) are not.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

ENV = "PREALIGN_DEVICE_CHECK"
_HOST = "_prealign_host_tensor"

# torch.distributed calls whose tensor arguments must live on the device (isend / irecv stay
# unwrapped: P2POp accepts only the originals; batch_isend_irecv checks their tensors).
COLLECTIVES = (
    "all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor",
    "broadcast", "reduce", "all_to_all", "all_to_all_single", "gather", "scatter",
    "send", "recv", "batch_isend_irecv", "_all_gather_base", "_reduce_scatter_base",
)


class DeviceCheckError(RuntimeError):
    """A tensor that would not be on the accelerator reached a collective or the model."""


def requested() -> bool:
    return os.environ.get(ENV, "0") == "1"


def is_host(tensor: torch.Tensor) -> bool:
    return bool(getattr(tensor, _HOST, False))


def _mark(tensor: torch.Tensor, host: bool):
    try:
        setattr(tensor, _HOST, host)
    except (AttributeError, RuntimeError):  # e.g. tensors of C++ subclasses without a __dict__
        pass


def _tensors(tree):
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _device_given(value) -> bool:
    return isinstance(value, (str, torch.device, int)) and not isinstance(value, bool)


class _HostTracking(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        outputs = _tensors(result)
        if not outputs:
            return result
        host = self._result_is_host(func, args, kwargs)
        target = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if result is target and _is_conversion(func) and host != is_host(target):
            # `.to(device)` of a tensor already there returns the tensor itself; on a GPU the
            # host original and its device copy are two tensors: keep them two (an alias).
            result = outputs[0] = result.view_as(result)
        for output in outputs:
            if output is target and not _is_conversion(func):
                continue  # an in-place op: the target stays where it is
            _mark(output, host)
        return result

    @staticmethod
    def _result_is_host(func, args, kwargs):
        name = getattr(func, "__name__", "")
        if name == "cpu":
            return True
        if name == "cuda":
            return False
        if name == "to":
            rest = list(args[1:]) + [kwargs.get("device")]
            if any(_device_given(a) for a in rest):
                return False
            other = [a for a in rest if isinstance(a, torch.Tensor)]
            if other:
                return is_host(other[0])
        if kwargs.get("device") is not None:
            return False
        inputs = _tensors((args, kwargs))
        if not inputs:
            return True  # a factory without a device: host memory on a GPU run
        return all(is_host(t) for t in inputs)


def _is_conversion(func) -> bool:
    return getattr(func, "__name__", "") in ("to", "cpu", "cuda")


def check(tensors, where: str):
    """Raise DeviceCheckError for a host tensor or one not on the run's device (given to enter())."""
    expected = _state["device"]
    for tensor in _tensors(tensors):
        if is_host(tensor):
            raise DeviceCheckError(
                f"{where}: a host tensor (shape {tuple(tensor.shape)}, {tensor.dtype}) made without "
                "device=runtime.device() or not moved with .to(runtime.device()); NCCL and the "
                "CUDA model need it on the device")
        if tensor.device != expected:
            raise DeviceCheckError(
                f"{where}: tensor of shape {tuple(tensor.shape)} is on {tensor.device}, not on "
                f"{expected}")


def _checked_collective(name, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        tensors = [(a.tensor if isinstance(a, dist.P2POp) else a) for a in tree_flatten((args, kwargs))[0]]
        check(tensors, f"torch.distributed.{name}")
        return function(*args, **kwargs)

    wrapper.__prealign_checked__ = function
    return wrapper


def _checked_loader_next(function):
    @functools.wraps(function)
    def wrapper(self):
        batch = function(self)
        for tensor in _tensors(batch):
            _mark(tensor, True)  # a DataLoader hands out host memory (pinned or not)
        return batch

    wrapper.__prealign_checked__ = function
    return wrapper


def _checked_forward(function):
    @functools.wraps(function)
    def wrapper(self, *args, **kwargs):
        check((args, kwargs), f"{type(self).__name__}.forward input")
        return function(self, *args, **kwargs)

    wrapper.__prealign_checked__ = function
    return wrapper


_state = {"depth": 0, "mode": None, "device": torch.device("cpu")}


def _install():
    for name in COLLECTIVES:
        function = getattr(dist, name, None)
        if function is not None and not hasattr(function, "__prealign_checked__"):
            setattr(dist, name, _checked_collective(name, function))
    iterator = torch.utils.data.dataloader._BaseDataLoaderIter
    if not hasattr(iterator.__next__, "__prealign_checked__"):
        iterator.__next__ = _checked_loader_next(iterator.__next__)
    from megatron.core.models.gpt import GPTModel  # the model chunks' inputs; megatron-core only while the check is on

    if not hasattr(GPTModel.forward, "__prealign_checked__"):
        GPTModel.forward = _checked_forward(GPTModel.forward)
    mode = _HostTracking()
    mode.__enter__()
    _state["mode"] = mode


def _uninstall():
    _state["mode"].__exit__(None, None, None)
    _state["mode"] = None
    for name in COLLECTIVES:
        function = getattr(dist, name, None)
        if function is not None and hasattr(function, "__prealign_checked__"):
            setattr(dist, name, function.__prealign_checked__)
    iterator = torch.utils.data.dataloader._BaseDataLoaderIter
    if hasattr(iterator.__next__, "__prealign_checked__"):
        iterator.__next__ = iterator.__next__.__prealign_checked__
    from megatron.core.models.gpt import GPTModel

    if hasattr(GPTModel.forward, "__prealign_checked__"):
        GPTModel.forward = GPTModel.forward.__prealign_checked__


def active() -> bool:
    return _state["depth"] > 0


def enter(device: torch.device = None):
    """Switch the check on (nested calls count); tensors must be on ``device`` (default: the
    current CUDA device when CUDA is available, else the CPU: what ``runtime.device()`` says)."""
    if _state["depth"] == 0:
        _state["device"] = device or (torch.device("cuda", torch.cuda.current_device())
                                      if torch.cuda.is_available() else torch.device("cpu"))
        _install()
    _state["depth"] += 1


def leave():
    if _state["depth"] == 0:
        return
    _state["depth"] -= 1
    if _state["depth"] == 0:
        _uninstall()


@contextlib.contextmanager
def enabled(device: torch.device = None):
    enter(device)
    try:
        yield
    finally:
        leave()
