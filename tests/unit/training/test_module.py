"""SequenceTagger's own hooks that do not need a trained model."""

from __future__ import annotations

import torch

from seqtag import SequenceTagger
from seqtag.data.batching import Batch


def test_batches_move_their_tensors_and_keep_gold_lists_as_they_are():
    """Lightning's own hook moves a collated batch with one ``Batch.to`` call (the model
    overrides nothing, so a DataModule brings no "overridden in LightningModule" warning)."""
    gold = [("B-NP", "I-NP"), ("O",)]
    batch = Batch(words=torch.ones(2, 2, dtype=torch.long), gold=gold)
    moved = SequenceTagger().transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert isinstance(moved, Batch)
    assert moved["words"].device.type == "meta"
    assert moved["gold"] is gold
