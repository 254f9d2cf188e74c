"""The typed training configuration: what `training/loop.run` takes.

One frozen dataclass per group of the training command line (`training/arguments.py`), with the
group's flags as fields under Megatron-LM's names (``--num-layers`` -> ``model.num_layers``).
The flags, their defaults and their help live in the parser alone; these classes give the
settings their types and their place, and `arguments.config` / `arguments.parse_config` build
them (defaults filled in, the model-size presets resolved, the flag-level checks applied).
`tests/test_training_config.py` checks that every parser group and its section name the same
settings.

Lists stay lists (``data_path``, ``codeswitch_languages``, ...), as argparse gives them, so the
layers below see exactly what they saw under the command line; a frozen section is never changed
in place: ``dataclasses.replace`` (or `arguments.config(**{**cfg.flat(), ...})`) makes a new one.
"""

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, precision and recompute (parser group "model")."""

    model_size: Optional[str]  # named size (model_sizes.MODEL_SIZES); explicit sizes override it
    model_family: str  # "gpt2" or "llama"
    num_layers: int  # from --model-size unless given
    hidden_size: int  # from --model-size unless given
    num_attention_heads: int  # from --model-size unless given
    num_query_groups: Optional[int]  # GQA groups; None: one per head
    ffn_hidden_size: Optional[int]  # None: the family's default
    seq_length: int  # training sequence length
    max_position_embeddings: Optional[int]  # None: seq_length
    hidden_dropout: float
    attention_dropout: float
    init_method_std: float
    transformer_impl: str  # "local" or "transformer_engine"
    bf16: bool
    fp16: bool
    fp8_format: Optional[str]  # "hybrid" / "e4m3" (Transformer Engine)
    recompute_granularity: Optional[str]  # "full" / "selective"
    recompute_method: Optional[str]  # "uniform" / "block"
    recompute_num_layers: Optional[int]
    padded_vocab_size: Optional[int]  # None: the tokenizer's, padded (x2 for En-Clone)


@dataclass(frozen=True)
class ParallelConfig:
    """Parallel layout and the distributed runtime (parser group "parallelism")."""

    tensor_model_parallel_size: int
    pipeline_model_parallel_size: int
    sequence_parallel: bool
    use_distributed_optimizer: bool
    overlap_grad_reduce: bool  # data-parallel reduction overlapped with the backward pass
    overlap_param_gather: bool  # distributed optimizer's all-gather overlapped with the forward
    distributed_backend: Optional[str]  # None: nccl with CUDA, gloo on the CPU
    distributed_timeout_minutes: float


@dataclass(frozen=True)
class ScheduleConfig:
    """Batch sizes, run length, learning-rate schedule, optimizer, seed (group "optimisation")."""

    micro_batch_size: int
    global_batch_size: int
    train_iters: Optional[int]  # the train stage's length: one of train_iters / samples / epochs
    train_samples: Optional[int]
    train_epochs: Optional[float]  # --sft / --sft-packing only
    lr: float
    min_lr: float
    lr_decay_style: str  # "cosine", "linear" or "constant"
    lr_warmup_iters: int
    lr_warmup_fraction: Optional[float]  # share of lr_decay_iters instead of lr_warmup_iters
    lr_decay_iters: Optional[int]  # None: all iterations of all stages
    weight_decay: float
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    clip_grad: float
    initial_loss_scale: float  # --fp16: the dynamic loss scale's start
    loss_scale: Optional[float]  # --fp16: a constant loss scale instead
    seed: int


@dataclass(frozen=True)
class DataConfig:
    """LM data: Megatron-LM's --data-path blend, split, loaders, codeswitching (group "data")."""

    data_path: List[str]  # prefixes, or weight prefix weight prefix ...
    split: str  # "train,validation,test" weights
    data_cache_path: Optional[str]
    num_workers: Optional[int]  # None: 2 on CUDA, 0 on the CPU
    codeswitch_mode: str  # "input-only" (stored loss masks honoured) or "original"
    codeswitch_online: bool  # switch each sample as it is read (data/online_codeswitch.py)
    codeswitch_languages: Optional[List[str]]  # online: table languages (None: all)
    codeswitch_ratio: Optional[float]  # online: switch probability (None: the default 0.05)


@dataclass(frozen=True)
class TokenizerConfig:
    """Megatron-LM's tokenizer settings (group "tokenizer", data/tokenizer.py)."""

    tokenizer_type: str
    tokenizer_model: Optional[str]
    vocab_file: Optional[str]
    merge_file: Optional[str]
    vocab_size: Optional[int]  # NullTokenizer / TikTokenizer only
    tokenizer_hf_no_use_fast: bool
    tokenizer_hf_no_include_special_tokens: bool
    trust_remote_code: bool
    special_tokens: Optional[List[str]]
    tokenizer_sentencepiece_legacy: bool
    tokenizer_metadata: Optional[str]
    tiktoken_pattern: Optional[str]
    tiktoken_num_special_tokens: int

    def spec(self) -> Dict:
        """The settings as the plain dict data/tokenizer.py builds from (`tokenizer_spec`)."""
        from megatron_prealign.data.tokenizer import tokenizer_spec

        return tokenizer_spec(**dataclasses.asdict(self))


