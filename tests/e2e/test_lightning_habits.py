"""Lightning habits that copy, move or reload a model built without ``spec=``.

A user writes ``SequenceTagger(hidden_size=...)`` and lets ``trainer.fit(model, datamodule=dm)``
build the network. Lightning's callbacks and strategies copy the model before the first batch
(StochasticWeightAveraging and WeightAveraging in ``setup``, ModelPruning its layers),
``ddp_spawn`` trains in worker processes and loads their weights back into the user's object, a
user deep-copies or pickles a model, or saves a plain ``state_dict()``. Only Lightning's and
torch's public API drive the model here, on a tiny synthetic corpus, and every test checks what
the user would see: the weights that end up in their model object, and its tags.
"""

from __future__ import annotations

import copy
import pickle
import random
import warnings

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import (
    EMAWeightAveraging,
    ModelCheckpoint,
    ModelPruning,
    StochasticWeightAveraging,
)
from lightning.pytorch.loggers import CSVLogger

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.checkpoint.plugin import SeqtagCheckpointIO
from seqtag.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = {
    "DET": ["the", "a", "this"],
    "ADJ": ["big", "red", "old"],
    "NOUN": ["dog", "cat", "house", "tree"],
    "VERB": ["sees", "likes", "finds"],
    "ADP": ["in", "on", "near"],
}
SENTENCES = [
    ["the", "big", "dog", "sees", "a", "cat", "."],
    ["a", "tree", "likes", "this", "house"],
]
EPOCHS = 3


