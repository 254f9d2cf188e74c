"""Each CPU compatibility patch: the megatron-core call it covers works on the CPU, and nothing
is patched when CUDA is in use. Multi-rank sites (p2p, distributed optimizer, sequence-parallel
mappings, embedding all-reduce under PP) are exercised by tests/test_parallel.py."""

import importlib
import inspect
import warnings
from unittest import mock

import pytest
import torch

from megatron_prealign import runtime
from megatron_prealign.compat import cpu as cpu_compat
from megatron_prealign.errors import ConfigError
from tests.dist_utils import run_distributed


@pytest.fixture(scope="module")
def cpu_runtime():
    cpu_compat.apply_all()
    return True


def test_cuda_decision_applies_no_patch_when_cuda_is_available():
    with mock.patch.object(torch.cuda, "is_available", return_value=True), \
            mock.patch.object(cpu_compat, "apply_all") as apply_all:
        backend, patches = runtime.select_backend()
    assert backend == "nccl" and patches == ()
    apply_all.assert_not_called()


def test_cuda_decision_patches_without_cuda():
    with mock.patch.object(torch.cuda, "is_available", return_value=False), \
            mock.patch.object(cpu_compat, "apply_all", return_value=["x"]) as apply_all:
        backend, patches = runtime.select_backend()
    assert backend == "gloo" and patches == ("x",)
    apply_all.assert_called_once()


def test_force_cpu_environment_variable():
    with mock.patch.object(torch.cuda, "is_available", return_value=True), \
            mock.patch.dict("os.environ", {"PREALIGN_FORCE_CPU": "1"}):
        assert not runtime.cuda_in_use()


def test_untested_megatron_core_version_fails_loudly():
    with mock.patch.object(cpu_compat, "megatron_core_version", return_value="0.99.0"):
        with pytest.raises(RuntimeError, match="supported versions: 0.19"):
            cpu_compat.check_megatron_core_version()


def test_version_ignores_the_hash_of_the_checkout_megatron_core_sits_in():
    from megatron.core import package_info

    with mock.patch.object(package_info, "__version__", "0.19.2+c3c2de0"):
        assert cpu_compat.megatron_core_version() == "0.19.2"
        cpu_compat.check_megatron_core_version()


def test_on_cuda_only_a_release_known_to_break_is_refused():
    with pytest.raises(ConfigError, match=r"older than this package supports \(>= 0.19\)"):
        runtime.check_megatron_core_for_cuda("0.16.1")
    with pytest.warns(UserWarning, match="0.20.0 is untested"):
        runtime.check_megatron_core_for_cuda("0.20.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime.check_megatron_core_for_cuda("0.19.2")


def test_every_listed_site_still_needs_its_patch():
    """A listed module must still contain a CUDA device reference; if megatron-core drops it,
    the entry (and maybe the patch) should go."""
    for module_name in cpu_compat.CUDA_DEVICE_SITES:
        source = inspect.getsource(importlib.import_module(module_name))
        assert "cuda" in source, module_name
    for module_name, attribute in cpu_compat.CUDA_TENSOR_METHOD_SITES:
        owner = importlib.import_module(module_name)
        for part in attribute.split("."):
            owner = getattr(owner, part)
        source = inspect.getsource(inspect.unwrap(owner))
        assert ".type()" in source or ".cuda(" in source, attribute


def test_global_memory_buffer(cpu_runtime):
    from megatron.core.utils import GlobalMemoryBuffer

    tensor = GlobalMemoryBuffer().get_tensor((3, 4), torch.float32, "test")
    assert tensor.device.type == "cpu" and tensor.shape == (3, 4)


def test_default_causal_mask(cpu_runtime):
    from megatron.core.transformer.utils import get_default_causal_mask

    mask = get_default_causal_mask(4)
    assert mask.device.type == "cpu"
    assert torch.equal(mask, torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1))


def test_rotary_embedding(cpu_runtime):
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    rope = RotaryEmbedding(kv_channels=8, rotary_percent=1.0, use_cpu_initialization=False)
    assert rope.inv_freq.device.type == "cpu" and rope(5).shape[0] == 5


def test_kv_cache_allocation(cpu_runtime):
    """Attention._allocate_memory (megatron-core's static inference KV cache) on the CPU."""
    from types import SimpleNamespace

    from megatron.core.transformer.attention import Attention

    owner = SimpleNamespace(num_query_groups_per_partition=2)
    cache = Attention._allocate_memory(owner, 16, 3, 8, torch.float32)
    assert cache.device.type == "cpu" and cache.shape == (16, 3, 2, 8)


def _check_clip_grads():
    from megatron.core.optimizer import clip_grads

    params = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(3))]
    for p in params:
        p.grad = torch.full_like(p, 2.0)
    norm = clip_grads.get_grad_norm_fp32([p.grad for p in params])
    assert norm == pytest.approx((7 * 4.0) ** 0.5)
    clip_grads.clip_grad_by_total_norm_fp32(params, max_norm=1.0, total_norm=norm)
    assert torch.cat([p.grad for p in params]).norm().item() == pytest.approx(1.0, rel=1e-5)
    assert clip_grads.count_zeros_fp32(params, grad_stats_parallel_group=None) == 0


