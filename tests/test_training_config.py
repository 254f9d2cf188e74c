"""The typed training configuration (training/config.py, training/arguments.py): one section per
parser group, the command line and Python give the same config, errors name the flag, and a
checkpoint records the config it was trained with and resumes from it."""

import argparse
import dataclasses
import os

import pytest

from megatron_prealign.errors import ConfigError
from megatron_prealign.testing import pretrain_case
from megatron_prealign.training import arguments
from megatron_prealign.training.config import SECTIONS, TrainConfig, field_names
from tests.dist_utils import run_distributed


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pretrain_case.prepare_data(str(tmp_path_factory.mktemp("config_data")))


def python_settings(data, work, **extra):
    """The settings of pretrain_case.base_argv, as Python values."""
    return {**dict(
        num_layers=2, hidden_size=32, num_attention_heads=4, seq_length=32, max_position_embeddings=32,
        micro_batch_size=2, global_batch_size=4, train_iters=3, lr=3e-3, min_lr=3e-4, lr_warmup_iters=1,
        seed=7, data_path=["0.8", data["en_cs"], "0.2", data["de"]], split="90,10,0",
        tokenizer_type="SentencePieceTokenizer", tokenizer_model=data["sp"],
        log_json=os.path.join(work, "log.jsonl"), log_interval=1), **extra}


FAKE = dict(seq_length=32, micro_batch_size=2, global_batch_size=4, data_path=["/nowhere/x"],
            tokenizer_type="NullTokenizer", vocab_size=100, num_layers=2, hidden_size=32, num_attention_heads=4)


def test_every_parser_group_is_one_section():
    """The parser holds the flags and defaults, the sections their types: the same names, in
    the same order, group by group, and nothing outside a section."""
    parser = arguments.build_parser()
    groups = {group.title: [a.dest for a in group._group_actions] for group in parser._action_groups}
    for name, (section, title) in SECTIONS.items():
        assert groups[title] == field_names(section), name
        assert [f.name for f in dataclasses.fields(TrainConfig)] == list(SECTIONS)
    dests = {a.dest for a in parser._actions} - {"help"}
    assert dests == {f for section, _ in SECTIONS.values() for f in field_names(section)}


def test_command_line_and_python_give_the_same_config(data, tmp_path):
    work = str(tmp_path)
    from_argv = arguments.parse_config(pretrain_case.base_argv(data, work, prealign_iters=2, bf16=True,
                                                               **pretrain_case.alignment_flags(data)))
    from_python = arguments.config(**python_settings(data, work, prealign_iters=2, bf16=True,
                                                     **pretrain_case.alignment_flags(data)))
    assert from_argv == from_python
    assert from_python.alignment.alignment_languages == ["de"]
    assert from_python.schedule.lr == 3e-3 and from_python.model.hidden_dropout == 0.1  # default
    assert from_python.flat() == from_argv.flat()
    assert arguments.config(**from_python.flat()) == from_python
    with pytest.raises(dataclasses.FrozenInstanceError):
        from_python.schedule.lr = 1.0
    assert arguments.replace(from_python, lr=1e-3).schedule.lr == 1e-3
    # Ints where the flag takes floats, tuples where it takes lists: as the command line gives them.
    assert arguments.config(**{**python_settings(data, work), "lr": 1, "data_path": tuple(
        python_settings(data, work)["data_path"])}) == arguments.replace(from_python, lr=1.0, prealign_iters=0,
                                                                         bf16=False, alignment_table=None,
                                                                         alignment_languages=None,
                                                                         alignment_words_per_batch=64)


def test_model_size_presets_fill_the_unset_sizes():
    argv = ["--model-size", "150M", "--num-layers", "4", "--seq-length", "64", "--micro-batch-size", "1",
            "--global-batch-size", "1", "--data-path", "/d", "--tokenizer-type", "NullTokenizer"]
    from_argv = arguments.parse_config(argv)
    from_python = arguments.config(model_size="150M", num_layers=4, seq_length=64, micro_batch_size=1,
                                   global_batch_size=1, data_path=["/d"], tokenizer_type="NullTokenizer")
    assert from_argv == from_python
    assert (from_python.model.num_layers, from_python.model.hidden_size,
            from_python.model.num_attention_heads) == (4, 1024, 16)
    model = arguments.model_args(from_python, vocab_size=128)
    assert (model.num_layers, model.hidden_size, model.num_attention_heads) == (4, 1024, 16)


@pytest.mark.parametrize("settings,flag", [
    ({k: v for k, v in FAKE.items() if k != "seq_length"}, "--seq-length"),
    ({**FAKE, "lr_decay_style": "cosin"}, "--lr-decay-style"),
    ({**FAKE, "data_path": "/one/path"}, "--data-path"),
    ({**FAKE, "train_iters": 2.5}, "--train-iters"),
    ({**FAKE, "bf16": 1}, "--bf16"),
    ({**FAKE, "learning_rate": 1e-3}, "learning_rate"),
    ({k: v for k, v in FAKE.items() if k not in ("num_layers", "hidden_size")}, "--num-layers, --hidden-size"),
], ids=["required", "choice", "list", "type", "switch", "unknown", "sizes"])
def test_building_errors_name_the_flag(settings, flag):
    with pytest.raises(ConfigError, match=flag):
        arguments.config(**settings)


