"""Compatibility patches that let the real megatron-core run on the CPU with gloo.

megatron-core assumes a CUDA device in a handful of places (docs/architecture.md,
"The CPU compatibility layer"). Each patch below stands in for a named piece of megatron-core, is as
narrow as we could make it, and is applied by `megatron_prealign.runtime` only when no CUDA
device is in use. Nothing here changes numerics: on the CPU the "CUDA" RNG, buffers and
scalars simply live on the CPU.

Only import this module through `runtime.py`; no other module may special-case the CPU.
"""

import contextlib
import functools
import importlib
import threading
import types

import torch

# Versions of megatron-core these patches were written and tested against. Anything else fails
# loudly: a patch silently missing its target would turn into a CUDA error deep in a run.
SUPPORTED_MEGATRON_CORE = ("0.19.0", "0.19.1", "0.19.2")

CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------
# 1. Device lookups: `torch.cuda.current_device()`, `device="cuda"`, `torch.cuda.synchronize()`.
#
# The modules below allocate scalars and buffers on the current CUDA device and synchronise
# streams. We give each of them a view of `torch` in which the current device is the CPU and
# synchronisation is a no-op. Only these modules see it; torch itself is untouched.
# --------------------------------------------------------------------------------------------

# module -> the megatron-core code in it that needs a CPU device
CUDA_DEVICE_SITES = {
    "megatron.core.utils": "GlobalMemoryBuffer.get_tensor (local attention's matmul buffer)",
    "megatron.core.transformer.utils": "get_default_causal_mask (causal mask on 'cuda')",
    "megatron.core.pipeline_parallel.p2p_communication": "_communicate_shapes, _communicate "
    "(receive buffers on current_device, torch.cuda.synchronize)",
    "megatron.core.pipeline_parallel.schedules": "forward_backward_* (total_num_tokens on 'cuda')",
    "megatron.core.optimizer.clip_grads": "get_grad_norm_fp32, clip_grad_by_total_norm_fp32, "
    "count_zeros_fp32 (norm buffers on 'cuda')",
    "megatron.core.optimizer.optimizer": "MixedPrecisionOptimizer / FP32Optimizer "
    "(found_inf, _scale_one, get_loss_scale on 'cuda')",
    "megatron.core.optimizer.distrib_optimizer": "DistributedOptimizer (gather buffers on "
    "current_device)",
    "megatron.core.optimizer.grad_scaler": "ConstantGradScaler / DynamicGradScaler (the fp16 loss "
    "scale and its bounds on 'cuda')",
    "megatron.core.distributed.param_and_grad_buffer": "_ParamAndGradBuffer (grad buffers on "
    "current_device); start_grad_sync (current_stream waits for CUDA-graph gradient events)",
    "megatron.core.tensor_parallel.layers": "weight allocation on current_device when "
    "use_cpu_initialization is off",
    "megatron.core.tensor_parallel.mappings": "_gather_along_first_dim, "
    "_reduce_scatter_along_first_dim (sequence parallel buffers on current_device)",
    "megatron.core.models.common.embeddings.rotary_pos_embedding": "RotaryEmbedding.__init__ "
    "(inv_freq on current_device)",
    "megatron.core.dist_checkpointing.strategies.state_dict_saver": "save_state_dict_async_plan "
    "(verification flags on 'cuda')",
    "megatron.core.dist_checkpointing.strategies.async_utils": "AsyncCallsQueue (liveness flags)",
    "megatron.core.dist_checkpointing.strategies.filesystem_async": "FileSystemWriterAsync "
    "(torch.cuda.synchronize before staging)",
    "megatron.core.dist_checkpointing.exchange_utils": "exchange of loaded shards (buffers on "
    "'cuda')",
    "megatron.core.dist_checkpointing.strategies.fully_parallel": "FullyParallelLoadStrategy "
    "(torch.cuda.synchronize)",
    "megatron.core.transformer.attention": "Attention._allocate_memory (the static inference "
    "context's KV cache on current_device; generation with a KV cache)",
}


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":")[0] == "cuda"
    return isinstance(device, int)  # a bare ordinal means a CUDA device to torch factories


def _on_cpu(factory):
    @functools.wraps(factory)
    def wrapper(*args, **kwargs):
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = CPU
        return factory(*args, **kwargs)

    return wrapper


class _CpuStream:
    """The CPU's one implicit stream: every wait is already satisfied."""

    def wait_event(self, event):
        return None

    def wait_stream(self, stream):
        return None

    def synchronize(self):
        return None


class _CpuCuda(types.SimpleNamespace):
    """`torch.cuda` as seen by a patched module: the current device is the CPU."""

    def __getattr__(self, name):
        return getattr(torch.cuda, name)

    @staticmethod
    def current_device():
        return CPU

    @staticmethod
    def synchronize(device=None):
        return None

    @staticmethod
    def current_stream(device=None):
        return _CpuStream()

    default_stream = current_stream


