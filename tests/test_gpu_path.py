"""The GPU path's numerics as far as the CPU can run them (issue #26): fp16 loss scaling,
GeLU variants under the fusions a GPU run uses, an untied output layer with pre-alignment under
DP=2 and megatron-core's overlaps, ..."""

import os

import pytest
import torch

from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed

OVERLAP = dict(use_distributed_optimizer=True, overlap_grad_reduce=True, overlap_param_gather=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pretrain_case.prepare_data(str(tmp_path_factory.mktemp("gpu_path_data")))


def _log(data, work, **flags):
    argv = pretrain_case.base_argv(data, str(work), train_iters=3, prealign_iters=1, hidden_dropout=0.0,
                                   attention_dropout=0.0, **pretrain_case.alignment_flags(data), **flags)
    run_distributed(pretrain_case.run_pretrain, 1, argv)
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


# -- item 3: each GeLU variant with the fusions a GPU run switches on --------------------------

GELUS = ("gelu", "gelu_new", "gelu_pytorch_tanh")


def _gelu_logits(hf_dirs, tokens, out_root):
    """Each GPT-2 variant imported and run with fused_kernels() on, as on CUDA with Transformer
    Engine (megatron-core's fused bias-GeLU runs on the CPU too)."""
    from megatron_prealign import model
    from megatron_prealign.generation.model_loading import load_model
    from megatron_prealign.hf.convert import import_hf
    from tests.test_hf_interop import _full_logits

    model.fused_kernels = lambda args: True
    logits = {}
    for name, hf_dir in hf_dirs.items():
        save = os.path.join(out_root, name)
        import_hf(hf_dir, save, 1, 1, progress=False)
        loaded = load_model(save, 1, 1, seq_length=tokens.shape[1])
        logits[name] = (_full_logits(loaded, tokens), loaded.chunks[0].config.bias_activation_fusion)
    return logits


def test_each_gelu_variant_with_fusions_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tokens = torch.randint(0, 250, (2, 16))
    dirs, reference = {}, {}
    for name in GELUS:
        config = transformers.GPT2Config(vocab_size=250, n_embd=64, n_layer=2, n_head=4, n_positions=32,
                                         activation_function=name)
        hf = transformers.GPT2LMHeadModel(config).eval()
        with torch.no_grad():  # large weights: the GeLU variants differ visibly in the logits
            for param in hf.parameters():
                param.normal_(0, 0.3)
            reference[name] = hf(tokens).logits
        hf.save_pretrained(tmp_path / name)
        dirs[name] = str(tmp_path / name)
    ours = run_distributed(_gelu_logits, 1, dirs, tokens, str(tmp_path / "imported"))[0]
    for name in GELUS:
        logits, fused = ours[name]
        difference = (logits[..., :250] - reference[name]).abs().max().item()
        assert difference <= 1e-4, f"{name}: max |logit difference| {difference}"
        assert fused == (name != "gelu")  # the tanh variants keep the fused kernel
    # the variants are far apart, so a wrong kernel cannot pass the 1e-4 above
    assert (reference["gelu"] - reference["gelu_new"]).abs().max().item() > 1e-2


# -- item 5: an untied output layer with pre-alignment under DP=2 ------------------------------


def _fused_wgrad_pretrain(argv, bucket_size):
    """run_pretrain with megatron-core's gradient-accumulation fusion on (as with apex on a GPU),
    its kernel replaced by the same sum in torch, and DDP buckets of `bucket_size` elements (a
    real model's output layer fills a 40M-element bucket of its own)."""
    import functools

    from megatron.core.tensor_parallel import layers

    from megatron_prealign import model
    from megatron_prealign.alignment import capture
    from megatron_prealign.training import loop

    class _Kernel:
        @staticmethod
        def wgrad_gemm_accum_fp32(total_input, grad_output, main_grad):
            main_grad.add_(grad_output.reshape(-1, grad_output.shape[-1]).t()
                           @ total_input.reshape(-1, total_input.shape[-1]))

    layers.fused_weight_gradient_mlp_cuda, layers._grad_accum_fusion_available = _Kernel, True
    original = model.transformer_config

    def fused_config(args):
        config = original(args)
        config.gradient_accumulation_fusion = True
        return config

    model.transformer_config = fused_config
    model.DistributedDataParallelConfig = functools.partial(model.DistributedDataParallelConfig,
                                                            bucket_size=bucket_size)
    # Whether the output weight's all-gather had completed each time the alignment pass read it
    # (on gloo an outstanding one usually lands in time anyway; on NCCL it need not).
    ddp, reads, build, rows = [], [], model.build_model, capture.output_embedding_rows

    def recording_build(*args, **kwargs):
        ddp.extend(build(*args, **kwargs))
        return ddp

    def recording_rows(gpt_model, token_ids):
        group = ddp[0].param_to_bucket_group[gpt_model.output_layer.weight]
        reads.append(group.param_gather_dispatched and group.param_gather_handle is None)
        return rows(gpt_model, token_ids)

    loop.build_model, capture.output_embedding_rows = recording_build, recording_rows
    return {**pretrain_case.run_pretrain(argv), "gathered_reads": reads}


def test_untied_output_layer_with_prealignment_under_dp2_matches_one_process(data, tmp_path):
    """LLaMA (untied output layer), two pre-alignment steps then pretraining, DP=2 with the
    distributed optimizer, with and without --overlap-grad-reduce / --overlap-param-gather and
    with fused weight-gradient accumulation: the losses of one process without any fusion.
    Before the fix the alignment gradient of the output layer was dropped (alignment microbatch
    last, after the LM microbatch set grad_added_to_main_grad) or computed from the output weight
    before its all-gather had completed (overlap)."""
    common = dict(model_family="llama", train_iters=2, prealign_iters=2, hidden_dropout=0.0,
                  attention_dropout=0.0, **pretrain_case.alignment_flags(data))
    runs = {"reference": (1, {}, pretrain_case.run_pretrain, ()),
            "dp2": (2, dict(use_distributed_optimizer=True), _fused_wgrad_pretrain, (2000,)),
            "dp2_overlap": (2, dict(OVERLAP), _fused_wgrad_pretrain, (2000,))}
    losses = {}
    for name, (world, flags, body, extra) in runs.items():
        work = tmp_path / name
        argv = pretrain_case.base_argv(data, str(work), **common, **flags)
        results = run_distributed(body, world, argv, *extra)
        if name == "dp2_overlap":
            assert all(r["gathered_reads"] == [True] * 2 for r in results), results
        losses[name] = [(r["lm_loss"], r["alignment_loss"]) for r in pretrain_case.read_log(str(work))]
    reference = losses.pop("reference")
    for name, got in losses.items():
        for step, (lm, alignment) in enumerate(got):
            assert lm == pytest.approx(reference[step][0], rel=1e-5), (name, step, got, reference)
            assert alignment == (reference[step][1] and pytest.approx(reference[step][1], rel=1e-5)), (name, step)


# -- item 6: pooling is deterministic by construction ------------------------------------------

# Ops whose CUDA kernels add with float atomics (torch.use_deterministic_algorithms' list) or
# read data-dependent shapes back to the host.
NOT_REPRODUCIBLE_ON_CUDA = {"index_add", "index_add_", "scatter_add", "scatter_add_", "index_put_",
                            "put_", "bincount", "nonzero", "masked_select"}


class _RefuseOps(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in NOT_REPRODUCIBLE_ON_CUDA or (name == "__getitem__" and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in args[1:])):
            raise AssertionError(f"calls {name}")
        return func(*args, **(kwargs or {}))


def test_pooling_uses_no_atomic_or_syncing_op_and_matches_fp64():
    from megatron_prealign.alignment.pooling import sum_by_form

    generator = torch.Generator().manual_seed(0)
    states = torch.randn(16, 3, 8, generator=generator).bfloat16()  # [s, b, h]
    index = torch.randint(-1, 5, (16, 3), generator=generator)
    with _RefuseOps():
        sums = sum_by_form(states, index, 6)
    expected = torch.zeros(6, 8, dtype=torch.float64)
    for t, form in enumerate(index.flatten().tolist()):
        if form >= 0:
            expected[form] += states.reshape(-1, 8)[t].double()
    assert sums.dtype == torch.float32 and sums[5].abs().max() == 0  # form 5 has no tokens
    torch.testing.assert_close(sums.double(), expected, rtol=1e-6, atol=1e-6)


# -- items 1 and 2: checkpoints of Transformer Engine runs <-> local layers ---------------------


def _tiny_llama(directory):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=250, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2)
    model.save_pretrained(directory)
    return model


