"""Numeric options: a value outside its documented range is a one-line error, never a traceback.

Parsing is enough to refuse a bad value, so the command-line cases use ``--print_config`` (one
runs ``fit`` itself) on the shipped quick-start config and train nothing.
"""

from __future__ import annotations

import io
import re
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.cli.main import SeqtagCLI, main
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import ConfigError
from seqtag.training.module import SequenceTagger

CONFIG = str(REPO / "configs" / "ud_ewt_upos.yaml")

BAD_VALUES = [
    ("data.batch_size", "0"),
    ("data.batch_size", "-3"),
    ("data.batch_size", "2.5"),
    ("data.batch_size", "abc"),
    ("data.eval_batch_size", "0"),
    ("data.max_batch_tokens", "0"),
    ("data.num_workers", "-1"),
    ("data.min_freq", "0"),
    ("data.vectors_top_k", "-5"),
    ("data.max_word_length", "0"),
    ("data.max_word_length", "-1"),
    ("data.seed", "-1"),
    ("data.pool_size", "0"),
    ("data.val_from_train", "-5"),
    ("data.predict_chunk_size", "0"),
    ("data.predict_max_tokens", "0"),
    ("model.hidden_size", "0"),
    ("model.num_layers", "0"),
    ("model.dropout", "1"),
    ("model.dropout", "2"),
    ("model.dropout", "-0.1"),
    ("model.word_dropout", "1.5"),
    ("model.rare_word_dropout", "-1"),
    ("model.rare_word_dropout", "inf"),
    ("model.embedding_dim", "0"),
    ("model.char_dim", "0"),
    ("model.char_hidden_size", "0"),
    ("model.lr", "0"),
    ("model.lr", "nan"),
    ("model.lr_decay", "0"),
    ("model.lr_decay", "1.5"),
]


