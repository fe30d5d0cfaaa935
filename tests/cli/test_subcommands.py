"""``seqtag export`` and ``seqtag calibrate`` are subcommands of the one ``seqtag`` command.

They take the same config files, ``--help``, ``--print_config``, ``--debug`` and one-line
errors as ``fit``; a checkpoint's data options reach them as defaults that the command line
and config files override, without the command line being rewritten.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, run_seqtag, train_checkpoint

from seqtag.cli.checkpoint_options import supplied_by_checkpoint
from seqtag.cli.main import SeqtagCLI, main
from seqtag.data.datamodule import TaggingDataModule
from seqtag.training.module import SequenceTagger

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = REPO / "tests" / "fixtures" / "tiny.conllu"
COLUMNS = REPO / "tests" / "fixtures" / "tiny.conll2003.txt"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    data = TaggingDataModule(train_path=str(TINY), batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8, embedding_dim=8))


@pytest.fixture(scope="module")
def columns_model(tmp_path_factory) -> Path:
    """A model trained on a whitespace-columns file: its checkpoint says so."""
    folder = tmp_path_factory.mktemp("columns")
    data = TaggingDataModule(train_path=str(COLUMNS), format="columns", batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8, embedding_dim=8))


def _one_line_exit_2(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("seqtag: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _temperature(path: Path) -> float:
    return float(torch.load(path, weights_only=True)["state_dict"]["tagger.temperature"])


def test_every_subcommand_has_one_rule_for_what_its_checkpoint_supplies():
    names = list(SeqtagCLI.subcommands())
    assert names[:6] == ["fit", "validate", "test", "predict", "calibrate", "export"]
    for name in names:  # a subcommand without a rule would fail here, not at its first run
        supplied = supplied_by_checkpoint(name)
        assert not {"train_path", "predict_path"} & set(supplied.data_options)
    assert "val_path" not in supplied_by_checkpoint("calibrate").data_options
    assert not supplied_by_checkpoint("export").read_first


@pytest.mark.parametrize("subcommand", ["export", "calibrate"])
def test_help_documents_the_subcommand_options(subcommand, tmp_path):
    result = run_seqtag(subcommand, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--ckpt_path", "--output", "--config", "--print_config", "--debug"):
        assert option in result.stdout
    if subcommand == "export":
        assert "{onnx,torchscript}" in result.stdout and "OUTPUT.vocab.json" in result.stdout
    else:
        assert "--data.val_path" in result.stdout and "CKPT.calibrated.ckpt" in result.stdout


def test_top_level_help_lists_both_subcommands(tmp_path):
    result = run_seqtag("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "calibrate" in result.stdout and "export" in result.stdout
    assert result.stdout.startswith("usage: seqtag ")


def test_export_print_config_parses_back_and_exports(model_path, tmp_path):
    output = tmp_path / "out" / "tagger.pt"
    printed = run_seqtag(
        "export",
        f"--ckpt_path={model_path}",
        "--format=torchscript",
        f"--output={output}",
        "--print_config",
        cwd=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    assert (config["ckpt_path"], config["format"], config["output"]) == (
        str(model_path),
        "torchscript",
        str(output),
    )
    assert not output.exists()  # printing runs nothing
    (tmp_path / "export.yaml").write_text(printed.stdout, encoding="utf-8")
    result = run_seqtag("export", "--config=export.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert output.is_file() and Path(f"{output}.vocab.json").is_file()
    assert f"wrote {output} and {output}.vocab.json" in result.stdout


def test_calibrate_from_a_config_file_is_the_same_as_from_options(model_path, tmp_path, capsys):
    by_options = tmp_path / "options.ckpt"
    main(
        [
            "calibrate",
            f"--ckpt_path={model_path}",
            f"--data.val_path={TINY}",
            f"--output={by_options}",
        ]
    )
    printed_by_options = capsys.readouterr().out
    config = tmp_path / "calibrate.yaml"
    by_config = tmp_path / "config.ckpt"
    settings = {"ckpt_path": str(model_path), "data": {"val_path": str(TINY)}}
    config.write_text(yaml.safe_dump({**settings, "output": str(by_config)}), encoding="utf-8")
    main(["calibrate", f"--config={config}"])
    printed_by_config = capsys.readouterr().out
    assert _temperature(by_config) == _temperature(by_options) != 1.0
    assert printed_by_config.replace(str(by_config), "X") == printed_by_options.replace(
        str(by_options), "X"
    )


def test_the_checkpoints_data_options_are_defaults_the_config_overrides(
    columns_model, tmp_path, capsys
):
    """The columns checkpoint reads its dev file as columns unasked; a config saying
    ``format: conllu`` wins (and that file is then not CoNLL-U: one line, exit 1)."""
    main(
        [
            "calibrate",
            f"--ckpt_path={columns_model}",
            f"--data.val_path={COLUMNS}",
            f"--output={tmp_path / 'a.ckpt'}",
        ]
    )
    assert "temperature: " in capsys.readouterr().out
    config = tmp_path / "conllu.yaml"
    config.write_text("data:\n  format: conllu\n", encoding="utf-8")
    result = run_seqtag(
        "calibrate",
        f"--ckpt_path={columns_model}",
        f"--data.val_path={COLUMNS}",
        f"--config={config}",
        f"--output={tmp_path / 'b.ckpt'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"seqtag: error: {COLUMNS}")
    assert not (tmp_path / "b.ckpt").exists()


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["export", "--format=tflite", "--output=x.pt"], ["format", "tflite"]),
        (["export", "--format=onnx", "--output=x.onnx", "--bogus=1"], ["--bogus"]),
        (["export", "--format=onnx"], ["export.output"]),
        (["calibrate", "--data.val_path=VAL", "--bogus=1"], ["--bogus"]),
        (["calibrate", "--data.val_path=VAL", "--data.format=text"], ["data.format", "text"]),
        (["calibrate", "--data.val_path=VAL", "--data.eval_batch_size=0"], ["eval_batch_size"]),
        (["calibrate"], ["needs a dev file: pass --data.val_path"]),
    ],
)
def test_a_bad_option_is_one_line_exit_2(argv, fragments, model_path, tmp_path):
    argv = [arg.replace("VAL", str(TINY)) for arg in argv]
    result = run_seqtag(*argv, f"--ckpt_path={model_path}", cwd=tmp_path)
    line = _one_line_exit_2(result, *fragments)
    assert f"seqtag {argv[0]}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("subcommand", ["export", "calibrate"])
def test_without_a_checkpoint_is_one_line_exit_2(subcommand, tmp_path):
    extra = ["--format=onnx", "--output=x.onnx"] if subcommand == "export" else []
    result = run_seqtag(subcommand, f"--data.val_path={TINY}", *extra, cwd=tmp_path)
    _one_line_exit_2(result, f"seqtag {subcommand} needs a trained model: pass --ckpt_path")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_before_or_after_the_subcommand(where, model_path, tmp_path):
    args = ["calibrate", f"--ckpt_path={model_path}", f"--data.val_path={tmp_path / 'no'}"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    result = run_seqtag(*args, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "ConfigError: " in result.stderr and "no such file (data.val_path)" in result.stderr


def test_the_command_line_is_never_rewritten(model_path, tmp_path, monkeypatch, capsys):
    """``sys.argv`` is read, never edited: with the checkpoint's data options, ``--debug``."""
    argv = [
        "seqtag",
        "calibrate",
        f"--ckpt_path={model_path}",
        f"--data.val_path={TINY}",
        f"--output={tmp_path / 'c.ckpt'}",
        "--debug",
    ]
    monkeypatch.setattr(sys, "argv", list(argv))
    main()
    assert sys.argv == argv
    assert "temperature: " in capsys.readouterr().out


def test_version(tmp_path):
    result = run_seqtag("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("seqtag ")
    assert "torch " in result.stdout and "lightning " in result.stdout
