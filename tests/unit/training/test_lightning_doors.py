"""Lightning's other doors (issue 24, parts 4 and 5), driven as a Lightning user drives them.

Precision and clipping settings, a plateau scheduler, ``overfit_batches``, Lightning's export
methods, several evaluation dataloaders, ``load_from_checkpoint`` with a contradicting argument,
bad tokens and bad test files; each through ``Trainer``, ``load_from_checkpoint`` or ``tag``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.errors import CheckpointError, ConfigError
from seqtag.integrations.export import export, export_model, vocabulary_path

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = {
    "B-NP": ["the", "a", "every"],
    "I-NP": ["dog", "cat", "house", "tree"],
    "B-VP": ["sees", "likes", "finds"],
    "B-PP": ["in", "on", "near"],
}


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    def phrase() -> list[tuple[str, str]]:
        return [(rng.choice(WORDS["B-NP"]), "B-NP"), (rng.choice(WORDS["I-NP"]), "I-NP")]

    tokens = [*phrase(), (rng.choice(WORDS["B-VP"]), "B-VP"), *phrase()]
    if rng.random() < 0.5:
        tokens += [(rng.choice(WORDS["B-PP"]), "B-PP"), *phrase()]
    return [*tokens, (".", "O")]


def _write(path, sentences: list[list[tuple[str, str]]]) -> str:
    blocks = ["\n".join(f"{w} {t}" for w, t in sentence) for sentence in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> dict[str, str]:
    """Train/dev/test files of a tiny IOB2 chunking task."""
    folder = tmp_path_factory.mktemp("doors")
    files = {}
    for split, count, seed in (("train", 60, 1), ("dev", 20, 2), ("test", 21, 3)):
        rng = random.Random(seed)
        files[split] = _write(folder / f"{split}.txt", [_sentence(rng) for _ in range(count)])
    return files


def _data(chunks: dict[str, str], **settings) -> TaggingDataModule:
    options = dict(
        train_path=chunks["train"],
        val_path=chunks["dev"],
        test_path=chunks["test"],
        format="columns",
        tag_scheme="iob2",
        batch_size=8,
    )
    return TaggingDataModule(**{**options, **settings})


def _trainer(tmp_path, **settings) -> pl.Trainer:
    options = dict(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**options, **settings})


@pytest.fixture(scope="module")
def trained(chunks, tmp_path_factory) -> tuple[SequenceTagger, str]:
    """A small model trained on the chunks, and its checkpoint."""
    folder = tmp_path_factory.mktemp("trained")
    pl.seed_everything(0)
    model = SequenceTagger(hidden_size=16, lr=0.02)
    trainer = _trainer(folder, max_epochs=4)
    trainer.fit(model, datamodule=_data(chunks))
    path = str(folder / "model.ckpt")
    trainer.save_checkpoint(path)
    return model, path


class WeightsAtStart(pl.Callback):
    """The parameters as training starts (the network exists from then on)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.named_parameters()}


def _fit_changes_weights(chunks, tmp_path, accelerator: str, precision: str, **clipping) -> None:
    start = WeightsAtStart()
    try:
        trainer = _trainer(
            tmp_path,
            accelerator=accelerator,
            devices=1,
            precision=precision,
            max_steps=3,
            limit_val_batches=0,
            callbacks=[start],
            **clipping,
        )
    except (ValueError, RuntimeError) as err:  # a precision this machine does not offer
        pytest.skip(f"precision {precision} on {accelerator}: {err}")
    model = SequenceTagger(hidden_size=16)
    trainer.fit(model, datamodule=_data(chunks))
    after = dict(model.named_parameters())
    assert start.weights.keys() == after.keys()
    changed = [name for name, value in start.weights.items() if not torch.equal(value, after[name])]
    assert len(changed) == len(after), sorted(set(after) - set(changed))
    assert all(torch.isfinite(value.float()).all() for value in after.values())