def _cpu_torch_view() -> types.ModuleType:
    view = types.ModuleType("torch", doc="torch as seen by megatron-core on the CPU")
    view.__dict__.update(torch.__dict__)
    # Fall back to torch for attributes torch adds lazily after this copy.
    view.__getattr__ = lambda name: getattr(torch, name)
    view.cuda = _CpuCuda()
    for name in ("empty", "zeros", "ones", "full", "tensor", "empty_like", "zeros_like", "arange"):
        setattr(view, name, _on_cpu(getattr(torch, name)))
    return view


def patch_cuda_device_sites():
    view = _cpu_torch_view()
    for module_name in CUDA_DEVICE_SITES:
        module = importlib.import_module(module_name)
        if not (module.torch is torch or getattr(module.torch, "__name__", "") == "torch"):
            # an explicit check (an assert would vanish under python -O)
            raise RuntimeError(f"{module_name}.torch is {module.torch!r}, not torch: megatron-core changed "
                               "how it imports torch; re-check this CPU patch")
        module.torch = view


# --------------------------------------------------------------------------------------------
# 2. RNG: `megatron.core.tensor_parallel.random.CudaRNGStatesTracker` and the activation
# recompute helpers keep per-purpose CUDA generator states (dropout must differ across TP ranks
# but match across DP ranks). On the CPU the only generator is torch's default CPU generator,
# so the tracked states are CPU generator states swapped in and out of it.
# --------------------------------------------------------------------------------------------


def _get_cpu_rng_state(device=None, clone=False, graph_safe=False):
    return torch.get_rng_state()


def _set_cpu_rng_state(new_state, device=-1, graph_safe=False):
    torch.set_rng_state(new_state)


def _tracker_add(self, name, seed):
    """Stands in for CudaRNGStatesTracker.add (torch.cuda.get_rng_state / manual_seed)."""
    self._is_initialized = True
    if seed in self.seeds_:
        raise Exception(f"seed {seed} already exists")
    self.seeds_.add(seed)
    if name in self.states_:
        raise Exception(f"rng state {name} already exists")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    self.states_[name] = generator.get_state()


@contextlib.contextmanager
def _tracker_fork(self, name="model-parallel-rng"):
    """Stands in for CudaRNGStatesTracker.fork. Same as upstream minus its check that the CPU
    state is unchanged inside the fork: on the CPU the forked state *is* the CPU state."""
    if name not in self.states_:
        raise Exception(f"rng state {name} is not added")
    outer_state = torch.get_rng_state()
    outer_name = self._current_state_name
    if outer_name != "default-rng":
        self.states_[outer_name] = outer_state
    torch.set_rng_state(self.states_[name])
    self._current_state_name = name
    try:
        yield
    finally:
        self.states_[name] = torch.get_rng_state()
        if outer_name != "default-rng":
            outer_state = self.states_[outer_name]
        torch.set_rng_state(outer_state)
        self._current_state_name = outer_name


def patch_rng_tracker():
    random = importlib.import_module("megatron.core.tensor_parallel.random")
    random._get_cuda_rng_state = _get_cpu_rng_state
    random._set_cuda_rng_state = _set_cpu_rng_state
    random.CudaRNGStatesTracker.add = _tracker_add
    random.CudaRNGStatesTracker.fork = _tracker_fork
    # model_parallel_cuda_manual_seed also calls torch.cuda.manual_seed, which is lazy and
    # harmless without CUDA; the default CPU seed is set by runtime.initialize.


# --------------------------------------------------------------------------------------------
# 3. Tensor methods: megatron-core sorts parameters by `param.type()`, accepting only
# 'torch.cuda.{Float,Half,BFloat16}Tensor', and moves a few tensors with `.cuda()`. While the
# callables below run (on that thread only, see _TensorMethodSwap), CPU tensors report the CUDA
# name of their dtype and `.cuda()` leaves them on the CPU.
# --------------------------------------------------------------------------------------------

# (module, attribute) -> where the type names are compared
CUDA_TENSOR_METHOD_SITES = {
    ("megatron.core.optimizer.optimizer", "Float16OptimizerWithFloat16Params.__init__"): "fp16/bf16 "
    "params get fp32 main copies",
    ("megatron.core.optimizer.distrib_optimizer", "DistributedOptimizer.__init__"): "via "
    "_build_model_and_main_param_groups",
    ("megatron.core.optimizer.distrib_optimizer", "DistributedOptimizer.get_parameter_state_dp_zero"):
    "send_tensor.cuda() when gathering optimizer state for a reshardable checkpoint",
    ("megatron.core.optimizer.clip_grads", "clip_grad_by_total_norm_fp32"): "asserts fp32 CUDA grads",
    ("megatron.core.optimizer.grad_scaler", "DynamicGradScaler.load_state_dict"): "scale.cuda() "
    "when an fp16 run resumes",
    # optimizer.py imported the function by name; patch that reference too.
    ("megatron.core.optimizer.optimizer", "clip_grad_by_total_norm_fp32"): "as above",
    ("megatron.core.models.common.language_module.language_module",
     "LanguageModule.setup_embeddings_and_output_layer"): "tied embeddings under PP: "
    "weight.data.cuda() before the embedding-group all-reduce",
}