class _ExtraState(torch.nn.Module):
    """Stands in for a Transformer Engine module's `_extra_state` (its fp8 metadata)."""

    def __init__(self):
        super().__init__()
        self.state = None

    def get_extra_state(self):
        return {"fp8_meta": 1}

    def set_extra_state(self, state):
        self.state = state


def _with_te_extra_state(chunks):
    from megatron.core.utils import unwrap_model

    for layer in unwrap_model(chunks[0]).decoder.layers:
        layer.self_attention.linear_qkv.te_meta = _ExtraState()
    return chunks


def _as_trained_with_te(checkpoint):
    """An imported checkpoint saved again as a TE run saves it: its run state says
    transformer_engine and it holds `_extra_state` objects (the norms already carry TE's names:
    the local spec's sharded_state_dict_keys_map writes them so)."""
    from megatron_prealign.generation.model_loading import load_model
    from megatron_prealign.training import checkpointing

    loaded = load_model(checkpoint, 1, 1, seq_length=16)
    run_state = {k: v for k, v in loaded.run_state.items()
                 if k not in ("iteration", "layout", "data_parallel_size", "distributed_optimizer")}
    run_state["architecture"] = dict(run_state["architecture"], transformer_impl="transformer_engine")
    state = loaded.chunks[0].sharded_state_dict()
    assert any(v.key.endswith("linear_qkv.layer_norm_weight") for v in state.values())  # TE's names
    target = checkpoint + "_te"
    checkpointing.save_checkpoint(target, 1, _with_te_extra_state(loaded.chunks), run_state=run_state)
    assert any(k.endswith("te_meta._extra_state") for k in loaded.chunks[0].sharded_state_dict())
    return target