@dataclass(frozen=True)
class AlignmentConfig:
    """PreAlign: the table, the aligning stages and the contrastive loss, En-Clone
    (group "alignment (PreAlign)")."""

    alignment_table: Optional[str]  # JSON lines (tools/build_alignment_table.py)
    alignment_languages: Optional[List[str]]  # None: all of the table's
    prealign_iters: int  # pre-alignment stage before pretraining (PreAlign)
    alignment_during_pretraining: bool  # the alignment loss throughout pretraining
    postalign_iters: int  # alignment stage after pretraining
    alignment_temperature: float
    alignment_loss_weight: float
    alignment_words_per_batch: int
    alignment_held_out_fraction: float  # table words kept out (seen / unseen evaluation)
    enclone_mapping: Optional[str]  # tools/make_enclone.py's id mapping
    enclone_init: bool  # clone embeddings copied from English


@dataclass(frozen=True)
class FinetuneConfig:
    """Instruction tuning and the weights to start from (group "fine-tuning")."""

    sft: bool  # one instruction record a sequence, loss on the responses
    sft_packing: bool  # several records a sequence
    pretrained_checkpoint: Optional[str]  # weights to start from (new optimizer, iteration 0)
    finetune: bool  # --load's weights only, as Megatron-LM's --finetune


@dataclass(frozen=True)
class CheckpointConfig:
    """Saving and resuming (group "checkpointing")."""

    save: Optional[str]
    save_interval: Optional[int]
    load: Optional[str]
    load_iteration: Optional[int]  # None: the latest complete one
    no_load_optim: bool
    no_load_rng: bool
    override_opt_param_scheduler: bool


@dataclass(frozen=True)
class LoggingConfig:
    """Logs, periodic validation and the exit iteration (group "logging")."""

    log_interval: int
    tensorboard_dir: Optional[str]
    log_json: Optional[str]  # one JSON object per logged iteration
    eval_interval: int  # 0: no periodic validation
    eval_iters: int
    exit_interval: Optional[int]  # stop (after saving) at this iteration


# Section attribute of TrainConfig -> (its class, the title of its parser group).
SECTIONS = {
    "model": (ModelConfig, "model"),
    "parallel": (ParallelConfig, "parallelism"),
    "schedule": (ScheduleConfig, "optimisation"),
    "data": (DataConfig, "data"),
    "tokenizer": (TokenizerConfig, "tokenizer"),
    "alignment": (AlignmentConfig, "alignment (PreAlign)"),
    "finetune": (FinetuneConfig, "fine-tuning (x-LLaMA instruction tuning)"),
    "checkpoint": (CheckpointConfig, "checkpointing"),
    "logging": (LoggingConfig, "logging"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run is configured by. Build it with `arguments.config(...)`
    (Python) or `arguments.parse_config(argv)` (the command line): both fill in the defaults and
    check the flags; `arguments.validate` adds the checks that need the world size and files."""

    model: ModelConfig
    parallel: ParallelConfig
    schedule: ScheduleConfig
    data: DataConfig
    tokenizer: TokenizerConfig
    alignment: AlignmentConfig
    finetune: FinetuneConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig

    @classmethod
    def from_flat(cls, values: Dict) -> "TrainConfig":
        """Sections from one dict of every setting (flag names with underscores); no defaults,
        no checks (`arguments.config` does both)."""
        return cls(**{name: section(**{f.name: values[f.name] for f in dataclasses.fields(section)})
                      for name, (section, _) in SECTIONS.items()})

    def flat(self) -> Dict:
        """Every setting under its flag name with underscores (what a checkpoint stores)."""
        values = {}
        for name in SECTIONS:
            values.update(dataclasses.asdict(getattr(self, name)))
        return values

    # Derived settings read in several places.
    @property
    def aligning(self) -> bool:
        """Some stage aligns: pre-alignment, post-alignment or alignment during pretraining."""
        a = self.alignment
        return a.prealign_iters > 0 or a.postalign_iters > 0 or a.alignment_during_pretraining

    @property
    def instruction_data(self) -> bool:
        """--sft or --sft-packing: the data are instruction records."""
        return self.finetune.sft or self.finetune.sft_packing


def field_names(section) -> List[str]:
    return [f.name for f in dataclasses.fields(section)]
