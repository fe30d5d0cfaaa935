"""Training and evaluating from partial annotation, and test-time calibration metrics, through
Lightning's public API (plain ``Trainer`` with ``TaggingDataModule`` and ``SequenceTagger``)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from seqtag import SequenceTagger, TaggingDataModule, TemperatureCalibration
from seqtag.calibration.reliability import ReliabilityDiagram

pytestmark = pytest.mark.usefixtures("one_thread")

NOUNS = ["dog", "cat", "house", "tree", "car", "bird"]
VERBS = ["sees", "likes", "runs", "finds"]


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    def phrase() -> list[tuple[str, str]]:
        words = [rng.choice(["the", "a", "this"]), rng.choice(NOUNS)]
        return [(w, "B-NP" if i == 0 else "I-NP") for i, w in enumerate(words)]

    return [*phrase(), (rng.choice(VERBS), "B-VP"), *phrase(), (".", "O")]


def _write(path: Path, count: int, seed: int, unknown: float) -> tuple[int, int]:
    """A chunking corpus with a share ``unknown`` of its tags replaced by ``_``; returns the
    number of unknown tags and of sentences holding one."""
    rng = random.Random(seed)
    blocks, tokens, sentences = [], 0, 0
    for _ in range(count):
        lines = []
        for word, tag in _sentence(rng):
            if rng.random() < unknown:
                tag, tokens = "_", tokens + 1
            lines.append(f"{word} {tag}")
        sentences += any(line.endswith(" _") for line in lines)
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return tokens, sentences


def _corpus(folder: Path, unknown: float) -> dict[str, Path | tuple[int, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path | tuple[int, int]] = {}
    for split, count, seed in (("train", 80, 1), ("dev", 24, 2), ("test", 25, 3)):
        files[split] = folder / f"{split}.txt"
        files[f"{split}_unknown"] = _write(folder / f"{split}.txt", count, seed, unknown)
    return files


def _fit(files, folder: Path, decoder: str, spans: bool, callbacks=(), epochs: int = 2):
    schemes = {"tag_scheme": "iob2", "train_scheme": "bioes"} if spans else {}
    data = TaggingDataModule(
        train_path=str(files["train"]),
        val_path=str(files["dev"]),
        test_path=str(files["test"]),
        format="columns",
        batch_size=8,
        **schemes,
    )
    model = SequenceTagger(hidden_size=16, embedding_dim=16, decoder=decoder)
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=folder,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=data)
    return trainer, model, data


@pytest.mark.parametrize(("decoder", "spans"), [("crf", True), ("softmax", True), ("crf", False)])
def test_partial_labels_train_with_a_normal_loss_and_metrics_skip_them(
    tmp_path, decoder, spans, capsys
):
    full = _corpus(tmp_path / "full", unknown=0.0)
    partial = _corpus(tmp_path / "partial", unknown=0.3)
    losses = {}
    for name, files in (("full", full), ("partial", partial)):
        trainer, model, data = _fit(files, tmp_path / name, decoder, spans)
        losses[name] = float(trainer.callback_metrics["train_loss"])
        if name == "partial":
            metrics = trainer.callback_metrics
            tokens, sentences = files["dev_unknown"]
            assert tokens > 0
            assert float(metrics["val_skipped_tokens"]) == tokens
            if spans:
                assert float(metrics["val_skipped_sentences"]) == sentences
            else:
                assert "val_skipped_sentences" not in metrics
            capsys.readouterr()
            (result,) = trainer.test(model, datamodule=data, verbose=False)
            assert result["test_skipped_tokens"] == files["test_unknown"][0]
            assert f"skipped: {files['test_unknown'][0]} tokens" in capsys.readouterr().out
            assert math.isfinite(result["test_loss"])
        else:
            assert float(trainer.callback_metrics["val_skipped_tokens"]) == 0
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
    # Unknown tags neither blow the loss up nor make it vanish: the same order of size.
    assert 0.2 < losses["partial"] / losses["full"] < 5


def test_a_partially_annotated_dev_set_calibrates(tmp_path):
    files = _corpus(tmp_path / "data", unknown=0.3)
    calibration = TemperatureCalibration()
    _, model, _ = _fit(files, tmp_path, "crf", True, callbacks=[calibration])
    assert calibration.temperature is not None and math.isfinite(calibration.temperature)
    assert float(model.tagger.temperature) == pytest.approx(calibration.temperature)


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_plain_trainer_calibrates_memory_and_checkpoints_and_test_reports_ece(tmp_path, decoder):
    files = _corpus(tmp_path / "data", unknown=0.0)
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ck", filename="best", monitor="val_f1", mode="max", save_last=True
    )
    calibration = TemperatureCalibration()
    trainer, model, data = _fit(
        files, tmp_path, decoder, True, callbacks=[checkpoints, calibration], epochs=3
    )
    temperature = calibration.temperature
    assert temperature is not None and temperature != 1.0
    assert float(model.tagger.temperature) == pytest.approx(temperature)
    assert float(trainer.callback_metrics["temperature"]) == pytest.approx(temperature)
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(tmp_path / "ck" / name, weights_only=True)["state_dict"]
        assert float(state["tagger.temperature"]) != 1.0
    diagram = ReliabilityDiagram(dirpath=str(tmp_path / "plots"))
    tester = pl.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[diagram]
    )
    (result,) = tester.test(model, datamodule=data, verbose=False)
    for key in ("test_ece", "test_ece_uncalibrated", "test_span_ece", "test_span_ece_uncalibrated"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["test_ece"] != result["test_ece_uncalibrated"]
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["reliability.json", "reliability.png", "span_reliability.png"]


def test_without_dev_data_calibration_is_skipped(tmp_path, caplog):
    files = _corpus(tmp_path / "data", unknown=0.0)
    data = TaggingDataModule(train_path=str(files["train"]), format="columns", batch_size=8)
    model = SequenceTagger(hidden_size=8, embedding_dim=8)
    calibration = TemperatureCalibration()
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[calibration],
        default_root_dir=tmp_path,
    )
    with caplog.at_level("INFO", logger="seqtag"):
        trainer.fit(model, datamodule=data)
    assert calibration.temperature is None
    assert float(model.tagger.temperature) == 1.0
    assert "no validation data" in caplog.text


def test_calibration_enabled_must_be_a_bool():
    from seqtag.errors import ConfigError

    with pytest.raises(ConfigError, match=r"calibration\.enabled"):
        TemperatureCalibration(enabled="yes")  # type: ignore[arg-type]


def test_a_trained_model_scores_data_with_another_missing_tag_marker(tmp_path):
    """The marker belongs to the data: a test file that marks unknown tags with ``?`` is scored
    by a model trained on ``_``-marked data, its ``?`` tokens skipped and counted."""
    files = _corpus(tmp_path / "partial", unknown=0.3)
    trainer, model, _ = _fit(files, tmp_path / "run", "crf", spans=True, epochs=1)
    tokens, _sentences = files["test_unknown"]
    marked = tmp_path / "test-question-marks.txt"
    text = files["test"].read_text(encoding="utf-8")
    marked.write_text(text.replace(" _\n", " ?\n"), encoding="utf-8")
    results = {}
    for name, path, marker in (("underscore", files["test"], "_"), ("question", marked, "?")):
        data = TaggingDataModule(
            test_path=str(path),
            format="columns",
            tag_scheme="iob2",
            train_scheme="bioes",
            missing_tag=marker,
        )
        (results[name],) = trainer.test(model, datamodule=data, verbose=False)
    assert tokens > 0
    assert results["question"]["test_skipped_tokens"] == tokens
    assert results["question"] == pytest.approx(results["underscore"])