_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


_MISSING = object()


class _TensorMethodSwap:
    """``torch.Tensor.type`` and ``.cuda`` replaced only while a wrapped call runs.

    torch.Tensor is shared by the whole process, so the replacements are installed when the
    first wrapped call (on any thread) starts and the originals are put back, in a ``finally``,
    when the last one returns or raises. In between, the replacements act only on threads that
    are inside a wrapped call (a thread-local depth; nested calls count) and fall through to
    torch's own methods elsewhere. Install and restore happen under a lock; if something else
    replaced the methods meanwhile, restoring fails loudly instead of undoing its change.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._local = threading.local()
        self._calls = 0  # wrapped calls running, all threads together
        self._saved = None  # what torch.Tensor.__dict__ held for each name before installing
        self._installed = None  # the replacements, to check they are still in place

    def active(self) -> bool:
        """Whether this thread is inside a wrapped call."""
        return getattr(self._local, "depth", 0) > 0

    def calls(self) -> int:
        return self._calls

    @contextlib.contextmanager
    def scope(self):
        with self._lock:
            if self._calls == 0:
                self._install()
            self._calls += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            with self._lock:
                self._calls -= 1
                if self._calls == 0:
                    self._restore()

    def _install(self):
        original_type, original_cuda = torch.Tensor.type, torch.Tensor.cuda
        active = self.active

        def type_name(tensor, dtype=None, non_blocking=False, **kwargs):
            if dtype is None and not kwargs:
                name = original_type(tensor)
                return _CUDA_TYPE_NAMES.get(name, name) if active() else name
            return original_type(tensor, dtype, non_blocking, **kwargs)

        def stay_on_cpu(tensor, *args, **kwargs):
            if active():
                return tensor
            return original_cuda(tensor, *args, **kwargs)

        self._saved = {name: torch.Tensor.__dict__.get(name, _MISSING) for name in ("type", "cuda")}
        self._installed = {"type": type_name, "cuda": stay_on_cpu}
        for name, replacement in self._installed.items():
            setattr(torch.Tensor, name, replacement)

    def _restore(self):
        replaced = [name for name, replacement in self._installed.items()
                    if torch.Tensor.__dict__.get(name) is not replacement]
        for name, saved in self._saved.items():
            if name in replaced:
                continue  # someone else's replacement: leave it
            if saved is _MISSING:
                delattr(torch.Tensor, name)  # inherited from torch._C.TensorBase again
            else:
                setattr(torch.Tensor, name, saved)
        self._saved = self._installed = None
        if replaced:
            raise RuntimeError(
                f"torch.Tensor.{'/'.join(replaced)} was replaced while the CPU compatibility layer's "
                "classification as CUDA tensors was in place; not restoring over it")


_tensor_method_swap = _TensorMethodSwap()


def _classify_as_cuda(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _tensor_method_swap.scope():
            return function(*args, **kwargs)

    wrapper.__cpu_compat__ = True
    return wrapper


def patch_cuda_tensor_methods():
    for module_name, attribute in CUDA_TENSOR_METHOD_SITES:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        function = getattr(owner, name)
        if not getattr(function, "__cpu_compat__", False):
            setattr(owner, name, _classify_as_cuda(function))


# --------------------------------------------------------------------------------------------

PATCHES = {
    "cuda_device_sites": patch_cuda_device_sites,
    "rng_tracker": patch_rng_tracker,
    "cuda_tensor_methods": patch_cuda_tensor_methods,
}

_applied = []
_apply_lock = threading.Lock()


def megatron_core_version() -> str:
    """The release (e.g. "0.19.2"). megatron-core appends the short hash of whatever git checkout
    its files sit in ("0.19.2+c3c2de0" for a .venv inside a project clone): not part of it."""
    from megatron.core import package_info  # here: a missing megatron-core is reported by the caller
    from packaging.version import Version

    return Version(package_info.__version__).public


def check_megatron_core_version():
    try:
        version = megatron_core_version()
    except ImportError as error:
        raise RuntimeError(
            "megatron-core is not installed; install one of "
            f"{', '.join(SUPPORTED_MEGATRON_CORE)} (pip install -e .)"
        ) from error
    if version not in SUPPORTED_MEGATRON_CORE:
        raise RuntimeError(
            f"megatron-core {version} is not supported by the CPU compatibility layer; "
            f"supported versions: {', '.join(SUPPORTED_MEGATRON_CORE)}. Install one of them, or "
            "re-check each patch in megatron_prealign/compat/cpu.py against the new version."
        )


def apply_all() -> list:
    """Apply every patch once (for the rest of the process: sections 1 and 2 replace module
    attributes of megatron-core, section 3 only wraps callables). Returns the names of the
    applied patches."""
    with _apply_lock:
        if not _applied:
            check_megatron_core_version()
            for name, patch in PATCHES.items():
                patch()
                _applied.append(name)
        return list(_applied)


def applied() -> list:
    return list(_applied)