def _export_te_checkpoint(hf_dir, checkpoint, out):
    from megatron_prealign.cli import convert_checkpoint
    from megatron_prealign.hf.convert import import_hf

    import_hf(hf_dir, checkpoint, progress=False)
    te = _as_trained_with_te(checkpoint)
    return convert_checkpoint.main(["export-hf", "--load", te, "--out", out, "--no-progress"])


def test_te_checkpoint_exports_through_local_layers(tmp_path):
    """export-hf of a checkpoint a TE run wrote (TE names, `_extra_state`, transformer_impl
    recorded as transformer_engine) builds local layers: the transformers weights come back."""
    original = _tiny_llama(tmp_path / "hf")
    code = run_distributed(_export_te_checkpoint, 1, str(tmp_path / "hf"), str(tmp_path / "ckpt"),
                           str(tmp_path / "out"))[0]
    assert code == 0
    transformers = pytest.importorskip("transformers")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    theirs = original.state_dict()
    assert exported.state_dict().keys() == theirs.keys()
    for key, value in exported.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def _imported_into_te_layers(hf_dir, checkpoint, tokens):
    from megatron_prealign.generation import model_loading
    from megatron_prealign.hf.convert import import_hf
    from tests.test_hf_interop import _full_logits

    import_hf(hf_dir, checkpoint, progress=False)
    build = model_loading.build_model
    model_loading.build_model = lambda *args, **kwargs: _with_te_extra_state(build(*args, **kwargs))
    loaded = model_loading.load_model(checkpoint, 1, 1, seq_length=tokens.shape[1])
    return _full_logits(loaded, tokens)


def test_imported_checkpoint_loads_into_layers_with_te_extra_state(tmp_path):
    """import-hf writes local layers (no `_extra_state`); a model with TE's extra state (the
    launch scripts' default) loads it, the extra state starting fresh: transformers' logits."""
    original = _tiny_llama(tmp_path / "hf")
    tokens = torch.randint(0, 250, (2, 16), generator=torch.Generator().manual_seed(1))
    logits = run_distributed(_imported_into_te_layers, 1, str(tmp_path / "hf"), str(tmp_path / "ckpt"), tokens)[0]
    with torch.no_grad():
        reference = original(tokens).logits
    assert (logits[..., :250] - reference).abs().max().item() <= 1e-4