# -- 4. precision, clipping and schedulers -------------------------------------------------
PRECISIONS = ["32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("clip", [None, 1.0])
def test_the_default_optimizer_trains_at_every_precision_with_and_without_clipping(
    chunks, tmp_path, precision, clip
):
    _fit_changes_weights(chunks, tmp_path, "cpu", precision, gradient_clip_val=clip)


def test_clipping_by_value_under_mixed_precision_trains(chunks, tmp_path):
    clipping = dict(gradient_clip_val=0.5, gradient_clip_algorithm="value")
    _fit_changes_weights(chunks, tmp_path, "cpu", "bf16-mixed", **clipping)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "bf16-true"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_the_default_optimizer_trains_on_cuda_at_every_precision(chunks, tmp_path, precision, clip):
    _fit_changes_weights(chunks, tmp_path, "gpu", precision, gradient_clip_val=clip)


def _plateau(**settings):
    return lambda optimizer: torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **settings)


def test_a_plateau_scheduler_monitors_what_the_checkpoint_callback_monitors(
    chunks, tmp_path, caplog
):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc", mode="max")
    trainer = _trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint])
    model = SequenceTagger(hidden_size=16, lr_scheduler=_plateau(mode="max"))
    with caplog.at_level(logging.INFO, logger="seqtag"):
        trainer.fit(model, datamodule=_data(chunks))
    assert trainer.lr_scheduler_configs[0].monitor == "val_acc"
    said = [r.getMessage() for r in caplog.records if "ReduceLROnPlateau" in r.getMessage()]
    assert said and "val_acc" in said[0] and "checkpoint callback" in said[0]


def test_a_plateau_scheduler_monitors_what_the_user_said(chunks, tmp_path, caplog):
    from lightning.pytorch.cli import ReduceLROnPlateau

    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc", mode="max")
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint])
    scheduler = lambda o: ReduceLROnPlateau(o, monitor="val_f1", mode="max")  # noqa: E731
    with caplog.at_level(logging.INFO, logger="seqtag"):
        trainer.fit(
            SequenceTagger(hidden_size=16, lr_scheduler=scheduler), datamodule=_data(chunks)
        )
    assert trainer.lr_scheduler_configs[0].monitor == "val_f1"
    assert "monitors val_f1" in caplog.text
    # Lightning's own scheduler configuration says it too.
    config = lambda o: {"scheduler": _plateau()(o), "monitor": "val_loss"}  # noqa: E731
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint])
    trainer.fit(SequenceTagger(hidden_size=16, lr_scheduler=config), datamodule=_data(chunks))
    assert trainer.lr_scheduler_configs[0].monitor == "val_loss"


@pytest.mark.parametrize(
    ("monitor", "mode", "expected"),
    [
        (None, "max", r"mode='max' and monitors val_loss .*set mode='min'"),
        ("val_acc", "min", r"mode='min' and monitors val_acc \(as the checkpoint callback.*'max'"),
    ],
)
def test_a_plateau_mode_that_contradicts_its_metric_is_one_line_error(
    chunks, tmp_path, monitor, mode, expected
):
    callbacks = [ModelCheckpoint(dirpath=tmp_path, monitor=monitor, mode="max")] if monitor else []
    trainer = _trainer(tmp_path, enable_checkpointing=bool(monitor), callbacks=callbacks)
    model = SequenceTagger(hidden_size=16, lr_scheduler=_plateau(mode=mode))
    with pytest.raises(ConfigError, match=expected) as error:
        trainer.fit(model, datamodule=_data(chunks))
    assert "\n" not in str(error.value)


# -- 5. Lightning's other doors ------------------------------------------------------------
class EpochLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.losses.append(float(trainer.callback_metrics["train_loss"]))


def test_overfit_batches_trains_on_the_same_batch_every_epoch(chunks, tmp_path):
    pl.seed_everything(0)
    losses = EpochLosses()
    trainer = _trainer(tmp_path, overfit_batches=1, max_epochs=30, callbacks=[losses])
    trainer.fit(SequenceTagger(hidden_size=16, lr=0.05, dropout=0.0), datamodule=_data(chunks))
    assert len(losses.losses) == 30
    assert losses.losses[-1] < losses.losses[0] / 4  # one batch, learnt by heart


