"""Checkpoints and vector files from elsewhere cannot run code when seqtag opens them."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import REPO, train_checkpoint

from seqtag import TaggingDataModule
from seqtag.data.vectors.embeddings import load_vectors
from seqtag.errors import CheckpointError, VectorFormatError
from seqtag.training.module import SequenceTagger


class _Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "seqtag": _Payload(marker)}, crafted)
    with pytest.raises(CheckpointError, match=r"torch.load cannot read it.*UnpicklingError"):
        SequenceTagger.load_from_checkpoint(crafted)
    assert not marker.exists()


def test_pickled_vector_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "vectors.kv"
    crafted.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(VectorFormatError, match="allow_gensim_native"):
        load_vectors(crafted)
    assert not marker.exists()


def test_checkpoint_naming_a_foreign_class_never_imports_it(tmp_path):
    """A checkpoint's hyper-parameters must not make seqtag import a module they name: the
    run's model class is built (seqtag's own here), with a warning naming the stored one."""
    tiny = str(REPO / "tests" / "fixtures" / "tiny.conllu")
    data = TaggingDataModule(train_path=tiny, batch_size=2)
    model = SequenceTagger(hidden_size=8)
    checkpoint = torch.load(train_checkpoint(tmp_path, data, model), weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = "evil_module.Tagger"
    del checkpoint["seqtag"]["model_class"]  # as a checkpoint from before seqtag recorded it
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Tagger: pass\n", encoding="utf-8"
    )
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    for command in ("predict", "test", "fit"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "seqtag",
                command,
                f"--ckpt_path={crafted}",
                f"--data.predict_path={text}",
                "--data.predict_format=text",
                f"--data.train_path={tiny}",
                f"--data.test_path={tiny}",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr
        assert "evil_module.Tagger" in result.stderr and "never imports" in result.stderr
        assert not marker.exists()