def _save_as_te_then_resume(first, second):
    from megatron_prealign import pretrain
    from megatron_prealign.training import checkpointing

    recorded = checkpointing.architecture
    checkpointing.architecture = lambda args: dict(recorded(args), transformer_impl="transformer_engine")
    assert pretrain.main(first) == 0
    checkpointing.architecture = recorded
    return {flag: pretrain.main(second + extra)
            for flag, extra in (("resume", []), ("no_load_optim", ["--no-load-optim"]))}


def test_resume_across_transformer_impl_needs_no_load_optim(data, tmp_path, capsys):
    """The checkpoint records the run's --transformer-impl; resuming with the optimizer state
    under the other layer kind is refused (exit 2), the weights alone load."""
    save = str(tmp_path / "ckpt")
    first = pretrain_case.base_argv(data, str(tmp_path / "a"), train_iters=2, save=save)
    second = pretrain_case.base_argv(data, str(tmp_path / "b"), train_iters=3, load=save)
    codes = run_distributed(_save_as_te_then_resume, 1, first, second)[0]
    assert codes == {"resume": 2, "no_load_optim": 0}
    assert "trained with --transformer-impl transformer_engine" in capsys.readouterr().err


# -- item 8: no host synchronisation and few shapes in the alignment microbatch ----------------


