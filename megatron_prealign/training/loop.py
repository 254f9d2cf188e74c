"""The training loop: every stage of every configuration through one megatron-core schedule.

Each iteration builds this rank's microbatches (LM, plus one alignment microbatch in aligning
stages), runs them through `get_forward_backward_func` together, steps megatron-core's
optimizer and scheduler, logs, and saves when asked (interval, end, SIGTERM / SIGUSR1).
"""

import contextlib
import dataclasses
import math
import os
import time

import torch
import torch.distributed as dist

from megatron.core import parallel_state
from megatron.core.distributed import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_prealign import runtime
from megatron_prealign.alignment import AlignmentPass, is_alignment_batch
from megatron_prealign.data import data_path
from megatron_prealign.data.alignment_table import read_table
from megatron_prealign.data.alignment_words import AlignmentWordDataset
from megatron_prealign.data.enclone import EncloneMapping
from megatron_prealign.data.packing import block_diagonal_causal_mask, packed_seq_params, thd_boundaries, to_thd
from megatron_prealign.data.tokenizer import build_tokenizer_from_spec
from megatron_prealign.instruct.finetune import FinetuneData
from megatron_prealign.model import CHECKPOINT_DETAIL_FIELDS, build_model
from megatron_prealign.errors import ConfigError
from megatron_prealign.training import arguments, checkpointing, enclone_init, signals, vocab
from megatron_prealign.training.save_lock import SaveLock
from megatron_prealign.training.batches import LMBatches, alignment_microbatch, build_datasets
from megatron_prealign.training.config import TrainConfig
from megatron_prealign.training.logger import TrainingLogger
from megatron_prealign.training.stages import FINETUNE, PRETRAIN, StagePlan

def _checkpoint_to_load(cfg: TrainConfig, announce=print):
    """(directory, iteration, weights only?) of the checkpoint this run starts from, or
    (None, None, False).

    --load with a checkpoint resumes it exactly (its pointer's iteration, --load-iteration, or
    the newest complete one: checkpointing.resolve_iteration), unless --finetune without
    --pretrained-checkpoint asks for its weights alone (Megatron-LM's --finetune). Otherwise
    --pretrained-checkpoint gives the weights (new optimizer and scheduler, iteration 0); a
    relaunched fine-tuning run with the same flags therefore resumes from its own --load."""
    load, ft = cfg.checkpoint.load, cfg.finetune
    if load and os.path.isdir(load):
        iteration = checkpointing.resolve_iteration(load, cfg.checkpoint.load_iteration, announce)
        if iteration is not None:
            return load, iteration, bool(ft.finetune and not ft.pretrained_checkpoint)
    if ft.pretrained_checkpoint:
        return ft.pretrained_checkpoint, checkpointing.resolve_iteration(ft.pretrained_checkpoint, None, announce), True
    if ft.finetune:  # fine-tuning a random model is never what --finetune means
        raise ConfigError(f"--finetune: --load {load} holds no complete checkpoint; give "
                          "--pretrained-checkpoint DIR (or --load a checkpoint) with the weights to fine-tune")
    return None, None, False


def _vocab_size(cfg: TrainConfig, tokenizer, checkpoint_vocab=None) -> int:
    tokens = tokenizer.vocab_size
    mapping_path = cfg.alignment.enclone_mapping
    if mapping_path:
        mapping = EncloneMapping.load(mapping_path)
        if mapping.original_vocab_size != tokenizer.vocab_size:
            raise ConfigError(f"--enclone-mapping {mapping_path} was made for a vocabulary of "
                              f"{mapping.original_vocab_size} tokens; --tokenizer-model has {tokenizer.vocab_size}")
        tokens = mapping.vocab_size
    return vocab.padded_vocab_size(tokens, cfg.parallel.tensor_model_parallel_size, cfg.model.padded_vocab_size,
                                   checkpoint_vocab)


