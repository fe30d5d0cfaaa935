"""Resuming from a checkpoint of elsewhere: only the run's own folder is written, and a
damaged resume state is one line naming the file (issue 22, sections 2 and 3).

A checkpoint's ``ModelCheckpoint`` state names the files its run wrote. Edited (or simply
from another folder), it names another run's ``last.ckpt`` or anyone's model file, which
Lightning would delete and the end-of-fit calibration would rewrite. Each victim file here is
compared byte for byte after the resumed run.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO, assert_one_line_error, run_seqtag
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from seqtag import SequenceTagger, TaggingDataModule, TemperatureCalibration
from seqtag.checkpoint.resume import install_resume_support, rng_state_problem
from seqtag.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = REPO / "tests" / "fixtures" / "tiny.conllu"


def _fit_args(run: Path, *extra: str) -> list[str]:
    return [
        "fit",
        f"--data.train_path={TINY}",
        f"--data.val_path={TINY}",
        "--data.batch_size=2",
        "--model.init_args.hidden_size=8",
        "--seed_everything=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={run}",
        *extra,
    ]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A one-epoch ``seqtag fit`` run; its ``last.ckpt`` carries the full resume state."""
    run = tmp_path_factory.mktemp("trained")
    result = run_seqtag(
        *_fit_args(run, "--trainer.max_epochs=1", f"--checkpoint.dirpath={run / 'ckpt'}"),
        cwd=run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run / "ckpt" / "last.ckpt"


def _edited(source: Path, target: Path, edit) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def _model_checkpoint_states(checkpoint: dict) -> list[dict]:
    """The states of the run's ModelCheckpoints (best.ckpt's, then last.ckpt's for seqtag's)."""
    keys = sorted(k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint"))
    return [checkpoint["callbacks"][key] for key in keys]


def _model_checkpoint_state(checkpoint: dict) -> dict:
    """The state of the run's monitored ModelCheckpoint (the one writing best.ckpt)."""
    (state,) = [s for s in _model_checkpoint_states(checkpoint) if s.get("monitor")]
    return state


# -- S4: files outside the new run's folder -------------------------------------------------
@pytest.fixture
def victims(tmp_path, trained_run) -> dict[str, Path]:
    """Another run's last.ckpt and someone's model files: real checkpoints, each with its own
    temperature, so that rewriting one (a calibration fits another) changes its bytes."""
    files = {
        "other_last": tmp_path / "other-run" / "checkpoints" / "last.ckpt",
        "model": tmp_path / "models" / "tagger.ckpt",
        "climbed": tmp_path / "models" / "climbed.ckpt",
    }
    for temperature, path in enumerate(files.values(), start=2):
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = torch.load(trained_run, weights_only=True)
        checkpoint["state_dict"]["tagger.temperature"] = torch.tensor(float(temperature))
        torch.save(checkpoint, path)
    return files


def _point_elsewhere(new: Path, victims: dict[str, Path]):
    def edit(checkpoint: dict) -> None:
        climbed = f"{new}/../../models/climbed.ckpt"  # inside NEW for Lightning's own test
        for state in _model_checkpoint_states(checkpoint):
            _plant(state, new, victims, climbed)

    return edit


def _plant(state: dict, new: Path, victims: dict[str, Path], climbed: str) -> None:
    state.update(
        dirpath=str(new),  # so Lightning restores every entry
        best_model_path=str(victims["other_last"]),
        last_model_path=climbed,
        kth_best_model_path=str(victims["model"]),
        best_k_models={
            str(victims["other_last"]): torch.tensor(0.0, dtype=torch.float64),
            str(victims["model"]): torch.tensor(0.0, dtype=torch.float64),
            climbed: torch.tensor(0.0, dtype=torch.float64),
        },
        best_model_score=torch.tensor(0.0, dtype=torch.float64),
    )


def test_fit_from_a_checkpoint_naming_other_files_writes_only_its_own_folder(
    tmp_path, trained_run, victims
):
    new = tmp_path / "new-run" / "checkpoints"
    crafted = _edited(trained_run, tmp_path / "crafted.ckpt", _point_elsewhere(new, victims))
    before = {name: digest(path) for name, path in victims.items()}
    result = run_seqtag(
        *_fit_args(tmp_path / "new-run", "--trainer.max_epochs=3", f"--checkpoint.dirpath={new}"),
        f"--ckpt_path={crafted}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: digest(path) for name, path in victims.items()} == before
    warning = [line for line in result.stderr.splitlines() if "outside" in line]
    # One warning per planted ModelCheckpoint state: best.ckpt's and last.ckpt's callbacks.
    assert len(warning) == 2, result.stderr
    assert all(str(crafted) in line and str(victims["model"]) in line for line in warning)
    assert sorted(p.name for p in new.iterdir()) == ["best.ckpt", "last.ckpt"]
    written = torch.load(new / "last.ckpt", weights_only=True)
    state = _model_checkpoint_state(written)
    assert state["best_model_path"] == str(new / "best.ckpt")
    assert set(state["best_k_models"]) == {str(new / "best.ckpt")}


def _plain_fit(folder: Path, callbacks: list, epochs: int, ckpt_path: Path | None = None):
    pl.seed_everything(1)
    data = TaggingDataModule(train_path=str(TINY), val_path=str(TINY), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=folder,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    install_resume_support(trainer)
    trainer.fit(SequenceTagger(hidden_size=8), datamodule=data, ckpt_path=ckpt_path)
    return trainer


def test_resuming_in_its_own_folder_keeps_the_tracked_files(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    _plain_fit(tmp_path, [ModelCheckpoint(folder, "best", monitor="val_acc", mode="max")], 1)
    best = folder / "best.ckpt"
    score = _model_checkpoint_state(torch.load(best, weights_only=True))["best_model_score"]
    callback = ModelCheckpoint(folder, "best", monitor="val_acc", mode="max")
    with caplog.at_level(logging.WARNING, logger="seqtag"):
        _plain_fit(tmp_path, [callback, TemperatureCalibration()], 2, ckpt_path=best)
    assert not [r for r in caplog.records if "outside" in r.getMessage()]
    assert callback.best_model_path == str(best)
    assert callback.best_model_score >= score


class _RemembersElsewhere(Callback):
    """Plants outside files in the ModelCheckpoint's memory, as a restored state would."""

    def __init__(self, files: list[Path]):
        self.files = files

    def on_train_end(self, trainer, pl_module):  # before TemperatureCalibration's
        callback = trainer.checkpoint_callback
        callback.last_model_path = str(self.files[0])
        for path in self.files:
            callback.best_k_models[str(path)] = torch.tensor(0.0)


def test_end_of_fit_calibration_rewrites_only_files_in_the_checkpoint_folder(
    tmp_path, victims, caplog
):
    files = list(victims.values())
    before = [digest(path) for path in files]
    folder = tmp_path / "run" / "checkpoints"
    callbacks = [
        ModelCheckpoint(folder, "best", monitor="val_acc", mode="max", save_last=True),
        _RemembersElsewhere(files),
        TemperatureCalibration(),
    ]
    with caplog.at_level(logging.WARNING, logger="seqtag"):
        _plain_fit(tmp_path / "run", callbacks, 1)
    assert [digest(path) for path in files] == before
    refused = [r.getMessage() for r in caplog.records if "not calibrated" in r.getMessage()]
    assert len(refused) == len(files)
    # the run's own files were calibrated
    temperature = torch.load(folder / "best.ckpt", weights_only=True)["state_dict"]
    assert float(temperature["tagger.temperature"]) != 1.0


# -- resume state that cannot be restored: one line naming the file ------------------------
def _no_optimizer_state(checkpoint: dict) -> None:
    checkpoint["optimizer_states"] = []


def test_fit_from_a_checkpoint_without_optimizer_state_is_one_line(tmp_path, trained_run):
    edited = _edited(trained_run, tmp_path / "edited.ckpt", _no_optimizer_state)
    result = run_seqtag(
        *_fit_args(tmp_path / "run", "--trainer.max_epochs=2"),
        f"--checkpoint.dirpath={tmp_path / 'run' / 'ckpt'}",
        f"--ckpt_path={edited}",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "optimizer_states")
    assert str(edited) in result.stderr
    assert not (tmp_path / "run" / "ckpt").exists()


def _rng(checkpoint: dict) -> dict:
    return checkpoint["callbacks"]["RNGStateCallback"]["rng"]


RNG_EDITS = {
    "torch state truncated": lambda c: _rng(c).update(torch=_rng(c)["torch"][:100]),
    "torch state of another dtype": lambda c: _rng(c).update(torch=_rng(c)["torch"].long()),
    "torch state zeroed": lambda c: _rng(c).update(torch=torch.zeros_like(_rng(c)["torch"])),
    "numpy keys truncated": lambda c: _rng(c)["numpy"].update(keys=_rng(c)["numpy"]["keys"][:9]),
    "numpy kind unknown": lambda c: _rng(c)["numpy"].update(kind="PCG64"),
    "numpy keys a list": lambda c: _rng(c)["numpy"].update(keys=[1, 2, 3]),
    "python version": lambda c: _rng(c)["python"].update(version=99),
    "python state short": lambda c: _rng(c)["python"].update(state=[1, 2, 3]),
    "python state of strings": lambda c: _rng(c)["python"].update(state=["x"] * 625),
    "python position out of range": lambda c: _rng(c)["python"]["state"].__setitem__(-1, 10**6),
    "python word negative": lambda c: _rng(c)["python"]["state"].__setitem__(0, -1),
    "no torch state": lambda c: _rng(c).pop("torch"),
    "rng a list": lambda c: c["callbacks"]["RNGStateCallback"].update(rng=[1, 2]),
    "per_rank a number": lambda c: c["callbacks"]["RNGStateCallback"].update(per_rank=3),
}


@pytest.mark.parametrize("edit", list(RNG_EDITS), ids=list(RNG_EDITS))
def test_an_edited_rng_state_is_refused_naming_the_file(tmp_path, trained_run, edit):
    edited = _edited(trained_run, tmp_path / "edited.ckpt", RNG_EDITS[edit])
    with pytest.raises(CheckpointError) as error:
        _plain_fit(tmp_path, [], 2, ckpt_path=edited)
    message = str(error.value)
    assert str(edited) in message and "random-number state" in message
    assert "\n" not in message
    # the trial that found it left the generators as they were
    state = torch.load(edited, weights_only=True)["callbacks"]["RNGStateCallback"]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert rng_state_problem(state) is not None
    assert torch.equal(torch.rand(3), expected)


def test_an_edited_rng_state_through_the_command_is_one_line(tmp_path, trained_run):
    edited = _edited(trained_run, tmp_path / "edited.ckpt", RNG_EDITS["torch state zeroed"])
    result = run_seqtag(
        *_fit_args(tmp_path / "run", "--trainer.max_epochs=2"),
        f"--checkpoint.dirpath={tmp_path / 'run' / 'ckpt'}",
        f"--ckpt_path={edited}",
        cwd=tmp_path,
    )
    assert_one_line_error(result, f"{edited}: cannot resume training from it: its random-number")


def _optimizer(checkpoint: dict) -> dict:
    return checkpoint["optimizer_states"][0]


OPTIMIZER_EDITS = {
    "no optimizer states": _no_optimizer_state,
    "no parameter groups": lambda c: _optimizer(c).update(param_groups=[]),
    "a group of another size": lambda c: _optimizer(c)["param_groups"][0].update(params=[0]),
    "two optimizer states": lambda c: c["optimizer_states"].append(_optimizer(c)),
    "a moment of another shape": lambda c: _optimizer(c)["state"][0].update(
        exp_avg=torch.zeros(3, 3)
    ),
    "a moment that is text": lambda c: _optimizer(c)["state"][0].update(exp_avg="x"),
    "state a list": lambda c: _optimizer(c).update(state=[1]),
}


@pytest.mark.parametrize("edit", list(OPTIMIZER_EDITS), ids=list(OPTIMIZER_EDITS))
def test_an_edited_optimizer_state_is_refused_naming_the_file(tmp_path, trained_run, edit):
    edited = _edited(trained_run, tmp_path / "edited.ckpt", OPTIMIZER_EDITS[edit])
    with pytest.raises(CheckpointError, match="optimizer") as error:
        _plain_fit(tmp_path, [], 2, ckpt_path=edited)
    assert "\n" not in str(error.value)


def test_an_edited_optimizer_state_through_the_command_is_one_line(tmp_path, trained_run):
    edit = OPTIMIZER_EDITS["a group of another size"]
    edited = _edited(trained_run, tmp_path / "edited.ckpt", edit)
    result = run_seqtag(
        *_fit_args(tmp_path / "run", "--trainer.max_epochs=2"),
        f"--checkpoint.dirpath={tmp_path / 'run' / 'ckpt'}",
        f"--ckpt_path={edited}",
        cwd=tmp_path,
    )
    assert_one_line_error(result, f"{edited}: cannot resume training from it: its optimizer")
