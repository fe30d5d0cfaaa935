"""One checkpoint plugin: the trainer ``seqtag fit`` builds reads through seqtag's validated
reader and writes atomically, and every entry point opens and validates a checkpoint once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, train_checkpoint

import seqtag.checkpoint.io as checkpoint_io
from seqtag import SequenceTagger, TaggingDataModule
from seqtag.checkpoint.plugin import SeqtagCheckpointIO
from seqtag.cli.export import main as export_main
from seqtag.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = str(REPO / "tests" / "fixtures" / "tiny.conllu")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    data = TaggingDataModule(train_path=TINY, val_path=TINY, batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8))


def test_the_trainer_of_seqtag_fit_reads_and_writes_through_the_plugin(tmp_path, monkeypatch):
    (tmp_path / "plugin_probe.py").write_text(
        "from lightning.pytorch.callbacks import Callback\n"
        "class Probe(Callback):\n"
        "    def setup(self, trainer, pl_module, stage):\n"
        "        kind = type(trainer.strategy.checkpoint_io)\n"
        "        open('plugin.txt', 'w').write(kind.__module__ + '.' + kind.__name__)\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            f"--data.train_path={TINY}",
            "--model.hidden_size=8",
            "--trainer.max_epochs=1",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=plugin_probe.Probe",
            f"--checkpoint.dirpath={tmp_path / 'ck'}",
        ]
    )
    written = (tmp_path / "plugin.txt").read_text(encoding="utf-8")
    assert written == "seqtag.checkpoint.plugin.SeqtagCheckpointIO"
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["seqtag"]


def test_a_plain_trainer_adds_it_in_one_line(tmp_path, model_path):
    import lightning.pytorch as pl

    trainer = pl.Trainer(plugins=[SeqtagCheckpointIO()], logger=False, enable_progress_bar=False)
    assert trainer.strategy.checkpoint_io.load_checkpoint(model_path)["seqtag"]["vocabularies"]


@pytest.fixture
def counted(monkeypatch):
    """How often ``torch.load`` opened a file and ``validate_checkpoint`` ran."""
    counts = {"opened": 0, "validated": 0}
    real_load, real_validate = torch.load, checkpoint_io.validate_checkpoint

    def load(source, *args, **kwargs):
        if isinstance(source, str | Path) and str(source).endswith(".ckpt"):
            counts["opened"] += 1
        return real_load(source, *args, **kwargs)

    def validate(*args, **kwargs):
        counts["validated"] += 1
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(checkpoint_io, "validate_checkpoint", validate)
    import seqtag.training.lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "validate_checkpoint", validate)
    return counts


def _entry_points(model_path: Path, folder: Path) -> dict:
    text = folder / "in.txt"
    text.write_text("The cat sat .\n", encoding="utf-8")
    return {
        "load_from_checkpoint": lambda: SequenceTagger.load_from_checkpoint(model_path),
        "test": lambda: main(["test", f"--ckpt_path={model_path}", f"--data.test_path={TINY}"]),
        "predict": lambda: main(
            [
                "predict",
                f"--ckpt_path={model_path}",
                f"--data.predict_path={text}",
                "--data.predict_format=text",
                f"--prediction.output={folder / 'out.txt'}",
            ]
        ),
        "export": lambda: export_main(
            [f"--ckpt_path={model_path}", "--format=torchscript", f"--output={folder / 'm.pt'}"]
        ),
        "calibrate": lambda: main(
            [
                "calibrate",
                f"--ckpt_path={model_path}",
                f"--data.val_path={TINY}",
                f"--output={folder / 'calibrated.ckpt'}",
            ]
        ),
    }


@pytest.mark.parametrize(
    "entry", ["load_from_checkpoint", "test", "predict", "export", "calibrate"]
)
def test_each_entry_point_opens_and_validates_a_checkpoint_once(
    model_path, tmp_path, counted, entry, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _entry_points(model_path, tmp_path)[entry]()
    assert counted == {"opened": 1, "validated": 1}
