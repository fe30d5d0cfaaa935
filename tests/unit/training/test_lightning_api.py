"""seqtag inside somebody else's Lightning code: only Lightning's public API drives it here.

Plain ``Trainer``, plain ``LightningCLI``, ``Tuner`` and ``load_from_checkpoint``, with a tiny
synthetic chunking corpus written by the fixture (no seqtag CLI class anywhere in this file).
"""

from __future__ import annotations

import random

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.tuner import Tuner

from seqtag import DataSpec, SequenceTagger, TaggingDataModule, in_input_order
from seqtag.checkpoint.io import CHECKPOINT_KEY
from seqtag.data.schemes import convert_tags
from seqtag.errors import CheckpointError, ConfigError

DETERMINERS = ["the", "a", "this", "every"]
ADJECTIVES = ["big", "red", "old", "quick", "green"]
NOUNS = ["dog", "cat", "house", "tree", "car", "bird", "river"]
VERBS = ["sees", "likes", "runs", "finds", "eats"]
PREPOSITIONS = ["in", "on", "near", "under"]


def _noun_phrase(rng: random.Random) -> list[tuple[str, str]]:
    words = [rng.choice(DETERMINERS)]
    words += [rng.choice(ADJECTIVES) for _ in range(rng.randint(0, 2))]
    words.append(rng.choice(NOUNS))
    return [(w, "B-NP" if i == 0 else "I-NP") for i, w in enumerate(words)]


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    tokens = [*_noun_phrase(rng), (rng.choice(VERBS), "B-VP"), *_noun_phrase(rng)]
    if rng.random() < 0.5:
        tokens += [(rng.choice(PREPOSITIONS), "B-PP"), *_noun_phrase(rng)]
    return [*tokens, (".", "O")]