def _rng_and_layers_rank():
    """Runs in a fresh process: RNG tracker, TP layer init on 'current device', recompute,
    gradient norms and clipping."""
    from megatron.core import tensor_parallel
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear
    from megatron.core.transformer.transformer_config import TransformerConfig

    runtime.initialize(1, 1, seed=3)
    tracker = tensor_parallel.get_cuda_rng_tracker()
    outside = torch.get_rng_state()
    with tracker.fork():
        first = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), outside), "fork must restore the default state"
    with tracker.fork():
        second = torch.rand(4)
    assert not torch.equal(first, second), "the tracked stream must advance"

    config = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=2)
    layer = ColumnParallelLinear(8, 16, config=config, init_method=torch.nn.init.normal_, bias=False)
    assert layer.weight.device.type == "cpu" and layer.weight.std() > 0

    # Activation recompute replays the same dropout mask (CheckpointFunction's RNG handling).
    x = torch.randn(6, 8, requires_grad=True)

    def block(inp):
        with tracker.fork():
            return torch.nn.functional.dropout(inp * 2.0, p=0.5, training=True)

    torch.manual_seed(0)
    out = tensor_parallel.checkpoint(block, False, x)
    out.sum().backward()
    mask = (out != 0).float()
    assert torch.allclose(x.grad, 2.0 * 2.0 * mask), "recompute used a different dropout mask"
    _check_clip_grads()
    return {"ok": 1}


def test_rng_tracker_layers_recompute_and_clipping():
    assert run_distributed(_rng_and_layers_rank, 1)[0]["ok"] == 1


def _tensor_methods():
    return {name: torch.Tensor.__dict__.get(name) for name in ("type", "cuda")}


def test_tensor_methods_are_swapped_only_while_a_wrapped_call_runs():
    before = _tensor_methods()
    seen = {}

    @cpu_compat._classify_as_cuda
    def inner():
        seen["inner"] = torch.ones(1).type()

    @cpu_compat._classify_as_cuda
    def outer(tensor):
        seen["outer"] = tensor.type()
        seen["stays"] = tensor.cuda() is tensor
        inner()  # nested: the outer call still sees the swap afterwards
        seen["after_inner"] = tensor.type()
        return tensor.type(torch.float64).dtype

    assert outer(torch.ones(2)) == torch.float64
    assert seen == {"outer": "torch.cuda.FloatTensor", "stays": True, "inner": "torch.cuda.FloatTensor",
                    "after_inner": "torch.cuda.FloatTensor"}
    assert _tensor_methods() == before and torch.ones(1).type() == "torch.FloatTensor"
    assert cpu_compat._tensor_method_swap.calls() == 0


def test_tensor_methods_are_restored_after_an_exception():
    before = _tensor_methods()

    @cpu_compat._classify_as_cuda
    def failing():
        assert torch.ones(1).type() == "torch.cuda.FloatTensor"
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        failing()
    assert _tensor_methods() == before and torch.ones(1).type() == "torch.FloatTensor"
    assert cpu_compat._tensor_method_swap.calls() == 0


def test_other_threads_keep_torchs_tensor_methods():
    """While one thread is inside a wrapped call, another sees torch's own methods; the last
    call to leave restores them, whichever thread it runs on."""
    import threading

    entered, release = threading.Event(), threading.Event()
    seen = {}

    @cpu_compat._classify_as_cuda
    def holder():
        seen["holder"] = torch.ones(1).type()
        entered.set()
        release.wait(30)

    thread = threading.Thread(target=holder)
    before = _tensor_methods()
    thread.start()
    assert entered.wait(30)
    seen["other"] = torch.ones(1).type()
    seen["other_after_wrapped"] = cpu_compat._classify_as_cuda(lambda: torch.ones(1).type())()
    release.set()
    thread.join(30)
    assert seen == {"holder": "torch.cuda.FloatTensor", "other": "torch.FloatTensor",
                    "other_after_wrapped": "torch.cuda.FloatTensor"}
    assert _tensor_methods() == before


def test_a_foreign_replacement_is_not_overwritten():
    before = _tensor_methods()

    def foreign(self, *args, **kwargs):
        return "foreign"

    @cpu_compat._classify_as_cuda
    def replaces():
        torch.Tensor.type = foreign

    try:
        with pytest.raises(RuntimeError, match="was replaced"):
            replaces()
        assert torch.Tensor.__dict__.get("type") is foreign
        assert torch.Tensor.__dict__.get("cuda") is before["cuda"]
    finally:
        if before["type"] is None:
            del torch.Tensor.type
        else:
            torch.Tensor.type = before["type"]
    assert _tensor_methods() == before


_OPTIMIZED_CHECKS = r"""
import sys, types
assert False, "this interpreter keeps asserts"
import torch
from megatron_prealign.compat import cpu as cpu_compat

# the swap is still scoped and restored
@cpu_compat._classify_as_cuda
def failing():
    if torch.ones(1).type() != "torch.cuda.FloatTensor":
        sys.exit("no swap inside the wrapped call")
    raise ValueError("inside")
try:
    failing()
except ValueError:
    pass
if "type" in torch.Tensor.__dict__ or torch.ones(1).type() != "torch.FloatTensor":
    sys.exit("swap not undone")

# the check that megatron-core still imports torch as torch
module_name = next(iter(cpu_compat.CUDA_DEVICE_SITES))
import importlib
module = importlib.import_module(module_name)
saved = module.torch
module.torch = types.SimpleNamespace()
try:
    cpu_compat.patch_cuda_device_sites()
except RuntimeError as error:
    if "not torch" not in str(error):
        sys.exit(f"wrong error: {error}")
else:
    sys.exit("patch_cuda_device_sites accepted a module without torch")
finally:
    module.torch = saved

# the untested-version check
cpu_compat.megatron_core_version = lambda: "0.99.0"
try:
    cpu_compat.check_megatron_core_version()
except RuntimeError:
    print("checks kept")
else:
    sys.exit("version check skipped")
"""


def test_checks_hold_under_python_optimize():
    """The layer's checks are explicit raises: ``python -O`` (no asserts) keeps them."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-O", "-c", _OPTIMIZED_CHECKS], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("checks kept")