def _uses_local_attention(model) -> bool:
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.utils import unwrap_model

    layers = unwrap_model(model).decoder.layers
    return not len(layers) or isinstance(layers[0].self_attention.core_attention, DotProductAttention)


def _lm_forward_step(batch, model):
    """An LM microbatch; with ``segment_ids`` (--sft-packing) a packed one: block-diagonal
    attention on the local layers, THD ``PackedSeqParams`` on Transformer Engine layers. Every
    pipeline stage runs this on the same batch, so every stage sees the record boundaries."""
    attention_mask, packed = None, None
    if "segment_ids" in batch:
        if _uses_local_attention(model):
            attention_mask = block_diagonal_causal_mask(batch["segment_ids"])
        else:
            # Boundaries from the collate (host); computed here only for batches made elsewhere.
            boundaries = batch if "cu_seqlens" in batch else thd_boundaries(batch["segment_ids"])
            packed = packed_seq_params(boundaries["cu_seqlens"].to(batch["tokens"].device), boundaries["max_seqlen"])
            batch = to_thd(batch)
    output = model(batch["tokens"], batch["position_ids"], attention_mask, labels=batch["labels"],
                   packed_seq_params=packed)
    mask = batch["loss_mask"].float()

    def loss_func(per_token_loss):
        # (sum, count): megatron-core divides by the global count of target tokens.
        total = (per_token_loss.float() * mask).sum()
        count = mask.sum().to(torch.int)
        return total, count, {"lm_sum_count": torch.stack([total.detach(), count.float()])}

    return output, loss_func


def _lm_sums(outputs) -> torch.Tensor:
    """[LM loss sum, token count] of this rank's microbatches, on the device (zeros on the
    stages before the last)."""
    sums = torch.zeros(2, device=runtime.device())
    for out in outputs or []:
        if "lm_sum_count" in out:
            sums += out["lm_sum_count"].float()
    return sums


def _global_mean(sums: torch.Tensor, empty=float("nan")):
    """Loss over all ranks from per-rank [sum, count]: DP shards add up, non-last pipeline
    stages add 0, TP ranks repeat both. Synchronises with the host."""
    sums = sums.clone()
    dist.all_reduce(sums)
    sums = sums.cpu()
    return (sums[0] / sums[1]).item() if sums[1] > 0 else empty


class _NonFiniteWatch:
    """Notes on the device the first iteration whose LM or alignment loss is not finite, and
    raises naming it when checked (at log time and before a save): no host sync per step. A
    non-finite grad norm (already on the host: megatron-core's clipping reads it) stops at once."""

    def __init__(self):
        self.first_bad = torch.full((), math.inf, device=runtime.device(), dtype=torch.float64)
        self.stages = {}

    def add(self, iteration: int, stage: str, lm_sums: torch.Tensor, statistics, grad_norm):
        self.stages[iteration] = stage
        values = [lm_sums[0]]
        if statistics is not None:
            values.append(statistics.total_loss_tensor())
        bad = ~torch.isfinite(torch.stack([v.double() for v in values])).all()
        self.first_bad = torch.where(bad, torch.minimum(self.first_bad, torch.full_like(self.first_bad, iteration)),
                                     self.first_bad)
        if grad_norm is not None and not math.isfinite(grad_norm):
            self.check()  # name the loss if that went first
            self._raise("the gradient norm", grad_norm, iteration)

    def check(self):
        first = self.first_bad.clone()
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first = first.item()
        if math.isfinite(first):
            self._raise("the loss", "not finite", int(first))
        self.stages.clear()

    def _raise(self, what, value, iteration: int):
        stage = self.stages.get(iteration, "?")
        raise FloatingPointError(
            f"{what} is {value} at iteration {iteration} (stage {stage}); stopping. Lower --lr, "
            "check the data, or resume from the last checkpoint.")


