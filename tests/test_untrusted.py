"""Checkpoints and vector files from elsewhere cannot run code when seqtag opens them."""

from __future__ import annotations

import pickle

import pytest
import torch

from seqtag.data.embeddings import load_vectors
from seqtag.errors import VectorFormatError
from seqtag.module import SequenceTagger


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
    with pytest.raises(pickle.UnpicklingError):
        SequenceTagger.load_from_checkpoint(crafted)
    assert not marker.exists()


def test_pickled_vector_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "vectors.kv"
    crafted.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(VectorFormatError, match="allow_gensim_native"):
        load_vectors(crafted)
    assert not marker.exists()
