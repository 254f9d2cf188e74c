"""The training configuration's flags and checks.

The command line of `megatron_prealign.pretrain` uses Megatron-LM's flag names where Megatron-LM
has the concept, new flags for what PreAlign adds; the parser holds every flag's default. Two
ways to a `TrainConfig` (training/config.py), both through `config`: `parse_config(argv)` from
the command line and `config(**settings)` from Python (settings named as the flags, with
underscores). Both fill in the defaults, resolve --model-size, and check what the flags alone
decide (required flags, choices, types); `validate(config, world_size)` adds the checks that
need the world size and the files, before any compute. Every error is a ConfigError naming the
flag to change."""

import argparse
import functools
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from megatron_prealign.data.data_path import data_prefixes
from megatron_prealign.data.tokenizer import add_tokenizer_args
from megatron_prealign.errors import ConfigError
from megatron_prealign.model_sizes import FAMILIES, MODEL_SIZES
from megatron_prealign.training.config import SECTIONS, TrainConfig

# model, runtime and lm_dataset (torch, megatron-core) are imported inside the functions that use
# them: --help and a wrong flag answer before those imports.
if TYPE_CHECKING:
    from megatron_prealign.model import ModelArgs


def _group(parser: argparse.ArgumentParser, section: str):
    """The parser group of a TrainConfig section (config.SECTIONS names its title)."""
    return parser.add_argument_group(SECTIONS[section][1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prealign-pretrain",
        description="PreAlign pretraining on megatron-core: pre-alignment, codeswitched "
        "pretraining and the paper's baselines as configurations of one loop.",
    )
    model = _group(parser, "model")
    model.add_argument("--model-size", choices=sorted(MODEL_SIZES), help="named size; explicit flags override")
    model.add_argument("--model-family", choices=FAMILIES, default="gpt2")
    model.add_argument("--num-layers", type=int)
    model.add_argument("--hidden-size", type=int)
    model.add_argument("--num-attention-heads", type=int)
    model.add_argument("--num-query-groups", type=int)
    model.add_argument("--ffn-hidden-size", type=int)
    model.add_argument("--seq-length", type=int, required=True)
    model.add_argument("--max-position-embeddings", type=int)
    model.add_argument("--hidden-dropout", type=float, default=0.1)
    model.add_argument("--attention-dropout", type=float, default=0.1)
    model.add_argument("--init-method-std", type=float, default=0.02)
    model.add_argument("--transformer-impl", choices=["local", "transformer_engine"], default="local")
    model.add_argument("--bf16", action="store_true")
    model.add_argument("--fp16", action="store_true")
    model.add_argument("--fp8-format", choices=["hybrid", "e4m3"])
    model.add_argument("--recompute-granularity", choices=["full", "selective"])
    model.add_argument("--recompute-method", choices=["uniform", "block"])
    model.add_argument("--recompute-num-layers", type=int)
    model.add_argument("--padded-vocab-size", type=int, help="model vocabulary (default: tokenizer's, x2 for En-Clone)")

    parallel = _group(parser, "parallel")
    parallel.add_argument("--tensor-model-parallel-size", type=int, default=1)
    parallel.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    parallel.add_argument("--sequence-parallel", action="store_true")
    parallel.add_argument("--use-distributed-optimizer", action="store_true")
    parallel.add_argument("--overlap-grad-reduce", action="store_true",
                          help="overlap the data-parallel gradient reduction with the backward pass")
    parallel.add_argument("--overlap-param-gather", action="store_true",
                          help="overlap the distributed optimizer's parameter all-gather with the "
                          "next forward pass (needs --use-distributed-optimizer and --overlap-grad-reduce)")
    parallel.add_argument("--distributed-backend", choices=["nccl", "gloo"],
                          help="default: nccl with CUDA, gloo on the CPU")
    parallel.add_argument("--distributed-timeout-minutes", type=float, default=10,
                          help="timeout of collectives (NCCL / gloo), as in Megatron-LM")

    optim = _group(parser, "schedule")
    optim.add_argument("--micro-batch-size", type=int, required=True)
    optim.add_argument("--global-batch-size", type=int, required=True)
    optim.add_argument("--train-iters", type=int,
                       help="pretraining / fine-tuning iterations (or --train-samples, --train-epochs)")
    optim.add_argument("--train-samples", type=int, help="train for this many sequences instead")
    optim.add_argument("--train-epochs", type=float,
                       help="--sft / --sft-packing: passes over the training records instead")
    optim.add_argument("--lr", type=float, default=3e-4)
    optim.add_argument("--min-lr", type=float, default=3e-5)
    optim.add_argument("--lr-decay-style", choices=["cosine", "linear", "constant"], default="cosine")
    optim.add_argument("--lr-warmup-iters", type=int, default=0)
    optim.add_argument("--lr-warmup-fraction", type=float,
                       help="warmup as a share of --lr-decay-iters (x-LLaMA: 0.03)")
    optim.add_argument("--lr-decay-iters", type=int, help="default: all iterations of all stages")
    optim.add_argument("--weight-decay", type=float, default=0.1)
    optim.add_argument("--adam-beta1", type=float, default=0.9)
    optim.add_argument("--adam-beta2", type=float, default=0.95)
    optim.add_argument("--adam-eps", type=float, default=1e-8)
    optim.add_argument("--clip-grad", type=float, default=1.0)
    optim.add_argument("--initial-loss-scale", type=float, default=2.0**32,
                       help="--fp16: starting dynamic loss scale (Megatron-LM's default)")
    optim.add_argument("--loss-scale", type=float, help="--fp16: a constant loss scale instead of the dynamic one")
    optim.add_argument("--seed", type=int, default=1234)

    data = _group(parser, "data")
    data.add_argument("--data-path", nargs="+", required=True,
                      help="prefixes, or 'weight prefix weight prefix ...' for a blend")
    data.add_argument("--split", default="969,30,1")
    data.add_argument("--data-cache-path")
    data.add_argument("--num-workers", type=int,
                      help="DataLoader processes reading LM batches ahead (default: 2 on CUDA, 0 on "
                      "the CPU, where they would compete with the compute for cores)")
    data.add_argument("--codeswitch-mode", choices=["input-only", "original"], default="input-only",
                      help="input-only honours the stored loss masks (switched words are not "
                      "targets); original ignores them (every token is a target); with "
                      "--codeswitch-online: whether the switched tokens are targets")
    data.add_argument("--codeswitch-online", action="store_true",
                      help="codeswitch each sample when it is read (fresh switches every epoch) "
                      "with --alignment-table, on data preprocessed with --codeswitch-mode none")
    data.add_argument("--codeswitch-languages", nargs="+",
                      help="--codeswitch-online: table languages to switch into (default: all)")
    data.add_argument("--codeswitch-ratio", type=float,
                      help="--codeswitch-online: probability that an eligible word switches "
                      "(default 0.05)")
    add_tokenizer_args(parser)

    align = _group(parser, "alignment")
    align.add_argument("--alignment-table", help="alignment table (JSON lines) for the alignment words")
    align.add_argument("--alignment-languages", nargs="+", help="languages of the table to align (default: all)")
    align.add_argument("--prealign-iters", type=int, default=0,
                       help="pre-alignment iterations before pretraining (PreAlign)")
    align.add_argument("--alignment-during-pretraining", action="store_true",
                       help="the alignment loss throughout pretraining (on-the-fly baseline)")
    align.add_argument("--postalign-iters", type=int, default=0,
                       help="alignment iterations after pretraining (post-alignment baseline)")
    align.add_argument("--alignment-temperature", type=float, default=0.1)
    align.add_argument("--alignment-loss-weight", type=float, default=1.0)
    align.add_argument("--alignment-words-per-batch", type=int, default=64)
    align.add_argument("--alignment-held-out-fraction", type=float, default=0.0,
                       help="share of table words kept out of alignment (for seen/unseen evaluation)")
    align.add_argument("--enclone-mapping", help="En-Clone id mapping (tools/make_enclone.py)")
    align.add_argument("--enclone-init", action="store_true",
                       help="perfect-alignment initialisation: clone embeddings copied from English")

    finetune = _group(parser, "finetune")
    finetune.add_argument("--sft", action="store_true",
                          help="instruction data (tools/build_instruction_data.py): one record a "
                          "sequence, right-padded, loss on the responses only; stage 'finetune'")
    finetune.add_argument("--sft-packing", action="store_true",
                          help="like --sft, several records a sequence (no attention across them)")
    finetune.add_argument("--pretrained-checkpoint",
                          help="start from these weights (any TP/PP layout): new optimizer and "
                          "scheduler, iteration 0; ignored once --load holds a checkpoint")
    finetune.add_argument("--finetune", action="store_true",
                          help="load only the weights of --load (new optimizer, scheduler, "
                          "iteration 0), as Megatron-LM's --finetune")

    ckpt = _group(parser, "checkpoint")
    ckpt.add_argument("--save")
    ckpt.add_argument("--save-interval", type=int,
                      help="also saved: the last iteration of every stage and of the run")
    ckpt.add_argument("--load")
    ckpt.add_argument("--load-iteration", type=int,
                      help="resume from this iteration of --load instead of the latest")
    ckpt.add_argument("--no-load-optim", action="store_true",
                      help="do not load the optimizer state (the schedule and iteration are kept)")
    ckpt.add_argument("--no-load-rng", action="store_true")
    ckpt.add_argument("--override-opt-param-scheduler", action="store_true",
                      help="take the learning-rate schedule's values from the flags, not the checkpoint")

    log = _group(parser, "logging")
    log.add_argument("--log-interval", type=int, default=1)
    log.add_argument("--tensorboard-dir")
    log.add_argument("--log-json", help="one JSON object per logged iteration")
    log.add_argument("--eval-interval", type=int, default=0, help="0: no periodic validation")
    log.add_argument("--eval-iters", type=int, default=2)
    log.add_argument("--exit-interval", type=int, help="stop (after saving) at this iteration")
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.lru_cache(maxsize=1)
def _actions() -> Dict[str, argparse.Action]:
    """Setting name -> the parser's action (flag, default, type, choices, nargs)."""
    return {action.dest: action for action in build_parser()._actions if action.dest != "help"}


def defaults() -> Dict[str, Any]:
    """Every setting's default, as the command line gives it (the parser's)."""
    return {name: action.default for name, action in _actions().items()}


def _checked(name: str, value: Any, action: argparse.Action) -> Any:
    """A Python value for ``name`` as the command line would have produced it."""
    if value is None:
        return None
    if action.nargs == "+":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"{_flag(name)} takes a list, not {value!r}")
        value = list(value)
        if not value:
            raise ConfigError(f"{_flag(name)} needs at least one value")
        return [_checked_item(name, v, action) for v in value]
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{_flag(name)} is on or off (True / False), not {value!r}")
        return value
    return _checked_item(name, value, action)


