"""Command line of `megatron_prealign.pretrain`: Megatron-LM's flag names where Megatron-LM has
the concept, new flags for what PreAlign adds. `parse_args` validates everything that can be
checked before any compute and names the flag to change."""

import argparse
import os
from typing import TYPE_CHECKING, List, Optional

from megatron_prealign.data.data_path import data_prefixes
from megatron_prealign.data.tokenizer import add_tokenizer_args
from megatron_prealign.errors import ConfigError
from megatron_prealign.model_sizes import FAMILIES, MODEL_SIZES

# model, runtime and lm_dataset (torch, megatron-core) are imported inside the functions that use
# them: --help and a wrong flag answer before those imports.
if TYPE_CHECKING:
    from megatron_prealign.model import ModelArgs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prealign-pretrain",
        description="PreAlign pretraining on megatron-core: pre-alignment, codeswitched "
        "pretraining and the paper's baselines as configurations of one loop.",
    )
    model = parser.add_argument_group("model")
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

    parallel = parser.add_argument_group("parallelism")
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

    optim = parser.add_argument_group("optimisation")
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

    data = parser.add_argument_group("data")
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

    align = parser.add_argument_group("alignment (PreAlign)")
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

    finetune = parser.add_argument_group("fine-tuning (x-LLaMA instruction tuning)")
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

    ckpt = parser.add_argument_group("checkpointing")
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

    log = parser.add_argument_group("logging")
    log.add_argument("--log-interval", type=int, default=1)
    log.add_argument("--tensorboard-dir")
    log.add_argument("--log-json", help="one JSON object per logged iteration")
    log.add_argument("--eval-interval", type=int, default=0, help="0: no periodic validation")
    log.add_argument("--eval-iters", type=int, default=2)
    log.add_argument("--exit-interval", type=int, help="stop (after saving) at this iteration")
    return parser


def model_args(args: argparse.Namespace, vocab_size: int) -> "ModelArgs":
    from megatron_prealign.model import ModelArgs

    sizes = dict(MODEL_SIZES.get(args.model_size, {}))
    for name in ("num_layers", "hidden_size", "num_attention_heads"):
        if getattr(args, name) is not None:
            sizes[name] = getattr(args, name)
    missing = [f"--{n.replace('_', '-')}" for n in ("num_layers", "hidden_size", "num_attention_heads") if n not in sizes]
    if missing:
        raise ConfigError(f"give --model-size or {', '.join(missing)}")
    return ModelArgs(
        vocab_size=vocab_size,
        seq_length=args.seq_length,
        family=args.model_family,
        num_query_groups=args.num_query_groups,
        ffn_hidden_size=args.ffn_hidden_size,
        max_position_embeddings=args.max_position_embeddings,
        hidden_dropout=args.hidden_dropout,
        attention_dropout=args.attention_dropout,
        init_method_std=args.init_method_std,
        transformer_impl=args.transformer_impl,
        bf16=args.bf16,
        fp16=args.fp16,
        fp8_format=args.fp8_format,
        sequence_parallel=args.sequence_parallel,
        recompute_granularity=args.recompute_granularity,
        recompute_method=args.recompute_method,
        recompute_num_layers=args.recompute_num_layers,
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        **sizes,
    )


def num_workers(args: argparse.Namespace) -> int:
    from megatron_prealign import runtime

    if args.num_workers is not None:
        return args.num_workers
    return 2 if runtime.cuda_in_use() else 0