def _run(capsys, *args: str) -> tuple[int | str | None, str, str]:
    """``seqtag ARGS``: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _one_line_error(option: str, value: str, err: str) -> None:
    """``err`` is ``seqtag: error: OPTION: must be RANGE, got VALUE (see ...)``, nothing else."""
    section, name = option.split(".")
    key = "data" if section == "data" else "model.init_args"
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    line = rf"seqtag: error: {key}\.{name}: must be .+, got {re.escape(value)}"
    assert re.fullmatch(line + r" \(see seqtag fit --help\)", err.strip()), err


@pytest.mark.parametrize(("option", "value"), BAD_VALUES, ids=lambda v: str(v))
def test_bad_value_is_one_line_exit_2(capsys, option, value):
    code, _, err = _run(capsys, "fit", "--config", CONFIG, f"--{option}", value, "--print_config")
    assert code == 2
    _one_line_error(option, value, err)


def test_bad_value_stops_fit_before_anything_runs(capsys, tmp_path):
    code, _, err = _run(
        capsys,
        "fit",
        "--config",
        CONFIG,
        f"--trainer.default_root_dir={tmp_path}",
        f"--checkpoint.dirpath={tmp_path / 'checkpoints'}",
        "--data.batch_size",
        "0",
    )
    assert code == 2
    _one_line_error("data.batch_size", "0", err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("data.batch_size", "1"),
        ("data.num_workers", "0"),
        ("data.val_from_train", "0"),
        ("data.max_batch_tokens", "null"),
        ("model.dropout", "0"),
        ("model.word_dropout", "1"),
        ("model.rare_word_dropout", "0"),
        ("model.lr_decay", "1"),
        ("model.lr", "1e-5"),
    ],
)
def test_range_edges_are_accepted(capsys, option, value):
    code, out, _ = _run(capsys, "fit", "--config", CONFIG, f"--{option}", value, "--print_config")
    assert code in (0, None)
    assert f"{option.split('.')[1]}: " in out


# The smallest valid value of some integer options (the documented ranges).
MINIMUM = {
    "data.batch_size": 1,
    "data.num_workers": 0,
    "data.max_word_length": 1,
    "data.val_from_train": 0,
    "model.hidden_size": 1,
    "model.num_layers": 1,
}


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.sampled_from(sorted(MINIMUM)), st.integers())
def test_integer_options_parse_or_fail_in_one_line(option, value):
    # hypothesis cannot use the function-scoped capsys fixture: capture by hand.
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_info, redirect_stdout(out), redirect_stderr(err):
        main(["fit", "--config", CONFIG, f"--{option}", str(value), "--print_config"])
    if value >= MINIMUM[option]:
        assert exit_info.value.code in (0, None), err.getvalue()
        assert f"{option.split('.')[1]}: {value}\n" in out.getvalue()
    else:
        assert exit_info.value.code == 2
        _one_line_error(option, str(value), err.getvalue())


@pytest.mark.parametrize(
    ("cls", "arguments", "message"),
    [
        (TaggingDataModule, {"batch_size": 0}, "data.batch_size must be an integer >= 1, got 0"),
        (TaggingDataModule, {"batch_size": None}, "data.batch_size must be an integer >= 1"),
        (TaggingDataModule, {"eval_batch_size": -3}, "data.eval_batch_size must be"),
        (TaggingDataModule, {"max_batch_tokens": 0}, "data.max_batch_tokens must be"),
        (TaggingDataModule, {"num_workers": -1}, "data.num_workers must be an integer >= 0"),
        (TaggingDataModule, {"max_word_length": 0}, "data.max_word_length must be"),
        (TaggingDataModule, {"vectors_top_k": -5}, "data.vectors_top_k must be"),
        (TaggingDataModule, {"val_from_train": -5}, "data.val_from_train must be"),
        (TaggingDataModule, {"pool_size": 2.5}, "data.pool_size must be"),
        (TaggingDataModule, {"seed": True}, "data.seed must be"),
        (SequenceTagger, {"hidden_size": 0}, "model.hidden_size must be an integer >= 1"),
        (SequenceTagger, {"num_layers": 0}, "model.num_layers must be"),
        (SequenceTagger, {"dropout": 1.0}, "model.dropout must be a number in [0, 1), got 1.0"),
        (SequenceTagger, {"word_dropout": -0.5}, "model.word_dropout must be a number in [0, 1]"),
        (SequenceTagger, {"rare_word_dropout": -1}, "model.rare_word_dropout must be"),
        (SequenceTagger, {"embedding_dim": 0}, "model.embedding_dim must be"),
        (SequenceTagger, {"char_dim": 0}, "model.char_dim must be"),
        (SequenceTagger, {"char_hidden_size": -1}, "model.char_hidden_size must be"),
        (SequenceTagger, {"lr": 0.0}, "model.lr must be a number > 0"),
        (SequenceTagger, {"lr_decay": 0}, "model.lr_decay must be a number in (0, 1]"),
    ],
    ids=lambda v: str(v),
)
def test_python_constructors_refuse_bad_values(cls, arguments, message):
    with pytest.raises(ConfigError) as err:
        cls(**arguments)
    assert message in str(err.value)


def test_python_constructors_accept_unset_optional_values():
    TaggingDataModule(max_batch_tokens=None, max_word_length=None, predict_max_tokens=None)
    SequenceTagger(embedding_dim=None, lr=None, word_dropout=1.0, dropout=0.0, lr_decay=1.0)


def test_parsed_values_are_plain_numbers_in_hyper_parameters(tmp_path, monkeypatch):
    """Checkpoints are read with weights_only=True: no range class may reach the hparams."""
    monkeypatch.setattr(sys, "argv", ["seqtag"])  # Lightning warns when given both
    cli = SeqtagCLI(
        SequenceTagger,
        TaggingDataModule,
        subclass_mode_model=True,
        run=False,
        args=[
            "--config",
            CONFIG,
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.batch_size=8",
            "--data.max_batch_tokens=512",
            "--model.init_args.lr=0.01",
            "--model.init_args.hidden_size=16",
        ],
    )
    hparams = {"model": dict(cli.model.hparams), "data": dict(cli.datamodule.hparams)}
    assert type(hparams["data"]["batch_size"]) is int
    assert type(hparams["data"]["max_batch_tokens"]) is int
    assert type(hparams["model"]["lr"]) is float
    assert type(hparams["model"]["dropout"]) is float
    buffer = io.BytesIO()
    torch.save(hparams, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == hparams


@pytest.mark.parametrize(
    ("option", "message"),
    [("--trainer.max_epochs=-5", "max_epochs"), ("--trainer.devices=0", "devices")],
)
def test_trainer_settings_lightning_refuses_are_one_line_exit_2(capsys, tmp_path, option, message):
    tiny = str(REPO / "tests" / "fixtures" / "tiny.conllu")
    code, _, err = _run(
        capsys, "fit", f"--data.train_path={tiny}", "--trainer.logger=false", option
    )
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("seqtag: error: trainer: ") and message in err