def test_alignment_bookkeeping_needs_no_host_sync_and_shapes_are_bucketed():
    from megatron_prealign.alignment.attention_path import ONE_FORM_PER_ROW
    from megatron_prealign.alignment.microbatch import pack_forms
    from megatron_prealign.alignment.contrastive import count_anchors
    from megatron_prealign.training.batches import alignment_microbatch

    batch = pack_forms([[5, 6, 7], [8], [9, 9], [4, 4, 4]], [0, 0, 1, 2], 8, 2)
    groups, valid = torch.tensor([0, 0, 1, 2, 2, 3, 3]), torch.tensor([1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    with _RefuseOps():
        lengths = batch.form_lengths()
        anchors = count_anchors(groups, valid)
    assert lengths.tolist() == [3, 1, 2, 3] and int(anchors) == 4  # groups 0 and 3 have pairs
    shapes, tokens, exact_tokens = set(), 0, 0
    for count in range(96, 160, 3):
        for longest in range(5, 40, 3):
            forms = [[1] * (1 + i % longest) for i in range(count)]
            packed = pack_forms(forms, list(range(count)), 40, count)
            shape = tuple(alignment_microbatch(packed, 0, 40, ONE_FORM_PER_ROW).tokens.shape)
            assert shape[0] >= count and shape[1] >= longest
            shapes.add(shape)
            tokens, exact_tokens = tokens + shape[0] * shape[1], exact_tokens + count * longest
    assert 3 * len(shapes) <= 22 * 12, len(shapes)  # instead of one shape per (count, longest)
    assert tokens <= 1.15 * exact_tokens  # at most 1/8 padding per dimension, less on average


# Tensor -> Python reads: on CUDA each waits for the device (a host synchronisation).
HOST_READS = {"__int__", "__index__", "__float__", "__bool__", "item", "tolist"}


class _RefuseHostReads(_RefuseOps):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            raise AssertionError(f"reads {func.__name__} back to the host")
        return super().__torch_function__(func, types, args, kwargs)


def _dp_gather_rank(bound):
    from megatron_prealign import runtime
    from megatron_prealign.alignment.contrastive import anchor_terms
    from megatron_prealign.alignment.collectives import gather_over_data_parallel

    runtime.initialize(1, 1, seed=3)
    rank = torch.distributed.get_rank()
    n = (3, 5)[rank]  # the ranks hold different numbers of forms
    generator = torch.Generator().manual_seed(rank)
    sums = torch.randn(2, n, 8, generator=generator)
    groups = torch.arange(n) // 2 + 10 * rank
    lengths = torch.randint(1, 4, (n,), generator=generator)

    def loss(batch):
        terms, anchors = anchor_terms(batch.sums, batch.groups, 0.1, batch.valid, batch.mine)
        return terms.sum(dim=-1), anchors.sum()

    reference = gather_over_data_parallel(sums, groups, lengths)  # the counts read on the host
    error = ""
    try:
        with _RefuseHostReads():
            bounded = gather_over_data_parallel(sums, groups, lengths, max_forms=bound)
            bounded_loss = loss(bounded)
    except AssertionError as refused:
        error = str(refused)
        bounded, bounded_loss = reference, loss(reference)
    return {"error": error, "block": bounded.block, "valid": bounded.valid.tolist(),
            "mine": (bounded.mine.start, bounded.mine.stop),
            "rows": [b.sums[:, b.valid].clone() for b in (reference, bounded)],
            "meta": [(b.groups[b.valid].tolist(), b.lengths[b.valid].tolist()) for b in (reference, bounded)],
            "loss": [loss(reference), bounded_loss]}


def test_data_parallel_gather_of_forms_reads_nothing_back_and_matches_the_counted_gather():
    """Item 8 (a): with the bound the pass is built with, the DP all-gather of the per-form sums
    pads every rank's block to it and marks real forms by their gathered lengths, so it reads no
    count back to the host; forms, metadata and the contrastive terms equal the gather padded
    to the largest count. Before the fix the counts were always all-gathered and read (int())."""
    results = run_distributed(_dp_gather_rank, 2, 6)
    for rank, r in enumerate(results):
        assert r["error"] == "", r["error"]
        assert r["block"] == 6 and r["mine"] == ((0, 3), (6, 11))[rank]
        assert r["valid"] == [True] * 3 + [False] * 3 + [True] * 5 + [False]
        torch.testing.assert_close(r["rows"][1], r["rows"][0], rtol=0, atol=0)
        assert r["meta"][1] == r["meta"][0]
        (terms, anchors), (bounded_terms, bounded_anchors) = r["loss"]
        torch.testing.assert_close(bounded_terms, terms, rtol=1e-6, atol=1e-7)
        assert int(bounded_anchors) == int(anchors) == (2, 4)[rank]


def test_alignment_pass_refuses_more_forms_than_its_bound():
    results = run_distributed(_bound_too_small_rank, 2)
    assert all("more than the bound 4" in r for r in results), results


def _bound_too_small_rank():
    from megatron_prealign import runtime
    from megatron_prealign.alignment.collectives import gather_over_data_parallel

    runtime.initialize(1, 1, seed=3)
    try:
        gather_over_data_parallel(torch.zeros(1, 5, 4), torch.arange(5), torch.ones(5, dtype=torch.long), 4)
    except ValueError as error:
        return str(error)
    return ""


def test_word_dataset_bounds_the_forms_of_every_rank():
    from megatron_prealign.data.alignment_words import AlignmentWordDataset, WordForm, WordGroup

    groups = [WordGroup(f"w{i}", [WordForm("en", f"w{i}", [i + 1])] + [WordForm("de", f"d{i}{k}", [100 + k])
                                                                        for k in range(1 + i % 3)])
              for i in range(12)]
    dataset = AlignmentWordDataset(groups, 4, 8, seed=1)
    bound = dataset.max_forms_per_rank(2)
    assert bound == 8  # the two largest groups: 4 forms each
    for step in range(dataset.steps_per_epoch * 3):
        for rank in range(2):
            assert dataset.batch(step, rank, 2).n_forms <= bound


def test_packed_sft_boundaries_come_from_the_host():
    """Item 8 (b): --sft-packing on Transformer Engine layers builds PackedSeqParams from
    cu_seqlens / max_seqlen computed when the batch is collated (host), so the step runs no
    `nonzero` and reads nothing back; cu_seqlens cover every row, each padding run its own."""
    from megatron_prealign.training import loop
    from megatron_prealign.training.batches import _collate

    segments = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 0, 1, 1, 1, 1]])
    samples = [{"tokens": torch.arange(6) + 10 * r, "position_ids": torch.zeros(6, dtype=torch.long),
                "labels": torch.arange(6), "loss_mask": torch.ones(6), "segment_ids": segments[r]}
               for r in range(2)]
    batch = _collate(samples)
    seen = {}

    def model(tokens, position_ids, attention_mask, labels=None, packed_seq_params=None):
        seen.update(shape=tuple(tokens.shape), mask=attention_mask, packed=packed_seq_params)
        return torch.zeros(tokens.shape, dtype=torch.float32)

    original = loop._uses_local_attention
    loop._uses_local_attention = lambda _model: False  # as on Transformer Engine layers
    try:
        with _RefuseHostReads():
            output, loss_func = loop._lm_forward_step(batch, model)
            loss_func(output)
    finally:
        loop._uses_local_attention = original
    packed = seen["packed"]
    assert seen["shape"] == (1, 12) and seen["mask"] is None and packed.qkv_format == "thd"
    assert packed.cu_seqlens_q.tolist() == [0, 3, 5, 6, 8, 12] and packed.cu_seqlens_q.dtype == torch.int32
    assert packed.cu_seqlens_kv is packed.cu_seqlens_q
    assert packed.max_seqlen_q == packed.max_seqlen_kv == 4 and isinstance(packed.max_seqlen_q, int)


