"""A checkpoint is plain data: nothing it names is ever imported or called.

The probes of the "trust" issue, each through every entry point it names. A marker module
(``advmark``) on ``PYTHONPATH`` creates a file when it is imported and another when anything in
it is called; shell payloads ``touch`` a file. Every run must leave no marker behind, and do
its normal work (the crafted entries are simply not restored).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, train_checkpoint

from seqtag import SequenceTagger, TaggingDataModule

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = REPO / "tests" / "fixtures" / "tiny.conllu"

MARKER_MODULE = """
import pathlib
pathlib.Path({imported!r}).touch()

def _called(*args, **kwargs):
    pathlib.Path({called!r}).touch()

class Opt:
    def __init__(self, *args, **kwargs):
        _called()

    def __call__(self, *args, **kwargs):
        _called()

def inst(*args, **kwargs):
    _called()
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    data = TaggingDataModule(train_path=str(TINY), val_path=str(TINY), batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8))


@pytest.fixture
def place(tmp_path, monkeypatch) -> Path:
    """A working folder with the marker module importable (also in this process)."""
    (tmp_path / "advmark.py").write_text(
        MARKER_MODULE.format(imported=str(tmp_path / "IMPORTED"), called=str(tmp_path / "CALLED")),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def markers(folder: Path) -> list[str]:
    return sorted(name for name in ("IMPORTED", "CALLED", "PWNED") if (folder / name).exists())


def shell(folder: Path) -> str:
    return f"touch {folder / 'PWNED'}"


#: The probes: each edits a real checkpoint's entries (folder -> edits).
PROBES = {
    "optimizer os.system": lambda f: {
        "optimizer": {"class_path": "os.system", "init_args": {"command": shell(f)}}
    },
    "lr_scheduler os.system": lambda f: {
        "lr_scheduler": {"class_path": "os.system", "init_args": {"command": shell(f)}}
    },
    "optimizer os.system without _class_path": lambda f: {
        "_class_path": None,
        "optimizer": {"class_path": "os.system", "init_args": {"command": shell(f)}},
    },
    "optimizer subprocess.getoutput": lambda f: {
        "optimizer": {"class_path": "subprocess.getoutput", "init_args": {"cmd": shell(f)}}
    },
    "optimizer pathlib.Path.touch": lambda f: {
        "optimizer": {"class_path": "pathlib.Path.touch", "init_args": {"self": str(f / "PWNED")}}
    },
    "optimizer advmark": lambda f: {"optimizer": {"class_path": "advmark.Opt"}},
    "lr_scheduler advmark": lambda f: {"lr_scheduler": {"class_path": "advmark.Opt"}},
    "data advmark": lambda f: {"data": {"class_path": "advmark.Opt", "init_args": {}}},
    "advmark with seqtag's own _class_path": lambda f: {
        "_class_path": "seqtag.SequenceTagger",
        "optimizer": "advmark.Opt",
        "lr_scheduler": {"class_path": "advmark.Opt"},
    },
    "instantiator advmark": lambda f: {"_instantiator": "advmark.inst"},
    "model class advmark": lambda f: {"_class_path": "advmark.Opt"},
}


def craft(trained: Path, folder: Path, edits: dict, name: str = "crafted.ckpt") -> Path:
    checkpoint = torch.load(trained, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    for key, value in edits.items():
        if value is None:
            hparams.pop(key, None)
        else:
            hparams[key] = value
    if edits.get("_class_path"):  # as written before seqtag recorded the class by name
        checkpoint["seqtag"].pop("model_class", None)
    data_hparams = checkpoint.setdefault("datamodule_hyper_parameters", {})
    data_hparams["_class_path"] = "advmark.Opt"
    data_hparams["_instantiator"] = "advmark.inst"
    path = folder / name
    torch.save(checkpoint, path)
    return path


def every_probe(folder: Path) -> dict:
    """All probes' entries at once, for the entry points run as separate processes."""
    edits: dict = {}
    for name, probe in PROBES.items():
        if "without _class_path" not in name and "_class_path" not in name:
            edits.update(probe(folder))
    edits["_class_path"] = "advmark.Opt"
    return edits


def seqtag(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seqtag", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize("probe", list(PROBES))
def test_load_from_checkpoint_never_imports_or_calls_what_a_checkpoint_names(trained, place, probe):
    crafted = craft(trained, place, PROBES[probe](place))
    model = SequenceTagger.load_from_checkpoint(crafted)
    assert markers(place) == []
    assert "optimizer" not in model.hparams and "lr_scheduler" not in model.hparams
    assert model.tag([["The", "cat"]])[0][0][0]  # a working tagger all the same


def test_every_command_ignores_code_in_a_checkpoint(trained, place):
    crafted = craft(trained, place, every_probe(place))
    text = place / "in.txt"
    text.write_text("The cat sat .\n", encoding="utf-8")
    runs = {
        "test": ["test", f"--ckpt_path={crafted}", f"--data.test_path={TINY}"],
        "validate": ["validate", f"--ckpt_path={crafted}", f"--data.val_path={TINY}"],
        "predict": [
            "predict",
            f"--ckpt_path={crafted}",
            f"--data.predict_path={text}",
            "--data.predict_format=text",
            f"--prediction.output={place / 'out.txt'}",
        ],
        "fit": [
            "fit",
            f"--ckpt_path={crafted}",
            f"--data.train_path={TINY}",
            "--trainer.max_epochs=2",
            f"--checkpoint.dirpath={place / 'resumed'}",
            "--trainer.logger=false",
        ],
        "export": [
            "export",
            f"--ckpt_path={crafted}",
            "--format=torchscript",
            f"--output={place / 'm.pt'}",
        ],
        "calibrate": [
            "calibrate",
            f"--ckpt_path={crafted}",
            f"--data.val_path={TINY}",
            f"--output={place / 'calibrated.ckpt'}",
        ],
    }
    for name, args in runs.items():
        result = seqtag(place, *args)
        assert result.returncode == 0, (name, result.stderr[-2000:])
        assert markers(place) == [], (name, result.stderr[-2000:])
    assert (place / "out.txt").read_text(encoding="utf-8").count("\n") >= 4
    assert (place / "resumed" / "last.ckpt").exists()
    assert (place / "m.pt").exists() and (place / "calibrated.ckpt").exists()
    # what seqtag writes is plain data again: no class path, no optimizer entry
    rewritten = torch.load(place / "calibrated.ckpt", weights_only=True)
    assert not {"optimizer", "lr_scheduler", "_class_path", "_instantiator"} & set(
        rewritten["hyper_parameters"]
    )


@pytest.mark.parametrize(
    "how",
    ["config file", "predict section", "two options", "abbreviation", "file named last"],
)
def test_the_checkpoint_is_checked_however_its_path_is_given(trained, place, how):
    crafted = craft(trained, place, every_probe(place))
    text = place / "in.txt"
    text.write_text("The cat\n", encoding="utf-8")
    rest = [f"--data.predict_path={text}", "--data.predict_format=text"]
    config = place / "run.yaml"
    if how == "config file":
        config.write_text(f"ckpt_path: {crafted}\n", encoding="utf-8")
        args = ["predict", f"--config={config}", *rest]
    elif how == "predict section":
        config.write_text(f"predict:\n  ckpt_path: {crafted}\n", encoding="utf-8")
        args = [f"--config={config}", "predict", *rest]
    elif how == "two options":
        args = ["predict", f"--ckpt_path={trained}", f"--ckpt_path={crafted}", *rest]
    elif how == "abbreviation":
        args = ["predict", f"--ckpt={crafted}", *rest]
    else:
        (place / "last").write_bytes(crafted.read_bytes())
        args = ["predict", "--ckpt_path=last", *rest]
    result = seqtag(place, *args)
    assert markers(place) == [], result.stderr[-2000:]
    if how == "file named last":
        # Lightning's "last" means the run's last checkpoint, never a file of that name
        assert result.returncode != 0 and "Traceback" not in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split() and "The" in result.stdout


def test_checkpoints_seqtag_writes_name_no_code(tmp_path):
    """What seqtag fit writes needs no class path to load, and records its class as a name."""
    result = seqtag(
        tmp_path,
        "fit",
        f"--data.train_path={TINY}",
        "--trainer.max_epochs=1",
        "--model.hidden_size=8",
        "--optimizer=SGD",
        "--optimizer.lr=0.1",
        f"--checkpoint.dirpath={tmp_path / 'ck'}",
        "--trainer.logger=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    for section in ("hyper_parameters", "datamodule_hyper_parameters"):
        assert not {"optimizer", "lr_scheduler", "_class_path", "_instantiator"} & set(
            checkpoint[section]
        )
    assert checkpoint["seqtag"]["model_class"].endswith(".SequenceTagger")


def test_a_checkpoint_of_another_class_loads_with_a_warning_naming_it(trained, place):
    crafted = craft(trained, place, {"_class_path": "advmark.Opt"})
    with pytest.warns(UserWarning, match=r"advmark\.Opt.*never imports"):
        SequenceTagger.load_from_checkpoint(crafted)
    assert markers(place) == []