def _phrase(rng: random.Random) -> list[tuple[str, str]]:
    words = [(rng.choice(WORDS["DET"]), "DET")]
    if rng.random() < 0.5:
        words.append((rng.choice(WORDS["ADJ"]), "ADJ"))
    return [*words, (rng.choice(WORDS["NOUN"]), "NOUN")]


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    tokens = [*_phrase(rng), (rng.choice(WORDS["VERB"]), "VERB"), *_phrase(rng)]
    if rng.random() < 0.5:
        tokens += [(rng.choice(WORDS["ADP"]), "ADP"), *_phrase(rng)]
    return [*tokens, (".", "PUNCT")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    """Train and dev files of a tiny tagging task (one tag per word), in two columns."""
    folder = tmp_path_factory.mktemp("habits")
    files = {}
    for split, count, seed in (("train", 80, 1), ("dev", 20, 2)):
        rng = random.Random(seed)
        blocks = ["\n".join(f"{w} {t}" for w, t in _sentence(rng)) for _ in range(count)]
        files[split] = str(folder / f"{split}.txt")
        (folder / f"{split}.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return files


def _data(corpus: dict[str, str]) -> TaggingDataModule:
    return TaggingDataModule(
        train_path=corpus["train"], val_path=corpus["dev"], format="columns", batch_size=8
    )


def _model(**settings) -> SequenceTagger:
    return SequenceTagger(**{"hidden_size": 16, "lr": 0.01, **settings})


def _trainer(folder, **settings) -> pl.Trainer:
    options = dict(
        max_epochs=EPOCHS,
        default_root_dir=folder,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**options, **settings})


def _fit(model: SequenceTagger, corpus, folder, **settings) -> pl.Trainer:
    pl.seed_everything(0)
    trainer = _trainer(folder, **settings)
    trainer.fit(model, datamodule=_data(corpus))
    return trainer


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _tags(model: SequenceTagger) -> list[list[str]]:
    return [[tag for tag, _ in sentence] for sentence in model.tag(SENTENCES)]


class Snapshots(pl.Callback):
    """The model's parameters as every training epoch starts and after every step."""

    def __init__(self) -> None:
        self.epoch_starts: list[dict[str, torch.Tensor]] = []
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_starts.append(_weights(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(_weights(pl_module))


@pytest.fixture(scope="module")
def plain_run(corpus, tmp_path_factory) -> dict:
    """A model built by its fit, with no callback: its weights, tags and hparams.yaml."""
    folder = tmp_path_factory.mktemp("plain")
    model = _model()
    _fit(model, corpus, folder, logger=CSVLogger(folder, name="logs"))
    hparams = yaml.safe_load((folder / "logs" / "version_0" / "hparams.yaml").read_text())
    return {"model": model, "weights": _weights(model), "tags": _tags(model), "hparams": hparams}


def test_a_plain_fit_learns_the_task_and_records_the_width_it_trained(plain_run):
    assert plain_run["tags"] == [
        ["DET", "ADJ", "NOUN", "VERB", "DET", "NOUN", "PUNCT"],
        ["DET", "NOUN", "VERB", "DET", "NOUN"],
    ]
    model = plain_run["model"]
    assert model.hparams.embedding_dim is None  # the argument, as given
    assert plain_run["hparams"]["embedding_dim"] == 100  # hparams.yaml: the network's width
    assert model.tagger.encoder.embeddings.embedding_dim == 100


def test_stochastic_weight_averaging_leaves_the_average_in_the_model(corpus, plain_run, tmp_path):
    model, snapshots = _model(), Snapshots()
    swa = StochasticWeightAveraging(swa_lrs=1e-3, swa_epoch_start=1)
    _fit(model, corpus, tmp_path, callbacks=[snapshots, swa])
    # Lightning's SWA averages the weights every epoch from swa_epoch_start (counted from 1)
    # starts with; after the last epoch the average replaces the model's weights.
    starts = snapshots.epoch_starts
    assert len(starts) == EPOCHS
    for name, value in _weights(model).items():
        torch.testing.assert_close(value, sum(s[name] for s in starts) / EPOCHS, msg=name)
    last = snapshots.steps[-1]
    assert any(not torch.equal(value, last[name]) for name, value in _weights(model).items())
    assert any(not torch.equal(v, plain_run["weights"][n]) for n, v in _weights(model).items())
    assert _tags(model)[1] == ["DET", "NOUN", "VERB", "DET", "NOUN"]


def test_ema_weight_averaging_leaves_the_moving_average_in_the_model(corpus, tmp_path):
    model, snapshots = _model(), Snapshots()
    decay = 0.7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(model, corpus, tmp_path, callbacks=[snapshots, EMAWeightAveraging(decay=decay)])
    # The model does not override configure_model, so no warning about sharded layers.
    assert not [w for w in caught if "configure_model" in str(w.message)]
    expected = snapshots.steps[0]
    for step in snapshots.steps[1:]:
        expected = {n: decay * expected[n] + (1 - decay) * step[n] for n in expected}
    for name, value in _weights(model).items():
        torch.testing.assert_close(value, expected[name], msg=name)
    last = snapshots.steps[-1]
    assert any(not torch.equal(value, last[name]) for name, value in _weights(model).items())
    assert _tags(model)[1] == ["DET", "NOUN", "VERB", "DET", "NOUN"]


def test_model_pruning_zeroes_half_the_linear_and_embedding_weights(corpus, tmp_path):
    model = _model()
    pruning = ModelPruning("l1_unstructured", amount=0.5, parameter_names=["weight"])
    trainer = _fit(model, corpus, tmp_path, callbacks=[pruning])
    pruned = [
        module.weight
        for module in model.modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding)
    ]
    assert len(pruned) >= 2  # the word embeddings and the output layer at least
    zeros = sum(int((w == 0).sum()) for w in pruned)
    assert zeros >= 0.5 * sum(w.numel() for w in pruned)
    tags = _tags(model)
    assert all(len(t) == len(s) for t, s in zip(tags, SENTENCES, strict=True))
    trainer.save_checkpoint(tmp_path / "pruned.ckpt")
    loaded = SequenceTagger.load_from_checkpoint(tmp_path / "pruned.ckpt")
    assert _tags(loaded) == tags
    assert torch.equal(
        loaded.tagger.encoder.embeddings.weight, model.tagger.encoder.embeddings.weight
    )


@pytest.mark.parametrize(
    "duplicate",
    [copy.deepcopy, lambda model: pickle.loads(pickle.dumps(model))],
    ids=["deepcopy", "pickle"],
)
def test_a_copy_made_before_fit_trains_exactly_as_the_original(
    corpus, plain_run, tmp_path, duplicate
):
    original = _model()
    copied = duplicate(original)
    _fit(copied, corpus, tmp_path)
    for name, value in _weights(copied).items():
        assert torch.equal(value, plain_run["weights"][name]), name
    assert _tags(copied) == plain_run["tags"]
    assert original.vocabularies is None  # the copy trained, not the original


def test_a_saved_state_dict_loads_into_a_fresh_model_and_tags_identically(plain_run, tmp_path):
    trained = plain_run["model"]
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    fresh = SequenceTagger(hidden_size=16)
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert fresh.tag(SENTENCES) == trained.tag(SENTENCES)  # tags and confidences
    again = SequenceTagger(hidden_size=16)
    again.load_state_dict(trained.state_dict())  # and straight from memory
    assert again.tag(SENTENCES) == trained.tag(SENTENCES)


def test_a_state_dict_of_another_network_is_a_one_line_error(plain_run, tmp_path):
    weights = plain_run["model"].state_dict()
    with pytest.raises(CheckpointError, match="hidden_size=32 contradicts the state dict"):
        SequenceTagger(hidden_size=32).load_state_dict(weights)
    (tmp_path / "other.txt").write_text("zebras NOUN\nrun VERB\n", encoding="utf-8")
    other = TaggingDataModule(train_path=str(tmp_path / "other.txt"), format="columns")
    built = SequenceTagger(spec=other.spec, hidden_size=16)
    with pytest.raises(CheckpointError, match="other vocabularies") as error:
        built.load_state_dict(weights)
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="no vocabularies yet"):
        SequenceTagger(hidden_size=16).state_dict()


def test_a_checkpoint_file_keeps_its_layout(corpus, plain_run, tmp_path):
    """The file's seqtag section says what the state dict's own description would."""
    model = plain_run["model"]
    trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())
    assert checkpoint["hyper_parameters"]["embedding_dim"] == 100
    assert _tags(SequenceTagger.load_from_checkpoint(tmp_path / "model.ckpt")) == plain_run["tags"]
    # Its state_dict alone loads into a model built from the same data, as it always did...
    built = SequenceTagger(spec=_data(corpus).spec, hidden_size=16)
    built.load_state_dict(checkpoint["state_dict"])
    assert built.tag(SENTENCES) == model.tag(SENTENCES)
    assert "_extra_state" not in checkpoint["state_dict"]  # the caller's dict is left alone
    # ...and into a model without a network it says what to do.
    with pytest.raises(CheckpointError, match=r"SequenceTagger.load_from_checkpoint\(path\)"):
        SequenceTagger(hidden_size=16).load_state_dict(checkpoint["state_dict"])


@pytest.mark.slow
@pytest.mark.parametrize("plugins", [[], [SeqtagCheckpointIO()]], ids=["default", "seqtag_io"])
def test_ddp_spawn_leaves_the_trained_weights_in_the_users_model(corpus, tmp_path, plugins):
    """Also through seqtag's checkpoint plugin (``seqtag fit`` installs it), which reads the
    bare state dict that the spawned workers hand back."""
    model = _model(char_features="cnn")
    last = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    _fit(
        model,
        corpus,
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        accelerator="cpu",
        max_epochs=2,
        enable_checkpointing=True,
        callbacks=[last],
        plugins=plugins,
    )
    # The user's object never met the data in this process; the workers' weights built it.
    written = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, written["state_dict"][name]), name
    loaded = SequenceTagger.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert model.tag(SENTENCES) == loaded.tag(SENTENCES)
    assert all(len(t) == len(s) for t, s in zip(_tags(model), SENTENCES, strict=True))
