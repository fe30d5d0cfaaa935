"""Training from data held in memory, end to end, on a slice of the English Web Treebank.

A Hugging Face ``datasets.Dataset`` built from the slice's sentences trains the model the files
train (same seed: same predictions, same test scores), and its checkpoint is an ordinary one:
``seqtag test`` and ``seqtag predict`` read it with files, and its data options name no split.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import assert_one_line_error, run_seqtag

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.data.io.formats import read_corpus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _rows(path: Path) -> list[dict[str, list[str]]]:
    return [{"tokens": list(s.tokens), "upos": list(s.tags)} for s in read_corpus(path, "conllu")]


def _fit(folder: Path, **splits) -> tuple[SequenceTagger, pl.Trainer, TaggingDataModule]:
    pl.seed_everything(3)
    dm = TaggingDataModule(batch_size=16, tag_key="upos", **splits)
    model = SequenceTagger(hidden_size=32, char_features="cnn", decoder="crf")
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=folder,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    return model, trainer, dm


def test_a_datasets_split_trains_the_files_model_and_its_checkpoint_is_ordinary(
    tmp_path, ewt_slice
):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_list(_rows(ewt_slice["train"]))
    dev = datasets.Dataset.from_list(_rows(ewt_slice["dev"]))
    from_memory, trainer, _ = _fit(tmp_path / "memory", train_path=train, val_path=dev)
    from_files, _, _ = _fit(
        tmp_path / "files", train_path=str(ewt_slice["train"]), val_path=str(ewt_slice["dev"])
    )
    for name, value in from_memory.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, from_files.state_dict()[name]), name

    # Scored in Python from memory, and by the command line from the file: the same accuracy.
    test = TaggingDataModule(test_path=_rows(ewt_slice["test"]), tag_key="upos")
    (in_python,) = trainer.test(from_memory, datamodule=test, verbose=False)
    checkpoint = tmp_path / "memory.ckpt"
    trainer.save_checkpoint(checkpoint)
    stored = torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"]
    assert stored["train_path"] is None and stored["val_path"] is None
    assert stored["tag_key"] == "upos"
    scored = run_seqtag(
        "test",
        f"--ckpt_path={checkpoint}",
        f"--data.test_path={ewt_slice['test']}",
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    (row,) = [line.split() for line in scored.stdout.splitlines() if "test_acc" in line]
    assert float(row[-1]) == pytest.approx(in_python["test_acc"], abs=1e-6)

    # The checkpoint names no test file (it had none): the command line asks for one.
    missing = run_seqtag("test", f"--ckpt_path={checkpoint}", cwd=tmp_path)
    assert_one_line_error(missing, "data.test_path")