@pytest.mark.parametrize("settings,flag", [
    ({"global_batch_size": 3}, "--global-batch-size"),
    ({"train_epochs": 2.0}, "--train-epochs"),
    ({"train_iters": 4, "save_interval": 2}, "--save-interval"),
    ({"train_iters": 4, "codeswitch_ratio": 0.1}, "--codeswitch-ratio"),
    ({"train_iters": 4, "log_interval": 0}, "--log-interval"),
    ({"train_iters": 4, "lr_warmup_iters": 4}, "--lr-warmup-iters"),
    ({"train_iters": 4, "enclone_mapping": "/nonexistent/map.json"}, "--enclone-mapping"),
    ({"train_iters": 4, "overlap_param_gather": True}, "--overlap-param-gather"),
    ({"train_iters": 4, "num_workers": -1}, "--num-workers"),
], ids=["batch", "epochs", "save", "online", "positive", "warmup", "enclone", "overlap", "workers"])
def test_validation_errors_name_the_flag(settings, flag):
    with pytest.raises(ConfigError, match=flag):
        arguments.validate(arguments.config(**{**FAKE, **settings}), 1)


def test_loop_takes_a_train_config_only():
    from megatron_prealign.training import loop

    with pytest.raises(TypeError, match="TrainConfig"):
        loop.run(argparse.Namespace(lr=1e-3))


def _train(config):
    """Rank body: one training run of ``config``."""
    from megatron_prealign.training import loop

    return loop.run(config)


def test_checkpoint_records_the_config_and_resumes_from_it(data, tmp_path):
    from megatron_prealign.training import checkpointing

    ckpt = str(tmp_path / "ckpt")
    first = arguments.config(**python_settings(data, str(tmp_path / "first"), train_iters=4, save=ckpt,
                                               exit_interval=2))
    assert run_distributed(_train, 1, first) == [2]
    directory = checkpointing.checkpoint_dir(ckpt, 2)
    assert checkpointing.saved_config(directory) == first.flat()  # flag names, plain values
    saved = arguments.config_from_checkpoint(directory)
    assert saved == first

    resumed = arguments.replace(saved, load=ckpt, exit_interval=None,
                                log_json=str(tmp_path / "resumed.jsonl"))
    assert run_distributed(_train, 1, resumed) == [4]
    with open(tmp_path / "resumed.jsonl") as handle:
        iterations = [line for line in handle if '"stage"' in line]
    assert [int(line.split('"iteration": ')[1].split(",")[0]) for line in iterations] == [3, 4]
    assert arguments.config_from_checkpoint(checkpointing.checkpoint_dir(ckpt, 4)) == resumed


def test_checkpoint_without_a_config_says_so(tmp_path, monkeypatch):
    from megatron_prealign.training import checkpointing

    monkeypatch.setattr(checkpointing, "read_run_state", lambda directory: {"iteration": 1})
    assert checkpointing.saved_config(str(tmp_path)) is None
    with pytest.raises(ConfigError, match="records no training settings"):
        arguments.config_from_checkpoint(str(tmp_path))


def _two_runs_with_a_signal(first, second):
    """Rank body: SIGTERM arrives during the first of two runs in one process (a demo)."""
    import signal

    from megatron_prealign.training import loop, signals

    finished = []
    signals.install()  # as the run installs it; the signal comes as the first run starts
    signal.raise_signal(signal.SIGTERM)
    try:
        for config in (first, second):
            finished.append(loop.run(config))
    except signals.ExitRequested as stop:
        return {"finished": finished, "code": stop.code}
    return {"finished": finished, "code": None}


def test_a_signal_saves_and_ends_the_process_not_just_the_run(data, tmp_path):
    from megatron_prealign.training import checkpointing

    ckpt = str(tmp_path / "ckpt")
    first = arguments.config(**python_settings(data, str(tmp_path / "a"), train_iters=6, save=ckpt))
    second = arguments.config(**python_settings(data, str(tmp_path / "b"), train_iters=6))
    result = run_distributed(_two_runs_with_a_signal, 1, first, second)[0]
    # The first run saved at its first log iteration and ended the process with status 0; the
    # second never started (before, it ran and stopped at its first iteration).
    assert result == {"finished": [], "code": 0}
    assert os.path.isdir(checkpointing.checkpoint_dir(ckpt, 1))


def _thread_counts(config, runs):
    """Rank body: OS threads of the process after each of ``runs`` trainings in a row."""
    from megatron_prealign.training import loop

    counts = []
    for _ in range(runs):
        loop.run(config)
        counts.append(len(os.listdir("/proc/self/task")))
    return counts


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_runs_in_a_row_do_not_pile_up_threads(data, tmp_path):
    """Each run's gloo threads go with it (runtime.shutdown collects the run's cycles): before,
    every in-process run left about 60 threads behind until the garbage collector ran."""
    config = arguments.config(**python_settings(data, str(tmp_path), train_iters=2))
    first, second, third = run_distributed(_thread_counts, 1, config, 3)[0]
    assert first == second == third