# -- item 7: one form per row through the pipeline ---------------------------------------------


def _one_form_per_row_rank(pp):
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_prealign import runtime
    from megatron_prealign.alignment import AlignmentPass, attention_path, is_alignment_batch
    from megatron_prealign.alignment.microbatch import forms_of, one_form_per_row
    from megatron_prealign.training.loop import _lm_forward_step, _lm_sums
    from tests import alignment_case as case
    from tests.full_state import gather_full_tensors
    from tests.parallel_lm import lm_batch
    from tests.test_gpu_readiness import _ignore_masks

    runtime.initialize(1, pp, seed=11)
    chunks = case.build(case.tiny_args("llama"), False, True)
    _ignore_masks(chunks)  # plain causal attention whatever the mask, as TE's
    attention_path.honours_explicit_mask = lambda _model: False  # what the pass finds on TE layers
    alignment = AlignmentPass(chunks, case.TEMPERATURE, case.LOSS_WEIGHT)
    config = chunks[0].config
    rows = [one_form_per_row(forms_of(per_rank[0]), per_rank[0].form_group.tolist(), bucketed=True)
            for per_rank in case.global_alignment_microbatches(1)]
    lm = case.global_lm_batch(1)
    # LM [SEQ, MICRO] between two alignment microbatches of other shapes
    microbatches = [rows[0], lm, rows[1]]
    during = []

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        during.append(config.variable_seq_lengths)
        if is_alignment_batch(batch):
            return alignment.forward_step(batch, model)
        return _lm_forward_step(lm_batch(batch), model)

    for chunk in chunks:
        chunk.zero_grad_buffer()
    alignment.begin_step(2, total_lm_tokens=lm.shape[0] * case.SEQ)
    outputs = get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=iter(microbatches), model=chunks,
        num_microbatches=len(microbatches), seq_length=case.SEQ, micro_batch_size=case.MICRO,
        forward_only=False)
    statistics = alignment.end_step()
    lm_sums = _lm_sums(outputs)
    torch.distributed.all_reduce(lm_sums)
    return {"path": alignment.attention_path, "shapes": [tuple(r.tokens.shape) for r in rows],
            "alignment_loss": statistics.loss(), "per_state": statistics.per_state_loss(),
            "lm_loss": float(lm_sums[0] / lm_sums[1]), "grads": gather_full_tensors(chunks, "grad"),
            "variable_during": during, "variable_after": config.variable_seq_lengths}


def test_one_form_per_row_alignment_microbatches_through_the_pipeline_match_one_stage():
    """Item 7: under an attention that ignores masks (TE's), PP=2 takes the one-form-per-row
    alignment microbatches next to an LM microbatch of another shape (the pass turns on
    megatron-core's variable_seq_lengths for the step and off after it): LM loss, alignment
    loss and all gradients equal one stage's within 1e-5. Before, the pass refused PP > 1."""
    from tests import alignment_case as case

    reference = run_distributed(_one_form_per_row_rank, 1, 1)[0]
    results = run_distributed(_one_form_per_row_rank, 2, 2)
    assert reference["path"] == "one_form_per_row" and not reference["variable_after"]
    assert (case.MICRO, case.SEQ) not in reference["shapes"], reference["shapes"]
    for rank, r in enumerate(results):
        assert r["path"] == "one_form_per_row" and r["variable_during"] and all(r["variable_during"])
        assert r["variable_after"] is False  # steps without alignment exchange fixed shapes
        assert r["lm_loss"] == pytest.approx(reference["lm_loss"], rel=1e-5)
        assert r["alignment_loss"] == pytest.approx(reference["alignment_loss"], rel=1e-5)
        assert r["per_state"] == pytest.approx(reference["per_state"], rel=1e-5)
        assert set(r["grads"]) == set(reference["grads"])
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(r["grads"][name], grad, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {name}")