FIT_WITH_A_DATAMODULE = """
import sys, warnings
import lightning.pytorch as pl
from seqtag import SequenceTagger, TaggingDataModule
warnings.simplefilter("always")
data = TaggingDataModule(train_path=sys.argv[1], format="columns", tag_scheme="iob2")
trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, default_root_dir=sys.argv[2])
trainer.fit(SequenceTagger(hidden_size=8), datamodule=data)
print("steps", trainer.global_step)
"""


def test_a_fit_with_a_datamodule_gives_no_transfer_batch_warning(chunks, tmp_path):
    """In a fresh process: Lightning gives each warning once per process."""
    command = [sys.executable, "-c", FIT_WITH_A_DATAMODULE, chunks["train"], str(tmp_path)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert done.stdout.split() == ["steps", "2"], done.stderr
    assert "transfer_batch_to_device" not in done.stderr


@pytest.mark.parametrize(
    ("method", "format"), [("to_onnx", "onnx"), ("to_torchscript", "torchscript")]
)
def test_lightning_export_methods_name_seqtag_export(trained, tmp_path, method, format):
    model, _ = trained
    args = [str(tmp_path / "model.onnx")] if method == "to_onnx" else []
    with pytest.raises(ConfigError, match=f"seqtag export .*--format {format}") as error:
        getattr(model, method)(*args)
    assert "\n" not in str(error.value)
    assert "export_model(model" in str(error.value)


def test_export_model_writes_what_seqtag_export_writes(trained, tmp_path):
    model, path = trained
    model.train()
    export_model(model, "torchscript", str(tmp_path / "memory.pt"))
    assert model.training  # left as it was
    export(path, "torchscript", str(tmp_path / "file.pt"))  # what seqtag export runs
    names = [str(tmp_path / "memory.pt"), str(tmp_path / "file.pt")]
    sidecars = [json.loads(Path(vocabulary_path(n)).read_text(encoding="utf-8")) for n in names]
    assert sidecars[0] == sidecars[1]
    sentences = [["the", "dog", "sees", "a", "cat", "."], ["every", "tree"]]
    lengths = torch.tensor([len(s) for s in sentences])
    words = torch.zeros(len(sentences), int(lengths.max()), dtype=torch.long)
    for row, tokens in enumerate(sentences):
        words[row, : len(tokens)] = torch.tensor(model.vocabularies.encode_words(tokens))
    tags = [torch.jit.load(n)(words, lengths) for n in names]
    assert torch.equal(tags[0], tags[1])
    exported = [
        [sidecars[0]["tags"][i] for i in row[:n]]
        for row, n in zip(tags[0].tolist(), lengths.tolist(), strict=True)
    ]
    assert exported == [[tag for tag, _ in s] for s in model.eval().tag(sentences)]


def test_several_validation_and_test_dataloaders_are_scored_apart(trained, chunks, tmp_path):
    model, _ = trained
    data = _data(chunks)
    data.encode_with(model.vocabularies)
    data.setup("fit")
    dev = data.val_dataloader()
    test = data.test_dataloader()
    alone = [
        _trainer(tmp_path).validate(model, dataloaders=d, verbose=False)[0] for d in (dev, test)
    ]
    # One loader keeps today's names exactly.
    assert set(alone[0]) == {
        "val_loss",
        "val_acc",
        "val_precision",
        "val_recall",
        "val_f1",
        "val_skipped_sentences",
        "val_skipped_tokens",
    }
    both = _trainer(tmp_path).validate(model, dataloaders=[dev, test], verbose=False)
    for index, (result, single) in enumerate(zip(both, alone, strict=True)):
        suffix = f"/dataloader_idx_{index}"
        assert result == pytest.approx({name + suffix: value for name, value in single.items()})
    tested = _trainer(tmp_path).test(model, dataloaders=[dev, test], verbose=False)
    assert tested[1]["test_acc/dataloader_idx_1"] == pytest.approx(alone[1]["val_acc"])
    assert tested[1]["test_f1/dataloader_idx_1"] == pytest.approx(alone[1]["val_f1"])
    assert "test_ece/dataloader_idx_0" in tested[0]


def test_fit_with_two_validation_dataloaders(trained, chunks, tmp_path):
    model, path = trained
    model = SequenceTagger.load_from_checkpoint(path)
    data = _data(chunks)
    data.encode_with(model.vocabularies)
    data.setup("fit")
    trainer = _trainer(tmp_path)
    loaders = [data.val_dataloader(), data.test_dataloader()]
    trainer.fit(model, train_dataloaders=data.train_dataloader(), val_dataloaders=loaders)
    metrics = trainer.callback_metrics
    assert {"val_acc/dataloader_idx_0", "val_acc/dataloader_idx_1"} <= set(metrics)
    assert {"val_f1/dataloader_idx_0", "val_f1/dataloader_idx_1"} <= set(metrics)
    assert "val_acc" not in metrics


def test_load_from_checkpoint_says_an_argument_contradicts_the_checkpoint(trained):
    _, path = trained
    with pytest.raises(CheckpointError) as error:
        SequenceTagger.load_from_checkpoint(path, hidden_size=64)
    message = str(error.value)
    assert "hidden_size=64 contradicts the checkpoint" in message
    assert "hidden_size=16" in message and "edited" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("sentences", "expected"),
    [
        ([["the", None, "dog"]], "sentence 0, token 2 is a NoneType"),
        ([["the", "dog"], ["a", "cat", None]], "sentence 1, token 3 is a NoneType"),
    ],
)
def test_a_none_token_names_its_sentence_and_position(trained, sentences, expected):
    model, _ = trained
    with pytest.raises(TypeError, match=expected) as error:
        model.tag(sentences)
    assert "\n" not in str(error.value)