def _checked_item(name: str, value: Any, action: argparse.Action) -> Any:
    kind = action.type or str
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{_flag(name)} takes {kind.__name__}, not {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{_flag(name)} {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def config(**settings: Any) -> TrainConfig:
    """A TrainConfig from settings named as the flags (``num_layers=2``, ``data_path=[...]``):
    the parser's defaults for the others, the --model-size preset's sizes where not given, and
    the command line's flag checks (required, choices, types). `parse_config` ends here too, so
    the same settings give the same config either way."""
    actions = _actions()
    unknown = sorted(set(settings) - set(actions))
    if unknown:
        raise ConfigError(f"unknown training settings: {', '.join(unknown)} (no such flags: "
                          f"{', '.join(_flag(n) for n in unknown)})")
    values = {**defaults(), **settings}
    for name, action in actions.items():
        values[name] = _checked(name, values[name], action)
    missing = [_flag(n) for n, a in actions.items() if a.required and values[n] is None]
    if missing:
        raise ConfigError(f"the following settings are required: {', '.join(missing)}")
    preset = MODEL_SIZES.get(values["model_size"], {})
    for name in ("num_layers", "hidden_size", "num_attention_heads"):
        if values[name] is None:
            values[name] = preset.get(name)
    missing = [_flag(n) for n in ("num_layers", "hidden_size", "num_attention_heads") if values[n] is None]
    if missing:
        raise ConfigError(f"give --model-size or {', '.join(missing)}")
    return TrainConfig.from_flat(values)


def parse_config(argv: Optional[List[str]] = None) -> TrainConfig:
    """The TrainConfig of a command line (``--help`` and argparse's errors exit as usual)."""
    return config(**vars(build_parser().parse_args(argv)))


def replace(cfg: TrainConfig, **settings: Any) -> TrainConfig:
    """``cfg`` with some settings changed (flag names), built and checked as `config`."""
    return config(**{**cfg.flat(), **settings})


def config_from_checkpoint(directory: str) -> TrainConfig:
    """The TrainConfig a checkpoint (an ``iter_N`` directory) was saved by, from its recorded
    settings (checkpointing.config_record); settings of flags this version lacks are dropped,
    flags it does not record take their defaults. ConfigError if it records none."""
    from megatron_prealign.training import checkpointing

    saved = checkpointing.saved_config(directory)
    if saved is None:
        raise ConfigError(f"{directory} records no training settings (saved before they were kept)")
    return config(**{name: value for name, value in saved.items() if name in _actions()})


def model_args(cfg: TrainConfig, vocab_size: int) -> "ModelArgs":
    from megatron_prealign.model import ModelArgs

    m, p = cfg.model, cfg.parallel
    return ModelArgs(
        vocab_size=vocab_size,
        seq_length=m.seq_length,
        family=m.model_family,
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups,
        ffn_hidden_size=m.ffn_hidden_size,
        max_position_embeddings=m.max_position_embeddings,
        hidden_dropout=m.hidden_dropout,
        attention_dropout=m.attention_dropout,
        init_method_std=m.init_method_std,
        transformer_impl=m.transformer_impl,
        bf16=m.bf16,
        fp16=m.fp16,
        fp8_format=m.fp8_format,
        sequence_parallel=p.sequence_parallel,
        recompute_granularity=m.recompute_granularity,
        recompute_method=m.recompute_method,
        recompute_num_layers=m.recompute_num_layers,
        tensor_model_parallel_size=p.tensor_model_parallel_size,
        pipeline_model_parallel_size=p.pipeline_model_parallel_size,
    )


def num_workers(cfg: TrainConfig) -> int:
    from megatron_prealign import runtime

    if cfg.data.num_workers is not None:
        return cfg.data.num_workers
    return 2 if runtime.cuda_in_use() else 0


def _check_positive(cfg: TrainConfig):
    values = cfg.flat()
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "micro_batch_size",
                 "global_batch_size", "seq_length", "log_interval"):
        if values[name] < 1:
            raise ConfigError(f"{_flag(name)} must be >= 1, not {values[name]}")
    for name in ("save_interval", "eval_interval", "exit_interval", "max_position_embeddings"):
        if values[name] is not None and values[name] < 0:
            raise ConfigError(f"{_flag(name)} must be >= 0")
    log = cfg.logging
    if log.eval_interval and log.eval_iters < 1:
        raise ConfigError(f"--eval-iters must be >= 1 with --eval-interval, not {log.eval_iters}")
    if cfg.parallel.distributed_timeout_minutes <= 0:
        raise ConfigError("--distributed-timeout-minutes must be > 0")
    for name in ("loss_scale", "initial_loss_scale"):
        value = values[name]
        if value is not None and value <= 0:
            raise ConfigError(f"{_flag(name)} must be > 0, not {value}")
    if cfg.schedule.loss_scale is not None and not cfg.model.fp16:
        raise ConfigError("--loss-scale applies to --fp16 only (bf16 and fp32 need no loss scaling)")
    split_text = cfg.data.split
    try:
        split = [float(part) for part in split_text.replace("/", ",").split(",")]
    except ValueError:
        split = []
    if not split or len(split) > 3 or any(w < 0 for w in split) or sum(split) <= 0 or split[0] <= 0:
        raise ConfigError(f"--split {split_text!r}: give up to three non-negative weights "
                          "(train,validation,test) with a positive train weight, e.g. 969,30,1")


def validate(cfg: TrainConfig, world_size: int):
    """Checks that need no model or data loaded. Raises ConfigError naming the flag."""
    _check_positive(cfg)
    from megatron_prealign.data.lm_dataset import check_indexed_files
    from megatron_prealign.runtime import validate_layout

    par, sched, data, align = cfg.parallel, cfg.schedule, cfg.data, cfg.alignment
    ckpt, tok = cfg.checkpoint, cfg.tokenizer
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    validate_layout(world_size, tp, pp)
    dp = world_size // (tp * pp)
    if sched.global_batch_size % (sched.micro_batch_size * dp):
        raise ConfigError(
            f"--global-batch-size {sched.global_batch_size} must be a multiple of "
            f"--micro-batch-size {sched.micro_batch_size} x data-parallel size {dp}"
        )
    lengths = [f for f in ("train_iters", "train_samples", "train_epochs") if getattr(sched, f) is not None]
    if len(lengths) > 1:
        raise ConfigError("give one of --train-iters, --train-samples, --train-epochs")
    if sched.train_epochs is not None and not cfg.instruction_data:
        raise ConfigError("--train-epochs needs --sft or --sft-packing (instruction data)")
    counts = {**{f: getattr(sched, f) for f in lengths},
              "prealign_iters": align.prealign_iters, "postalign_iters": align.postalign_iters}
    for name, value in counts.items():
        if not value >= 0:
            raise ConfigError(f"{_flag(name)} must be >= 0")
    if sched.train_epochs is None:  # with --train-epochs: once the data is read
        validate_schedule(cfg, train_iters(cfg))
    validate_finetuning(cfg)
    validate_online_codeswitch(cfg)
    aligning = cfg.aligning
    if aligning and not align.alignment_table:
        raise ConfigError(
            "--prealign-iters / --postalign-iters / --alignment-during-pretraining need "
            "--alignment-table"
        )
    if align.alignment_table and not aligning and not data.codeswitch_online:
        raise ConfigError(
            "--alignment-table is given but no stage aligns: add --prealign-iters N (PreAlign), "
            "--alignment-during-pretraining or --postalign-iters N, or drop the table"
        )
    if align.alignment_table and not os.path.isfile(align.alignment_table):
        raise ConfigError(f"--alignment-table {align.alignment_table} does not exist")
    if align.alignment_temperature <= 0:
        raise ConfigError("--alignment-temperature must be > 0")
    if align.alignment_words_per_batch % dp:
        raise ConfigError(
            f"--alignment-words-per-batch {align.alignment_words_per_batch} must be divisible by "
            f"the data-parallel size {dp}"
        )
    if align.enclone_init and not align.enclone_mapping:
        raise ConfigError("--enclone-init needs --enclone-mapping (written by tools/make_enclone.py)")
    if align.enclone_mapping and not os.path.isfile(align.enclone_mapping):
        raise ConfigError(f"--enclone-mapping {align.enclone_mapping} does not exist")
    if par.overlap_param_gather and not (par.use_distributed_optimizer and par.overlap_grad_reduce):
        raise ConfigError("--overlap-param-gather needs --use-distributed-optimizer and --overlap-grad-reduce")
    if data.num_workers is not None and data.num_workers < 0:
        raise ConfigError("--num-workers must be >= 0")
    if ckpt.save_interval and not ckpt.save:
        raise ConfigError("--save-interval needs --save DIR")
    for prefix in data_prefixes(data.data_path):
        for suffix in (".bin", ".idx"):
            if not os.path.isfile(prefix + suffix):
                raise ConfigError(f"--data-path: {prefix + suffix} does not exist (give the prefix without .bin/.idx)")
        check_indexed_files(prefix)
    if tok.tokenizer_model and not os.path.exists(tok.tokenizer_model):
        raise ConfigError(f"--tokenizer-model {tok.tokenizer_model} does not exist")
    # A --load that does not exist yet but is the --save directory is a fresh start (Megatron-LM).
    if ckpt.load and not os.path.isdir(ckpt.load) and not fresh_start_directory(cfg):
        raise ConfigError(f"--load {ckpt.load} is not a directory")
    if ckpt.load_iteration is not None and not ckpt.load:
        raise ConfigError("--load-iteration needs --load")


def validate_online_codeswitch(cfg: TrainConfig):
    """--codeswitch-online and its flags (the table's languages and the data's masks included)."""
    data, table = cfg.data, cfg.alignment.alignment_table
    if not data.codeswitch_online:
        for name in ("codeswitch_languages", "codeswitch_ratio"):
            if getattr(data, name) is not None:
                raise ConfigError(f"{_flag(name)} applies to --codeswitch-online only; "
                                  "preprocessed codeswitching takes it in tools/preprocess_data.py")
        return
    if not table:
        raise ConfigError("--codeswitch-online draws its words from --alignment-table: give the table "
                          "(tools/build_alignment_table.py)")
    if not os.path.isfile(table):
        raise ConfigError(f"--alignment-table {table} does not exist")
    if data.codeswitch_ratio is not None and not 0.0 <= data.codeswitch_ratio <= 1.0:
        raise ConfigError(f"--codeswitch-ratio must be in [0, 1], not {data.codeswitch_ratio}")
    if cfg.instruction_data:
        raise ConfigError("--codeswitch-online applies to pretraining data, not --sft / --sft-packing")
    from megatron_prealign.data.alignment_table import read_table, table_languages
    from megatron_prealign.data.online_codeswitch import check_plain_data

    available = table_languages(read_table(table))
    missing = [lang for lang in data.codeswitch_languages or () if lang not in available]
    if missing:
        raise ConfigError(f"--codeswitch-languages {' '.join(missing)} not in --alignment-table "
                          f"{table} (it has: {', '.join(available) or 'no translations'})")
    check_plain_data(data_prefixes(data.data_path))


def fresh_start_directory(cfg: TrainConfig) -> bool:
    """--load names the --save directory and it does not exist yet: nothing to resume."""
    load, save = cfg.checkpoint.load, cfg.checkpoint.save
    return bool(load and save and not os.path.exists(load) and os.path.abspath(load) == os.path.abspath(save))


def train_iters(cfg: TrainConfig, rows_per_run: Optional[int] = None) -> int:
    """Iterations of the train stage: --train-iters, or --train-samples / the sequences of
    --train-epochs (``rows_per_run``) over the global batch, rounded up."""
    sched = cfg.schedule
    samples = sched.train_samples if sched.train_samples is not None else rows_per_run
    if samples is not None:
        return -(-samples // sched.global_batch_size)
    return sched.train_iters or 0


def validate_schedule(cfg: TrainConfig, train_iters: int) -> int:
    """Checks of the iteration counts; returns the warmup iterations."""
    sched, align = cfg.schedule, cfg.alignment
    total = align.prealign_iters + train_iters + align.postalign_iters
    if total < 1:
        raise ConfigError("nothing to train: --train-iters (or --train-samples / --train-epochs), "
                         "--prealign-iters and --postalign-iters are all 0")
    warmup = sched.lr_warmup_iters
    if sched.lr_warmup_fraction is not None:
        if not 0 <= sched.lr_warmup_fraction < 1:
            raise ConfigError("--lr-warmup-fraction must be in [0, 1)")
        if sched.lr_warmup_iters:
            raise ConfigError("give --lr-warmup-iters or --lr-warmup-fraction, not both")
        warmup = int(sched.lr_warmup_fraction * (sched.lr_decay_iters or total))
    if warmup >= (sched.lr_decay_iters or total):
        raise ConfigError(
            f"--lr-warmup-iters {warmup} must be smaller than --lr-decay-iters "
            f"(default: all {total} iterations of all stages)"
        )
    return warmup


def validate_finetuning(cfg: TrainConfig):
    ft, ckpt = cfg.finetune, cfg.checkpoint
    if ft.sft and ft.sft_packing:
        raise ConfigError("give --sft (one record a sequence) or --sft-packing (several), not both")
    align = cfg.alignment
    if cfg.instruction_data and (align.prealign_iters or align.postalign_iters or align.alignment_during_pretraining):
        raise ConfigError("--sft / --sft-packing fine-tune on instruction data: run the alignment "
                         "stages in a pretraining run first and pass its --save as "
                         "--pretrained-checkpoint")
    if cfg.instruction_data and cfg.data.codeswitch_mode != "input-only":
        raise ConfigError("--sft / --sft-packing always honour the stored loss masks; drop --codeswitch-mode")
    if ft.pretrained_checkpoint is not None:
        from megatron_prealign.training.checkpointing import complete_iterations

        if not os.path.isdir(ft.pretrained_checkpoint):
            raise ConfigError(f"--pretrained-checkpoint {ft.pretrained_checkpoint} is not a directory")
        if not complete_iterations(ft.pretrained_checkpoint):  # resume falls back to these too
            raise ConfigError(f"--pretrained-checkpoint {ft.pretrained_checkpoint} holds no "
                             "complete checkpoint (no iter_* directory with a finished save)")
    if ft.finetune and not (ckpt.load or ft.pretrained_checkpoint):
        raise ConfigError("--finetune needs --load DIR or --pretrained-checkpoint DIR (the weights to start from)")