def _write_corpus(path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    blocks = ["\n".join(f"{w} {t}" for w, t in _sentence(rng)) for _ in range(count)]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> dict[str, str]:
    """Train/dev/test files of a small IOB2 chunking task, in two-column format."""
    folder = tmp_path_factory.mktemp("chunks")
    files = {}
    for split, count, seed in (("train", 120, 1), ("dev", 30, 2), ("test", 31, 3)):
        files[split] = str(folder / f"{split}.txt")
        _write_corpus(folder / f"{split}.txt", count, seed)
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
    options.update(settings)
    return TaggingDataModule(**options)


def _trainer(tmp_path, **settings) -> pl.Trainer:
    options = dict(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    options.update(settings)
    return pl.Trainer(**options)


@pytest.fixture(scope="module")
def bioes_checkpoint(chunks, tmp_path_factory) -> tuple[str, dict[str, float]]:
    """A CRF trained in BIOES on IOB2 files, its checkpoint and its test scores."""
    folder = tmp_path_factory.mktemp("bioes")
    pl.seed_everything(1)
    data = _data(chunks, train_scheme="bioes")
    model = SequenceTagger(hidden_size=16, decoder="crf")
    trainer = _trainer(folder, max_epochs=6)
    trainer.fit(model, datamodule=data)
    path = str(folder / "model.ckpt")
    trainer.save_checkpoint(path)
    scores = trainer.test(model, datamodule=data, verbose=False)[0]
    return path, scores


# -- 1. the network exists before Lightning builds the optimizer ---------------------------
def test_plain_lightning_cli_with_an_sgd_optimizer_trains(chunks, tmp_path):
    cli = LightningCLI(
        SequenceTagger,
        TaggingDataModule,
        save_config_callback=None,
        args=[
            "fit",
            f"--data.train_path={chunks['train']}",
            f"--data.val_path={chunks['dev']}",
            "--data.format=columns",
            "--data.tag_scheme=iob2",
            "--model.hidden_size=16",
            "--optimizer=SGD",
            "--optimizer.lr=0.5",
            "--trainer.max_epochs=15",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
    )
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.5
    # The optimizer made when the CLI started holds the parameters that trained.
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in cli.model.parameters()}
    assert cli.trainer.callback_metrics["val_f1"] > 0.5


def test_fit_with_your_own_dataloaders(chunks, tmp_path):
    data = _data(chunks)
    model = SequenceTagger(spec=data.spec, hidden_size=16)
    data.setup("fit")
    trainer = _trainer(tmp_path, max_epochs=5)
    trainer.fit(
        model, train_dataloaders=data.train_dataloader(), val_dataloaders=data.val_dataloader()
    )
    assert trainer.callback_metrics["val_acc"] > 0.8


def test_fit_with_dataloaders_and_no_data_says_what_to_do(chunks, tmp_path):
    data = _data(chunks)
    data.setup("fit")
    loader = data.train_dataloader()
    with pytest.raises(ConfigError, match=r"SequenceTagger\(spec=dm.spec"):
        _trainer(tmp_path).fit(SequenceTagger(hidden_size=16), train_dataloaders=loader)


def test_data_spec_is_plain_read_only_data(chunks):
    spec = _data(chunks).spec
    assert isinstance(spec, DataSpec)
    assert spec.vocabularies.tags.items == ("B-NP", "B-PP", "B-VP", "I-NP", "O")
    assert not spec.word_counts.flags.writeable
    with pytest.raises(AttributeError):
        spec.word_counts = None


# -- 2. optimizer and learning rate are ordinary hyper-parameters --------------------------
def test_default_optimizer_is_the_benchmarked_recipe():
    optimizer_config = SequenceTagger(hidden_size=16).configure_optimizers()
    optimizer = optimizer_config["optimizer"]
    scheduler = optimizer_config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 2e-3
    assert isinstance(scheduler, torch.optim.lr_scheduler.ExponentialLR)
    assert scheduler.gamma == 0.85


def test_lr_is_a_hyper_parameter_of_any_optimizer():
    model = SequenceTagger(hidden_size=16, lr=0.01, optimizer=lambda p: torch.optim.SGD(p, lr=1))
    optimizer = model.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.01


def test_lr_find_suggests_and_the_suggestion_is_used(chunks, tmp_path):
    data = _data(chunks)
    model = SequenceTagger(hidden_size=16)
    trainer = _trainer(tmp_path, max_epochs=1)
    finder = Tuner(trainer).lr_find(model, datamodule=data, num_training=20, min_lr=1e-4)
    suggestion = finder.suggestion()
    assert suggestion is not None and 1e-4 <= suggestion <= 1.0
    assert model.hparams.lr == suggestion
    trainer.fit(model, datamodule=data)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == suggestion


# -- 3. the checkpoint decides how text is encoded -----------------------------------------
def test_retest_without_repeating_train_scheme_gives_the_same_numbers(
    bioes_checkpoint, chunks, tmp_path
):
    path, trained_scores = bioes_checkpoint
    model = SequenceTagger.load_from_checkpoint(path)
    data = _data(chunks)  # train_scheme not repeated: the checkpoint's BIOES applies
    scores = _trainer(tmp_path).test(model, datamodule=data, verbose=False)[0]
    assert scores == pytest.approx(trained_scores, abs=1e-6)


def test_contradicting_the_checkpoint_is_an_error(bioes_checkpoint, chunks, tmp_path):
    path, _ = bioes_checkpoint
    model = SequenceTagger.load_from_checkpoint(path)
    with pytest.raises(ConfigError, match=r"data.train_scheme is 'iob2'.*trained with 'bioes'"):
        _trainer(tmp_path).test(model, datamodule=_data(chunks, train_scheme="iob2"))


def test_trainer_ckpt_path_restores_into_a_default_model(bioes_checkpoint, chunks, tmp_path):
    path, trained_scores = bioes_checkpoint
    model = SequenceTagger(hidden_size=16, decoder="crf")
    scores = _trainer(tmp_path).test(model, datamodule=_data(chunks), ckpt_path=path)[0]
    assert scores == pytest.approx(trained_scores, abs=1e-6)


def test_a_checkpoint_of_another_architecture_is_refused(bioes_checkpoint, chunks, tmp_path):
    path, _ = bioes_checkpoint
    model = SequenceTagger(hidden_size=32, decoder="crf")
    expected = "hidden_size=32 contradicts the checkpoint, whose network was trained with "
    expected += "hidden_size=16"
    with pytest.raises(CheckpointError, match=expected):
        _trainer(tmp_path).test(model, datamodule=_data(chunks), ckpt_path=path)


def test_checkpoint_from_a_newer_seqtag_is_refused(bioes_checkpoint, tmp_path):
    path, _ = bioes_checkpoint
    checkpoint = torch.load(path, weights_only=True)
    checkpoint[CHECKPOINT_KEY]["format_version"] = 99
    newer = tmp_path / "newer.ckpt"
    torch.save(checkpoint, newer)
    with pytest.raises(CheckpointError, match="made by a newer seqtag"):
        SequenceTagger.load_from_checkpoint(newer)


# -- 4. and 5. the Python API refuses wrong input; predictions come back usable -------------
def test_tag_refuses_a_flat_token_list_and_a_bare_string(bioes_checkpoint):
    model = SequenceTagger.load_from_checkpoint(bioes_checkpoint[0])
    with pytest.raises(TypeError, match="one sentence's tokens"):
        model.tag(["the", "dog", "runs", "."])
    with pytest.raises(TypeError, match="one string"):
        model.tag("the dog runs .")
    as_tokens = model.tag([["the", "dog", "runs", "."], ["a", "cat"]])
    assert model.tag(["the dog runs .", "a  cat"]) == as_tokens
    assert [tag for tag, _ in as_tokens[0]] == ["B-NP", "I-NP", "B-VP", "O"]


def test_trainer_predict_output_in_input_order_with_tokens(bioes_checkpoint, chunks, tmp_path):
    model = SequenceTagger.load_from_checkpoint(bioes_checkpoint[0])
    data = _data(chunks, predict_path=chunks["test"])
    predictions = in_input_order(_trainer(tmp_path).predict(model, datamodule=data))
    sentences = data.sentences("predict")
    assert [p["index"] for p in predictions] == list(range(len(sentences)))
    assert [p["tokens"] for p in predictions] == [list(s.tokens) for s in sentences]
    assert all(len(p["tags"]) == len(p["tokens"]) for p in predictions)


# -- 7. span tasks report every score in the corpus scheme ---------------------------------
def test_span_task_accuracy_is_in_the_corpus_scheme(bioes_checkpoint, chunks, tmp_path):
    path, scores = bioes_checkpoint
    model = SequenceTagger.load_from_checkpoint(path)
    data = _data(chunks, predict_path=chunks["test"])
    predictions = in_input_order(_trainer(tmp_path).predict(model, datamodule=data))
    gold = [s.tags for s in data.sentences("predict")]
    correct = sum(
        predicted == expected
        for sentence, tags in zip(predictions, gold, strict=True)
        for predicted, expected in zip(sentence["tags"], tags, strict=True)
    )
    total = sum(len(tags) for tags in gold)
    assert scores["test_acc"] == pytest.approx(correct / total, abs=1e-9)
    # ...which is not the same number as in the training scheme whenever spans are long:
    assert any(convert_tags(tags, "iob2", "bioes") != list(tags) for tags in gold)


# -- 9. small promises of the API ----------------------------------------------------------
def test_char_hidden_size_sets_the_cnn_filters(chunks):
    model = SequenceTagger(spec=_data(chunks).spec, char_features="cnn", char_hidden_size=20)
    assert model.tagger.encoder.char_encoder.output_dim == 20


def test_embedding_dim_is_recorded_once_known_and_the_arguments_stay_as_given(chunks):
    unbuilt = SequenceTagger(hidden_size=16)
    assert unbuilt.hparams_initial.embedding_dim is None  # nothing decided yet
    model = SequenceTagger(spec=_data(chunks).spec, hidden_size=16)
    assert model.tagger.encoder.embeddings.embedding_dim == 100  # no vectors: the default
    assert model.hparams.embedding_dim is None  # the argument as given: "the vectors' width"
    assert model.hparams_initial.embedding_dim == 100  # what loggers write to hparams.yaml


def test_public_names_are_importable():
    import seqtag

    for name in ("BiRNN", "BiRNNEncoder", "CRF", "SeqtagCLI", "DataSpec", "in_input_order"):
        assert getattr(seqtag, name) is not None