def test_a_test_file_sharing_only_two_tags_is_refused(trained, chunks, tmp_path):
    model, _ = trained
    rng = random.Random(4)
    other = {"B-NP": "B-ADJP", "I-NP": "I-ADJP", "B-VP": "B-SBAR", "B-PP": "B-PRT"}
    sentences = []
    for _ in range(10):  # B-VP and O are shared; most tokens have other tags
        sentence = _sentence(rng)
        sentences.append([(w, t if t in ("B-VP", "O") else other[t]) for w, t in sentence])
    wrong = _write(tmp_path / "wrong.txt", sentences)
    with pytest.raises(ConfigError, match=r"most of its gold tokens .* tag column") as error:
        _trainer(tmp_path).test(model, datamodule=_data(chunks, test_path=wrong), verbose=False)
    assert "\n" not in str(error.value)


def test_a_test_file_with_a_few_unseen_tags_is_still_scored(trained, chunks, tmp_path, caplog):
    model, _ = trained
    rng = random.Random(5)
    sentences = [_sentence(rng) for _ in range(10)]
    sentences[0] = [(w, "B-ADJP" if t == "B-VP" else t) for w, t in sentences[0]]
    mostly_known = _write(tmp_path / "mostly_known.txt", sentences)
    data = _data(chunks, test_path=mostly_known)
    scores = _trainer(tmp_path).test(model, datamodule=data, verbose=False)[0]
    assert 0.0 < scores["test_acc"] < 1.0 and scores["test_loss"] == scores["test_loss"]
    assert "B-ADJP (1)" in caplog.text


def test_export_model_writes_onnx_that_tags_as_the_model_does(trained, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, _ = trained
    output = str(tmp_path / "tagger.onnx")
    export_model(model, "onnx", output)
    sentences = [["a", "cat", "finds", "the", "tree", "."], ["the", "house"]]
    lengths = [len(s) for s in sentences]
    words = [
        [*model.vocabularies.encode_words(s), *[0] * (max(lengths) - len(s))] for s in sentences
    ]
    session = onnxruntime.InferenceSession(output, providers=["CPUExecutionProvider"])
    feed = {"words": torch.tensor(words).numpy(), "lengths": torch.tensor(lengths).numpy()}
    (ids,) = session.run(["tags"], feed)
    tags = json.loads(Path(vocabulary_path(output)).read_text(encoding="utf-8"))["tags"]
    exported = [[tags[i] for i in row[:n]] for row, n in zip(ids.tolist(), lengths, strict=True)]
    assert exported == [[tag for tag, _ in s] for s in model.eval().tag(sentences)]