class Trainer:
    """One training run of a TrainConfig: set up in named steps (before any compute: checks,
    data plan, the checkpoint to start from, the model's settings; then the process groups, the
    --save lock and everything that needs them), then `train`."""

    def __init__(self, config: TrainConfig):
        self.config = config
        launch = runtime.detect_launcher()
        arguments.validate(config, launch.world_size)  # before any compute
        tokenizer = build_tokenizer_from_spec(config.tokenizer.spec())
        self._plan_stages()
        # The checkpoint to start from (None: a fresh start), chosen once for every later step.
        self.start_from, self.load_iteration, self.weights_only = _checkpoint_to_load(
            config, announce=print if launch.rank == 0 else None)
        self._resolve_model(tokenizer, launch.world_size)
        self.word_dataset = self._alignment_words(tokenizer)

        par = config.parallel
        self.runtime = runtime.initialize(
            par.tensor_model_parallel_size, par.pipeline_model_parallel_size, seed=config.schedule.seed,
            timeout_minutes=par.distributed_timeout_minutes, backend=par.distributed_backend,
        )
        self.save_lock = self._lock_save_directory()
        try:
            self._build(tokenizer)
        except BaseException:  # the lock of a run that never started is not kept
            if self.save_lock is not None:
                self.save_lock.release()
            raise

    def _plan_stages(self):
        """The instruction data (--sft / --sft-packing), the train stage's length, the warmup
        and the stage plan."""
        cfg = self.config
        data = cfg.data
        self.finetune_data = (
            FinetuneData(data.data_path, data.split, cfg.model.seq_length, cfg.schedule.seed,
                         cfg.finetune.sft_packing)
            if cfg.instruction_data else None)
        rows = self.finetune_data.rows_per_run(cfg.schedule.train_epochs) if self.finetune_data else None
        train_iters = arguments.train_iters(cfg, rows)
        self.warmup_iters = arguments.validate_schedule(cfg, train_iters)
        align = cfg.alignment
        self.plan = StagePlan(align.prealign_iters, train_iters, align.postalign_iters,
                              align.alignment_during_pretraining,
                              FINETUNE if self.finetune_data else PRETRAIN)

    def _resolve_model(self, tokenizer, world_size: int):
        """The model's settings (`self.model_args`): the flags, the vocabulary, and, loading a
        checkpoint, its recorded details after checking that its architecture matches."""
        cfg = self.config
        saved = None
        if self.start_from is not None:
            saved = checkpointing.read_run_state_or_explain(
                checkpointing.checkpoint_dir(self.start_from, self.load_iteration))
        saved_architecture = (saved or {}).get("architecture") or {}
        self.model_args = arguments.model_args(cfg, _vocab_size(cfg, tokenizer, saved_architecture.get("vocab_size")))
        try:
            self.model_args.validate(world_size)
        except ValueError as error:  # ModelArgs' checks name the flag
            raise ConfigError(str(error)) from error
        if saved is not None:
            flag = "--load" if self.start_from == cfg.checkpoint.load else "--pretrained-checkpoint"
            checkpointing.check_architecture(saved.get("architecture"), checkpointing.architecture(self.model_args),
                                             f"{flag} {self.start_from}")
            saved_impl = (saved.get("architecture") or {}).get("transformer_impl") or "local"
            impl = cfg.model.transformer_impl
            if saved_impl != impl and not (self.weights_only or cfg.checkpoint.no_load_optim):
                # Weights load across layer kinds (the local spec's key map, fresh TE extra
                # state); the distributed optimizer's flat state follows each kind's parameter order.
                raise ConfigError(
                    f"{flag} {self.start_from} was trained with --transformer-impl {saved_impl} and this "
                    f"run uses {impl}: resume with --transformer-impl {saved_impl}, or "
                    "load the weights alone (--no-load-optim)")
            # Details without training flags (e.g. of an imported Hugging Face model) come from it.
            details = {k: saved["architecture"][k] for k in CHECKPOINT_DETAIL_FIELDS if k in saved["architecture"]}
            self.model_args = dataclasses.replace(self.model_args, **details)

    def _alignment_words(self, tokenizer):
        """The alignment table's words (None when no stage aligns); token-id forms (En-Clone)
        are checked against the model's vocabulary."""
        cfg, align = self.config, self.config.alignment
        if align.alignment_table:  # token-id forms (En-Clone) must fit the model's vocabulary
            read_table(align.alignment_table, max_token_id=self.model_args.vocab_size)
        if not self.plan.uses_alignment:
            return None
        return AlignmentWordDataset.from_table(
            align.alignment_table, tokenizer, languages=align.alignment_languages,
            words_per_batch=align.alignment_words_per_batch, seq_length=cfg.model.seq_length,
            seed=cfg.schedule.seed, held_out_fraction=align.alignment_held_out_fraction,
        )

    def _build(self, tokenizer):
        """Everything after the --save lock: model, optimizer, checkpoint, data, logs."""
        sched = self.config.schedule
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.num_lm_microbatches = sched.global_batch_size // (sched.micro_batch_size * self.dp_size)
        self._build_model()
        self._build_optimizer()
        self.alignment = (
            AlignmentPass(self.chunks, self.config.alignment.alignment_temperature,
                          self.config.alignment.alignment_loss_weight,
                          max_forms_per_rank=self.word_dataset.max_forms_per_rank(self.dp_size))
            if self.plan.uses_alignment else None
        )
        consumed = self._load_start()
        self._build_data(tokenizer, consumed)
        self.logger = TrainingLogger(self.config.logging.tensorboard_dir, self.config.logging.log_json,
                                     start_iteration=self.iteration)

    def _build_model(self):
        """The model chunks (megatron-core DDP) and the schedule's hooks into them."""
        par = self.config.parallel
        self.chunks = build_model(self.model_args, use_distributed_optimizer=par.use_distributed_optimizer,
                                  overlap_grad_reduce=par.overlap_grad_reduce,
                                  overlap_param_gather=par.overlap_param_gather)
        config = self.chunks[0].config
        config.finalize_model_grads_func = finalize_model_grads
        config.no_sync_func = self.chunks[0].no_sync
        if par.overlap_grad_reduce:  # as Megatron-LM's training.py wires it
            config.grad_sync_func = self.chunks[0].start_grad_sync

    def _build_optimizer(self):
        """megatron-core's optimizer and learning-rate scheduler."""
        cfg = self.config
        sched, par, model = cfg.schedule, cfg.parallel, cfg.model
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam", lr=sched.lr, min_lr=sched.min_lr, weight_decay=sched.weight_decay,
                adam_beta1=sched.adam_beta1, adam_beta2=sched.adam_beta2, adam_eps=sched.adam_eps,
                clip_grad=sched.clip_grad, bf16=model.bf16, fp16=model.fp16,
                loss_scale=sched.loss_scale, initial_loss_scale=sched.initial_loss_scale,
                use_distributed_optimizer=par.use_distributed_optimizer,
                overlap_param_gather=par.overlap_param_gather,
            ),
            self.chunks,
        )
        # fp16: the optimizer unscales gradients by its loss scale, so the schedule (and the
        # alignment pass) must scale the loss by it (Megatron-LM's training.py wires the same).
        self.chunks[0].config.grad_scale_func = self.optimizer.scale_loss
        total = self.plan.total_iters
        override = cfg.checkpoint.override_opt_param_scheduler
        self.scheduler = OptimizerParamScheduler(
            self.optimizer, init_lr=0.0, max_lr=sched.lr, min_lr=sched.min_lr,
            lr_warmup_steps=self.warmup_iters, lr_decay_steps=sched.lr_decay_iters or total,
            lr_decay_style=sched.lr_decay_style, start_wd=sched.weight_decay, end_wd=sched.weight_decay,
            wd_incr_steps=total, wd_incr_style="constant",
            override_opt_param_scheduler=override,
            use_checkpoint_opt_param_scheduler=not override,
        )

    def _load_start(self) -> int:
        """Load the checkpoint to start from (or the En-Clone initialisation); sets the
        iteration and the alignment sampler's position, returns the LM samples consumed."""
        cfg = self.config
        self.iteration, consumed, self.alignment_steps = 0, 0, 0
        if self.start_from and self.weights_only:  # fine-tuning starts: weights only, iteration 0
            checkpointing.load_checkpoint(self.start_from, self.chunks, None, None,
                                          iteration=self.load_iteration, load_rng=False)
            self.optimizer.reload_model_params()
        elif self.start_from:
            # Megatron-LM's semantics: --no-load-optim keeps the schedule and the iteration.
            load_optimizer = not cfg.checkpoint.no_load_optim
            run_state = checkpointing.load_checkpoint(
                self.start_from, self.chunks, self.optimizer if load_optimizer else None, self.scheduler,
                iteration=self.load_iteration, load_rng=not cfg.checkpoint.no_load_rng,
            )
            if not load_optimizer:
                self.optimizer.reload_model_params()
            self.iteration = run_state["iteration"]
            consumed = run_state.get("consumed_samples", 0)
            self.alignment_steps = run_state.get("alignment_steps", 0)
        elif cfg.alignment.enclone_init:
            enclone_init.apply(self.chunks, cfg.alignment.enclone_mapping)
            self.optimizer.reload_model_params()
        return consumed

    def _build_data(self, tokenizer, consumed: int):
        """The train split's LM batches from sample ``consumed`` on, and the validation sets
        (one dataset per source: _validation_sets)."""
        cfg = self.config
        gbs = cfg.schedule.global_batch_size
        total = self.plan.total_iters
        if self.finetune_data:
            train = self.finetune_data.train
            train.extend_to(total * gbs)
        else:
            train, _, _ = build_datasets(cfg, tokenizer, [total * gbs, 1, 1])
        self.lm_batches = LMBatches(train, cfg.schedule.micro_batch_size, self.dp_rank, self.dp_size, consumed,
                                    num_workers=arguments.num_workers(cfg))
        self.validation = self._validation_sets(tokenizer) if cfg.logging.eval_interval else {}

    # -- setup helpers ------------------------------------------------------------------------

    def _lock_save_directory(self):
        """Rank 0 takes --save's lock; every rank stops if it cannot."""
        save = self.config.checkpoint.save
        if not save:
            return None
        lock, error = SaveLock(save), [None]
        if dist.get_rank() == 0:
            try:
                lock.acquire()
            except ConfigError as problem:
                error[0] = str(problem)
        dist.broadcast_object_list(error, src=0)
        if error[0]:
            raise ConfigError(error[0])
        return lock

    def _validation_sets(self, tokenizer):
        if self.finetune_data:
            return self.finetune_data.validation
        cfg = self.config
        prefixes = data_path.data_prefixes(cfg.data.data_path)
        sets = {}
        samples = cfg.logging.eval_iters * cfg.schedule.global_batch_size
        for name, prefix in zip(data_path.prefix_names(prefixes), prefixes):
            _, valid, _ = build_datasets(cfg, tokenizer, [1, samples, 0], [prefix])
            if valid is not None:
                sets[name] = valid
        return sets

    # -- one step ----------------------------------------------------------------------------

    def _schedule_shape(self) -> dict:
        """What the pipeline schedule sizes its [s, b, h] messages by: packed microbatches on
        Transformer Engine layers travel as one THD row of b * s tokens."""
        seq_length, micro = self.config.model.seq_length, self.config.schedule.micro_batch_size
        if self.config.finetune.sft_packing and self.config.model.transformer_impl == "transformer_engine":
            return {"seq_length": seq_length * micro, "micro_batch_size": 1}
        return {"seq_length": seq_length, "micro_batch_size": micro}

    def _step(self, stage: str):
        """One training step. Returns this rank's (LM loss sum, token count) of the step and the
        alignment statistics, both on the device (read at log time: no host sync here), and the
        optimizer's grad norm."""
        cfg, par = self.config, self.config.parallel
        microbatches = self.lm_batches.next_step(self.num_lm_microbatches)  # on the device
        lm_tokens = torch.stack([m["loss_mask"].sum() for m in microbatches]).sum().float()
        dist.all_reduce(lm_tokens, group=parallel_state.get_data_parallel_group())
        aligning = self.plan.aligns(stage)
        alignment = self.alignment
        if aligning:
            words = self.word_dataset.batch(self.alignment_steps, self.dp_rank, self.dp_size)
            rows = cfg.schedule.micro_batch_size if par.pipeline_model_parallel_size > 1 else None
            packed = alignment_microbatch(
                words, rows or words.tokens.shape[0], cfg.model.seq_length, alignment.attention_path,
                par.tensor_model_parallel_size if par.sequence_parallel else 1, bool(cfg.model.fp8_format))
            # With --overlap-grad-reduce megatron's DDP issues a bucket's reduction once the
            # last microbatch's gradients have all arrived: that must be an LM microbatch (the
            # alignment one leaves an untied output layer without a gradient).
            microbatches.insert(0 if par.overlap_grad_reduce else len(microbatches), packed)

        def forward_step(data_iterator, model):
            batch = next(data_iterator)
            if is_alignment_batch(batch):
                return alignment.forward_step(batch, model)
            return _lm_forward_step(batch, model)

        for chunk in self.chunks:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        if aligning:
            alignment.begin_step(1, total_lm_tokens=lm_tokens)
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(microbatches), model=self.chunks,
            num_microbatches=len(microbatches), **self._schedule_shape(), forward_only=False,
        )
        statistics = None
        if aligning:
            statistics = alignment.end_step()
            self.alignment_steps += 1
        _, grad_norm, _ = self.optimizer.step()
        self.scheduler.step(1)
        return _lm_sums(outputs), statistics, grad_norm

    def _evaluate(self):
        losses = {}
        for name, dataset in self.validation.items():
            batches = LMBatches(dataset, self.config.schedule.micro_batch_size, self.dp_rank, self.dp_size)
            sums = torch.zeros(2, device=runtime.device())
            for _ in range(self.config.logging.eval_iters):
                micro = batches.next_step(self.num_lm_microbatches)
                outputs = get_forward_backward_func()(
                    forward_step_func=lambda it, model: _lm_forward_step(next(it), model),
                    data_iterator=iter(micro), model=self.chunks, num_microbatches=len(micro),
                    **self._schedule_shape(), forward_only=True,
                )
                sums += _lm_sums(outputs)
            losses[name] = _global_mean(sums)
        return losses

    @contextlib.contextmanager
    def _parameters_gathered(self):
        """With --overlap-param-gather the optimizer step leaves the parameter all-gather to the
        next forward's pre-hooks; saving or evaluating needs them now (Megatron-LM's
        disable_forward_pre_hook / enable_forward_pre_hook)."""
        overlapped = [c for c in self.chunks if getattr(c, "use_forward_hook", False)]
        for chunk in overlapped:
            chunk.disable_forward_pre_hook()
        try:
            yield
        finally:
            for chunk in overlapped:
                chunk.enable_forward_pre_hook()

    def _save(self, stage: str):
        with self._parameters_gathered():
            self._save_gathered(stage)

    def _save_gathered(self, stage: str):
        checkpointing.save_checkpoint(
            self.config.checkpoint.save, self.iteration, self.chunks, self.optimizer, self.scheduler,
            run_state={
                "consumed_samples": self.lm_batches.consumed_samples,
                "alignment_steps": self.alignment_steps,
                "stage": stage,
                "architecture": checkpointing.architecture(self.model_args),
                "config": checkpointing.config_record(self.config),
            },
        )
        if self.logger.writes:
            print(f"saved checkpoint at iteration {self.iteration} (stage {stage}) to {self.config.checkpoint.save}", flush=True)

    # -- the loop ----------------------------------------------------------------------------

    def train(self) -> int:
        cfg = self.config
        sched, ckpt, log = cfg.schedule, cfg.checkpoint, cfg.logging
        signals.install()
        total = self.plan.total_iters
        stage = self.plan.stage(self.iteration) if self.iteration else "start"
        start = self.iteration
        if start >= total and self.logger.writes:
            print(f"the run is already complete at iteration {start} of {total} (--load {ckpt.load}); "
                  "nothing to do", flush=True)
        interval_tokens, interval_start = 0, time.time()
        watch = _NonFiniteWatch()
        signalled = False
        for chunk in self.chunks:
            chunk.train()
        while self.iteration < total:
            self.iteration += 1
            stage = self.plan.stage(self.iteration)
            lm_sums, statistics, grad_norm = self._step(stage)
            interval_tokens += sched.global_batch_size * cfg.model.seq_length
            watch.add(self.iteration, stage, lm_sums, statistics, grad_norm)
            log_now = self.iteration % log.log_interval == 0 or self.iteration == total
            if log_now:
                watch.check()  # the interval's one host synchronisation
                seconds = time.time() - interval_start
                self.logger.log({
                    "iteration": self.iteration, "total_iters": total, "stage": stage,
                    "lm_loss": _global_mean(lm_sums, empty=None),
                    **(statistics.as_log_dict() if statistics is not None else
                       {"alignment_loss": None, "alignment_similarity": None}),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "tokens_per_sec": interval_tokens / max(seconds, 1e-9),
                    "elapsed_s": self.logger.elapsed(),
                    "consumed_samples": self.lm_batches.consumed_samples,
                })
                interval_tokens, interval_start = 0, time.time()
            if log.eval_interval and self.iteration % log.eval_interval == 0:
                with self._parameters_gathered():
                    self.logger.log_validation(self.iteration, self._evaluate())
                for chunk in self.chunks:
                    chunk.train()
            # The ranks agree on a signal at log iterations only (the check is a host sync).
            signalled = log_now and signals.exit_requested()
            stop = signalled or (log.exit_interval and self.iteration % log.exit_interval == 0)
            # The last iteration of a stage followed by another (e.g. the end of pre-alignment)
            # is always saved: the pre-aligned model is a result of its own.
            stage_ends = self.iteration < total and self.plan.stage(self.iteration + 1) != stage
            interval = ckpt.save_interval and self.iteration % ckpt.save_interval == 0
            if ckpt.save and (stop or interval or stage_ends):
                watch.check()  # never save a model that went non-finite
                self._save(stage)
            if stop:
                if self.logger.writes:
                    print(f"exiting at iteration {self.iteration} as requested", flush=True)
                break
        else:
            watch.check()
            # Saved unless just saved by the interval, or nothing ran (a relaunched finished run
            # is a no-op: its last checkpoint is never rewritten).
            if ckpt.save and self.iteration > start and not (ckpt.save_interval and self.iteration % ckpt.save_interval == 0):
                self._save(stage)
        self.logger.close()
        self.lm_batches.close()
        if self.alignment is not None:
            self.alignment.remove()  # the capture hooks end with the run
        if signalled:  # saved: end the process, also a demo's or a study's sequence of runs
            raise signals.ExitRequested()
        return self.iteration


def run(config: TrainConfig) -> int:
    """Train as ``config`` says (build it with `arguments.config` or `arguments.parse_config`);
    returns the last iteration. The process groups are shut down in any case."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"loop.run takes a TrainConfig (training/arguments.config or parse_config), "
                        f"not {type(config).__name__}")
    trainer = None
    try:
        trainer = Trainer(config)
        return trainer.train()
    finally:
        if trainer is not None and trainer.save_lock is not None:
            trainer.save_lock.release()
        runtime.shutdown()
