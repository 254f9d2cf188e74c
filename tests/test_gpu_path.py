"""The GPU path's numerics as far as the CPU can run them (issue #26): fp16 loss scaling, ..."""

import pytest

from tests import pretrain_case
from tests.dist_utils import run_distributed


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pretrain_case.prepare_data(str(tmp_path_factory.mktemp("gpu_path_data")))


def _fp16_pretrain(argv):
    """run_pretrain with megatron-core's grad scaler on the CPU: its scale lives on 'cuda'
    (optimizer/grad_scaler.py), a site that cpu_compat.CUDA_DEVICE_SITES does not list yet."""
    from megatron.core.optimizer import grad_scaler

    from megatron_prealign import cpu_compat

    grad_scaler.torch = cpu_compat._cpu_torch_view()
    return pretrain_case.run_pretrain(argv)


def _log(data, work, **flags):
    argv = pretrain_case.base_argv(data, str(work), train_iters=3, prealign_iters=1, hidden_dropout=0.0,
                                   attention_dropout=0.0, **pretrain_case.alignment_flags(data), **flags)
    run_distributed(_fp16_pretrain, 1, argv)
    return {key: [r[key] for r in pretrain_case.read_log(str(work))]
            for key in ("lm_loss", "alignment_loss", "grad_norm")}


def test_fp16_loss_scaling_trains_like_fp32(data, tmp_path):
    """--fp16 (pre-alignment, then pretraining) scales the loss by the optimizer's loss scale
    before backward, as the optimizer unscales the gradients by it: gradient norms and losses
    follow the fp32 run's. Without the scaling the gradients come out divided by the scale.
    (A constant scale of 8: the alignment step's gradients overflow fp16 at 32 on this model.)"""
    reference = _log(data, tmp_path / "fp32")
    half = _log(data, tmp_path / "fp16", fp16=True, loss_scale=8)
    assert reference["lm_loss"][-1] < reference["lm_loss"][0] - 0.05  # the reference learns
    assert half["grad_norm"] == pytest.approx(reference["grad_norm"], rel=2e-2)
    for key in ("lm_loss", "alignment_loss"):
        assert half[key] == pytest.approx(reference[key], abs=2e-2)
