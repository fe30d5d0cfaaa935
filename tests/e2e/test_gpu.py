"""CUDA checks; skipped where no GPU is present (CI never has one)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from seqtag.data.datamodule import TaggingDataModule
from seqtag.training.module import SequenceTagger

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_gpu_training_gives_a_checkpoint_that_tags_on_cpu(ewt_slice, tmp_path, precision, decoder):
    pl.seed_everything(0)
    data = TaggingDataModule(
        train_path=str(ewt_slice["train"]),
        val_path=str(ewt_slice["dev"]),
        char_vocabulary=True,
        batch_size=16,
    )
    model = SequenceTagger(hidden_size=64, decoder=decoder, char_features="cnn")
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision=precision,
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    assert trainer.callback_metrics["val_acc"] > 0.5
    checkpoint = tmp_path / "gpu.ckpt"
    trainer.save_checkpoint(checkpoint)
    cpu_model = SequenceTagger.load_from_checkpoint(checkpoint, map_location="cpu")
    sentences = [["The", "cat", "sat", "."], ["Hello"]]
    assert cpu_model.tag(sentences) is not None
    gpu_tags = [[t for t, _ in s] for s in model.to("cuda").tag(sentences)]
    cpu_tags = [[t for t, _ in s] for s in cpu_model.tag(sentences)]
    assert gpu_tags == cpu_tags
