"""Fine-tuning a trained model on new data (issue 24, part 2), through Lightning's public API:
``SequenceTagger.load_from_checkpoint``, ``Trainer.fit`` with a ``TaggingDataModule``, and
``model.extended(dm.spec)``, on tiny chunking corpora whose new file has a tag (``B-PP``) and
words the trained model never saw."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import REPO, assert_one_line_error, run_seqtag, train_checkpoint

from seqtag import ConfigError, SequenceTagger, TaggingDataModule

pytestmark = pytest.mark.usefixtures("one_thread")

NOUNS = ["dog", "cat", "house", "tree"]
NEW_NOUNS = ["garden", "river"]  # only in the new file; vectors for the first one only
VERBS = ["sees", "likes", "runs"]
DIM = 16
QUIET = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def _sentence(rng: random.Random, new: bool) -> list[tuple[str, str]]:
    def phrase(nouns: list[str]) -> list[tuple[str, str]]:
        return [(rng.choice(["the", "a"]), "B-NP"), (rng.choice(nouns), "I-NP")]

    rows = [*phrase(NOUNS), (rng.choice(VERBS), "B-VP")]
    if new:  # "... sees in the garden ."
        rows += [(rng.choice(["in", "near"]), "B-PP"), *phrase(NEW_NOUNS)]
    else:
        rows += phrase(NOUNS)
    return [*rows, (".", "O")]


def _write(path: Path, count: int, seed: int, new: bool) -> Path:
    rng = random.Random(seed)
    blocks = ["\n".join(f"{w} {t}" for w, t in _sentence(rng, new)) for _ in range(count)]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def _vectors(path: Path, words: list[str], dim: int = DIM) -> Path:
    """A word2vec text file: one fixed random vector per word."""
    rng = np.random.default_rng(0)
    lines = [f"{len(words)} {dim}"]
    lines += [f"{w} " + " ".join(f"{x:.6f}" for x in rng.normal(size=dim)) for w in words]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fine-tuning")
    words = ["the", "a", *NOUNS, *VERBS, ".", "in", "garden"]  # "near", "river": no vector
    return {
        "folder": folder,
        "old": _write(folder / "old.txt", 40, 1, new=False),
        "new": _write(folder / "new.txt", 40, 2, new=True),
        "vectors": _vectors(folder / "vectors.txt", words),
        "other_width": _vectors(folder / "wide.txt", words, dim=DIM + 4),
    }


#: The two models: a CRF on characters and vectors, trained in BIOES from IOB2 files (the new
#: tag is then S-PP), and softmax on words alone, without vectors.
MODELS = {
    "crf": (
        {"decoder": "crf", "char_features": "cnn", "char_dim": 8, "char_hidden_size": 8},
        {"tag_scheme": "iob2", "train_scheme": "bioes"},
    ),
    "softmax": ({"decoder": "softmax", "embedding_dim": DIM}, {"tag_scheme": "iob2"}),
}


def _data(files, kind: str, train: str, **options) -> TaggingDataModule:
    schemes = MODELS[kind][1]
    vectors = {"vectors": str(files["vectors"])} if kind == "crf" else {}
    return TaggingDataModule(
        train_path=str(files[train]),
        format="columns",
        batch_size=8,
        **{**schemes, **vectors, **options},
    )


@pytest.fixture(scope="module")
def checkpoints(files):
    """The checkpoint of each kind of model trained on the old file, trained when first asked."""
    made: dict[str, Path] = {}

    def checkpoint(kind: str) -> Path:
        if kind not in made:
            model = SequenceTagger(hidden_size=16, **MODELS[kind][0])
            data = _data(files, kind, "old")
            made[kind] = train_checkpoint(files["folder"] / kind, data, model, epochs=2)
        return made[kind]

    return checkpoint


BOTH = pytest.mark.parametrize("kind", sorted(MODELS))


def _sentences(path: Path) -> list[list[str]]:
    blocks = path.read_text(encoding="utf-8").strip().split("\n\n")
    return [[line.split()[0] for line in block.splitlines()] for block in blocks]


def _assert_same_tagging(got, expected) -> None:
    assert [[t for t, _ in s] for s in got] == [[t for t, _ in s] for s in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert [c for _, c in mine] == pytest.approx([c for _, c in theirs], abs=1e-6)


def _new_tag(kind: str) -> str:
    return "S-PP" if kind == "crf" else "B-PP"


@BOTH
def test_fitting_a_loaded_model_on_new_tags_is_a_one_line_error(files, checkpoints, kind):
    checkpoint = checkpoints(kind)
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    with pytest.raises(ConfigError) as caught:
        pl.Trainer(max_epochs=1, **QUIET).fit(model, datamodule=_data(files, kind, "new"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{files['new']}: 40 training tokens have tags the model does not")
    assert f"{_new_tag(kind)} (40)" in message
    assert "model.extended(dm.spec)" in message and "train a new model" in message


def test_the_error_names_a_few_tags_and_counts_the_rest(files, checkpoints):
    kind = "softmax"
    checkpoint = checkpoints(kind)
    types = [f"T{i}" for i in range(8)]
    sentences = [(["the", "dog", "."], [f"B-{t}", f"I-{t}", "O"]) for t in types]
    data = TaggingDataModule(train_path=sentences, tag_scheme="iob2")
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    with pytest.raises(ConfigError, match=r"B-T\d \(1\), .* and 11 more, and fine-tuning"):
        pl.Trainer(max_epochs=1, **QUIET).fit(model, datamodule=data)


@BOTH
def test_validation_data_with_new_tags_is_still_scored(files, checkpoints, kind, caplog):
    """Evaluating on tags the model never learned is legitimate: a warning, counted as errors."""
    checkpoint = checkpoints(kind)
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    data = _data(files, kind, "old", val_path=str(files["new"]))
    trainer = pl.Trainer(max_epochs=1, **QUIET)
    with caplog.at_level(logging.WARNING, logger="seqtag"):
        trainer.validate(model, datamodule=data)
    assert any(f"{_new_tag(kind)} (40)" in r.getMessage() for r in caplog.records)
    assert float(trainer.callback_metrics["val_acc"]) < 1.0


@BOTH
def test_the_extended_model_tags_as_before_and_keeps_every_old_weight(files, checkpoints, kind):
    checkpoint = checkpoints(kind)
    old = SequenceTagger.load_from_checkpoint(checkpoint).eval()
    before = old.state_dict()
    extended = old.extended(_data(files, kind, "new").spec).eval()

    for name in ("words", "tags", "chars"):
        mine, theirs = getattr(extended.vocabularies, name), getattr(old.vocabularies, name)
        if theirs is None:
            assert mine is None
            continue
        assert mine.items[: len(theirs)] == theirs.items  # old ids unchanged
    assert extended.vocabularies.tags.items[len(old.vocabularies.tags) :] == (_new_tag(kind),)
    assert "garden" in extended.vocabularies.words and "garden" not in old.vocabularies.words
    assert old.state_dict().keys() == before.keys()  # the model extended is left as it was
    for name, value in before.items():
        if isinstance(value, torch.Tensor):
            grown = extended.state_dict()[name]
            assert torch.equal(grown[tuple(slice(0, n) for n in value.shape)], value), name
            assert torch.equal(old.state_dict()[name], value), name

    old_data = _sentences(files["old"])
    _assert_same_tagging(extended.tag(old_data), old.tag(old_data))
    if kind == "softmax":  # no vectors: new words start as the model read them, nothing changes
        new_data = _sentences(files["new"])
        _assert_same_tagging(extended.tag(new_data), old.tag(new_data))


def test_new_words_start_from_their_vectors(files, checkpoints):
    kind = "crf"
    checkpoint = checkpoints(kind)
    old = SequenceTagger.load_from_checkpoint(checkpoint)
    spec = _data(files, kind, "new").spec
    extended = old.extended(spec)
    words = extended.vocabularies.words
    table = extended.tagger.encoder.embeddings.weight
    vector = files["vectors"].read_text(encoding="utf-8").splitlines()[-1].split()
    assert vector[0] == "garden"
    expected = torch.tensor([float(x) for x in vector[1:]])
    assert torch.equal(table[words.index("garden")], expected)
    counts = dict(zip(spec.vocabularies.words.items, spec.word_counts.tolist(), strict=True))
    probability = extended.tagger.encoder.unknown_probability[words.index("garden")]
    assert float(probability) == pytest.approx(0.25 / (0.25 + counts["garden"]))


def test_new_words_without_vectors_start_as_the_model_read_them(files, checkpoints):
    kind = "softmax"
    checkpoint = checkpoints(kind)
    old = SequenceTagger.load_from_checkpoint(checkpoint)
    extended = old.extended(_data(files, kind, "new").spec)
    table = extended.tagger.encoder.embeddings.weight
    for word in ("garden", "river", "in"):
        row = old.tagger.encoder.embeddings.weight[old.vocabularies.words.index(word)]
        assert torch.equal(table[extended.vocabularies.words.index(word)], row)


@BOTH
def test_fine_tuned_extended_model_predicts_the_new_tag_and_reloads(
    files, checkpoints, kind, tmp_path
):
    checkpoint = checkpoints(kind)
    extended = SequenceTagger.load_from_checkpoint(checkpoint, lr=0.05)
    data = _data(files, kind, "new")
    extended = extended.extended(data.spec)
    pl.seed_everything(0)
    trainer = pl.Trainer(max_epochs=6, **QUIET)
    trainer.fit(extended, datamodule=data)
    sentence = [["the", "dog", "sees", "in", "the", "garden", "."]]
    tagged = extended.eval().tag(sentence)
    assert [tag for tag, _ in tagged[0]] == ["B-NP", "I-NP", "B-VP", "B-PP", "B-NP", "I-NP", "O"]

    path = tmp_path / "fine-tuned.ckpt"
    trainer.save_checkpoint(path)
    torch.load(path, weights_only=True)  # plain data and tensors only
    reloaded = SequenceTagger.load_from_checkpoint(path).eval()
    assert reloaded.vocabularies == extended.vocabularies
    _assert_same_tagging(reloaded.tag(sentence), tagged)


@BOTH
def test_extending_refuses_data_read_otherwise(files, checkpoints, kind):
    checkpoint = checkpoints(kind)
    old = SequenceTagger.load_from_checkpoint(checkpoint)
    with pytest.raises(ConfigError, match="lowercase=True, but the model was trained with False"):
        old.extended(_data(files, kind, "new", lowercase=True).spec)
    with pytest.raises(ConfigError, match="takes the new data's DataSpec"):
        old.extended(_data(files, kind, "new"))
    with pytest.raises(ConfigError, match="needs a trained model"):
        SequenceTagger().extended(_data(files, kind, "new").spec)
    if kind == "crf":
        wide = _data(files, kind, "new", vectors=str(files["other_width"])).spec
        with pytest.raises(ConfigError, match=f"dimension {DIM + 4}, the model's word embed"):
            old.extended(wide)
    else:
        with pytest.raises(ConfigError, match="tag_scheme=None, but the model was trained with"):
            old.extended(_data(files, kind, "new", tag_scheme=None).spec)


def test_a_checkpoint_from_before_the_redesign_loads_and_extends():
    """``tests/fixtures/before_redesign.ckpt`` (seqtag fit at 861c7ca: character CNN, CRF,
    UPOS) extended with tags and words it never saw tags as it did."""
    old = SequenceTagger.load_from_checkpoint(REPO / "tests/fixtures/before_redesign.ckpt").eval()
    sentences = [(["The", "old", "dog", "runs", "."], ["DET", "ADJ", "NOUN", "VERB", "PUNCT"])]
    extended = old.extended(TaggingDataModule(train_path=sentences).spec).eval()
    assert set(extended.vocabularies.tags.items) - set(old.vocabularies.tags.items) == {
        "ADJ",
        "DET",
    }
    text = [["The", "dog", "runs", "."], ["A", "cat"], ["The", "old", "dog"]]
    _assert_same_tagging(extended.tag(text), old.tag(text))


def test_seqtag_fit_resuming_on_new_tags_is_a_one_line_error(files, checkpoints, tmp_path):
    """The command line meets the same refusal: ``fit --ckpt_path`` resumes the model's run,
    vocabularies included, so a file with new tags cannot continue it."""
    result = run_seqtag(
        "fit",
        "--ckpt_path",
        str(checkpoints("softmax")),
        "--data.train_path",
        str(files["new"]),
        "--data.format",
        "columns",
        "--data.tag_scheme",
        "iob2",
        "--model.hidden_size",
        "16",
        "--model.embedding_dim",
        str(DIM),
        "--trainer.max_epochs",
        "3",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "40 training tokens have tags the model does not know, B-PP")