def _check_positive(args: argparse.Namespace):
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "micro_batch_size",
                 "global_batch_size", "seq_length", "log_interval"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, not {getattr(args, name)}")
    for name in ("save_interval", "eval_interval", "exit_interval", "max_position_embeddings"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    if args.eval_interval and args.eval_iters < 1:
        raise ConfigError(f"--eval-iters must be >= 1 with --eval-interval, not {args.eval_iters}")
    if args.distributed_timeout_minutes <= 0:
        raise ConfigError("--distributed-timeout-minutes must be > 0")
    for name in ("loss_scale", "initial_loss_scale"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, not {value}")
    if args.loss_scale is not None and not args.fp16:
        raise ConfigError("--loss-scale applies to --fp16 only (bf16 and fp32 need no loss scaling)")
    try:
        split = [float(part) for part in args.split.replace("/", ",").split(",")]
    except ValueError:
        split = []
    if not split or len(split) > 3 or any(w < 0 for w in split) or sum(split) <= 0 or split[0] <= 0:
        raise ConfigError(f"--split {args.split!r}: give up to three non-negative weights "
                          "(train,validation,test) with a positive train weight, e.g. 969,30,1")


def validate(args: argparse.Namespace, world_size: int):
    """Checks that need no model or data loaded. Raises ConfigError naming the flag."""
    _check_positive(args)
    from megatron_prealign.data.lm_dataset import check_indexed_files
    from megatron_prealign.runtime import validate_layout

    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    validate_layout(world_size, tp, pp)
    dp = world_size // (tp * pp)
    if args.global_batch_size % (args.micro_batch_size * dp):
        raise ConfigError(
            f"--global-batch-size {args.global_batch_size} must be a multiple of "
            f"--micro-batch-size {args.micro_batch_size} x data-parallel size {dp}"
        )
    lengths = [f for f in ("train_iters", "train_samples", "train_epochs") if getattr(args, f) is not None]
    if len(lengths) > 1:
        raise ConfigError("give one of --train-iters, --train-samples, --train-epochs")
    if args.train_epochs is not None and not (args.sft or args.sft_packing):
        raise ConfigError("--train-epochs needs --sft or --sft-packing (instruction data)")
    for name in lengths + ["prealign_iters", "postalign_iters"]:
        if not getattr(args, name) >= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    if args.train_epochs is None:  # with --train-epochs: once the data is read
        validate_schedule(args, train_iters(args))
    validate_finetuning(args)
    validate_online_codeswitch(args)
    aligning = args.prealign_iters > 0 or args.postalign_iters > 0 or args.alignment_during_pretraining
    if aligning and not args.alignment_table:
        raise ConfigError(
            "--prealign-iters / --postalign-iters / --alignment-during-pretraining need "
            "--alignment-table"
        )
    if args.alignment_table and not aligning and not args.codeswitch_online:
        raise ConfigError(
            "--alignment-table is given but no stage aligns: add --prealign-iters N (PreAlign), "
            "--alignment-during-pretraining or --postalign-iters N, or drop the table"
        )
    if args.alignment_table and not os.path.isfile(args.alignment_table):
        raise ConfigError(f"--alignment-table {args.alignment_table} does not exist")
    if args.alignment_temperature <= 0:
        raise ConfigError("--alignment-temperature must be > 0")
    if args.alignment_words_per_batch % dp:
        raise ConfigError(
            f"--alignment-words-per-batch {args.alignment_words_per_batch} must be divisible by "
            f"the data-parallel size {dp}"
        )
    if args.enclone_init and not args.enclone_mapping:
        raise ConfigError("--enclone-init needs --enclone-mapping (written by tools/make_enclone.py)")
    if args.enclone_mapping and not os.path.isfile(args.enclone_mapping):
        raise ValueError(f"--enclone-mapping {args.enclone_mapping} does not exist")
    if args.overlap_param_gather and not (args.use_distributed_optimizer and args.overlap_grad_reduce):
        raise ValueError("--overlap-param-gather needs --use-distributed-optimizer and --overlap-grad-reduce")
    if args.num_workers is not None and args.num_workers < 0:
        raise ValueError("--num-workers must be >= 0")
        raise ConfigError(f"--enclone-mapping {args.enclone_mapping} does not exist")
    if args.save_interval and not args.save:
        raise ConfigError("--save-interval needs --save DIR")
    for prefix in data_prefixes(args.data_path):
        for suffix in (".bin", ".idx"):
            if not os.path.isfile(prefix + suffix):
                raise ConfigError(f"--data-path: {prefix + suffix} does not exist (give the prefix without .bin/.idx)")
        check_indexed_files(prefix)
    if getattr(args, "tokenizer_model", None) and not os.path.exists(args.tokenizer_model):
        raise ConfigError(f"--tokenizer-model {args.tokenizer_model} does not exist")
    # A --load that does not exist yet but is the --save directory is a fresh start (Megatron-LM).
    if args.load and not os.path.isdir(args.load) and not fresh_start_directory(args):
        raise ConfigError(f"--load {args.load} is not a directory")
    if args.load_iteration is not None and not args.load:
        raise ConfigError("--load-iteration needs --load")


def validate_online_codeswitch(args: argparse.Namespace):
    """--codeswitch-online and its flags (the table's languages and the data's masks included)."""
    if not args.codeswitch_online:
        for name in ("codeswitch_languages", "codeswitch_ratio"):
            if getattr(args, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} applies to --codeswitch-online only; "
                                  "preprocessed codeswitching takes it in tools/preprocess_data.py")
        return
    if not args.alignment_table:
        raise ConfigError("--codeswitch-online draws its words from --alignment-table: give the table "
                          "(tools/build_alignment_table.py)")
    if not os.path.isfile(args.alignment_table):
        raise ConfigError(f"--alignment-table {args.alignment_table} does not exist")
    if args.codeswitch_ratio is not None and not 0.0 <= args.codeswitch_ratio <= 1.0:
        raise ConfigError(f"--codeswitch-ratio must be in [0, 1], not {args.codeswitch_ratio}")
    if args.sft or args.sft_packing:
        raise ConfigError("--codeswitch-online applies to pretraining data, not --sft / --sft-packing")
    from megatron_prealign.data.alignment_table import read_table, table_languages
    from megatron_prealign.data.online_codeswitch import check_plain_data

    available = table_languages(read_table(args.alignment_table))
    missing = [lang for lang in args.codeswitch_languages or () if lang not in available]
    if missing:
        raise ConfigError(f"--codeswitch-languages {' '.join(missing)} not in --alignment-table "
                          f"{args.alignment_table} (it has: {', '.join(available) or 'no translations'})")
    check_plain_data(data_prefixes(args.data_path))


def fresh_start_directory(args: argparse.Namespace) -> bool:
    """--load names the --save directory and it does not exist yet: nothing to resume."""
    return bool(args.load and args.save and not os.path.exists(args.load)
                and os.path.abspath(args.load) == os.path.abspath(args.save))


def train_iters(args: argparse.Namespace, rows_per_run: Optional[int] = None) -> int:
    """Iterations of the train stage: --train-iters, or --train-samples / the sequences of
    --train-epochs (``rows_per_run``) over the global batch, rounded up."""
    samples = args.train_samples if args.train_samples is not None else rows_per_run
    if samples is not None:
        return -(-samples // args.global_batch_size)
    return args.train_iters or 0


def validate_schedule(args: argparse.Namespace, train_iters: int) -> int:
    """Checks of the iteration counts; returns the warmup iterations."""
    total = args.prealign_iters + train_iters + args.postalign_iters
    if total < 1:
        raise ConfigError("nothing to train: --train-iters (or --train-samples / --train-epochs), "
                         "--prealign-iters and --postalign-iters are all 0")
    warmup = args.lr_warmup_iters
    if args.lr_warmup_fraction is not None:
        if not 0 <= args.lr_warmup_fraction < 1:
            raise ConfigError("--lr-warmup-fraction must be in [0, 1)")
        if args.lr_warmup_iters:
            raise ConfigError("give --lr-warmup-iters or --lr-warmup-fraction, not both")
        warmup = int(args.lr_warmup_fraction * (args.lr_decay_iters or total))
    if warmup >= (args.lr_decay_iters or total):
        raise ConfigError(
            f"--lr-warmup-iters {warmup} must be smaller than --lr-decay-iters "
            f"(default: all {total} iterations of all stages)"
        )
    return warmup


def validate_finetuning(args: argparse.Namespace):
    if args.sft and args.sft_packing:
        raise ConfigError("give --sft (one record a sequence) or --sft-packing (several), not both")
    if (args.sft or args.sft_packing) and (
        args.prealign_iters or args.postalign_iters or args.alignment_during_pretraining
    ):
        raise ConfigError("--sft / --sft-packing fine-tune on instruction data: run the alignment "
                         "stages in a pretraining run first and pass its --save as "
                         "--pretrained-checkpoint")
    if (args.sft or args.sft_packing) and args.codeswitch_mode != "input-only":
        raise ConfigError("--sft / --sft-packing always honour the stored loss masks; drop --codeswitch-mode")
    if args.pretrained_checkpoint is not None:
        from megatron_prealign.training.checkpointing import complete_iterations

        if not os.path.isdir(args.pretrained_checkpoint):
            raise ConfigError(f"--pretrained-checkpoint {args.pretrained_checkpoint} is not a directory")
        if not complete_iterations(args.pretrained_checkpoint):  # resume falls back to these too
            raise ConfigError(f"--pretrained-checkpoint {args.pretrained_checkpoint} holds no "
                             "complete checkpoint (no iter_* directory with a finished save)")
    if args.finetune and not (args.load or args.pretrained_checkpoint):
        raise ConfigError("--finetune needs --load DIR or --pretrained-checkpoint DIR (the weights to start from)")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)
