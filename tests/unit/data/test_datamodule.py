"""TaggingDataModule on tiny corpora written here, with a tiny vector file."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import train_checkpoint

from seqtag.data.batching import UNSEEN_TARGET
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import ConfigError, CorpusFormatError, VectorFormatError
from seqtag.training.module import SequenceTagger

TRAIN = """\
the DET
cat NOUN
sleeps VERB

a DET
dog NOUN
barks VERB
loudly ADV

the DET
dog NOUN
sleeps VERB
"""

TEST = """\
a DET
zebra NOUN
runs VERB
1984 NUM
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def corpus(tmp_path) -> dict[str, str]:
    vectors = ["the", "a", "cat", "dog", "zebra", "0000", "sleeps"]
    rows = [
        f"{w} " + " ".join(f"{(i + 1) * 0.1 + j * 0.01:.2f}" for j in range(4))
        for i, w in enumerate(vectors)
    ]
    return {
        "train": _write(tmp_path, "train.txt", TRAIN),
        "test": _write(tmp_path, "test.txt", TEST),
        "vectors": _write(tmp_path, "vectors.txt", f"{len(vectors)} 4\n" + "\n".join(rows) + "\n"),
    }


def _datamodule(corpus, **kwargs) -> TaggingDataModule:
    options = dict(
        train_path=corpus["train"],
        val_path=corpus["test"],
        test_path=corpus["test"],
        format="columns",
        vectors=corpus["vectors"],
        batch_size=2,
    )
    options.update(kwargs)
    return TaggingDataModule(**options)


def test_test_words_with_vectors_are_not_unknown(corpus):
    spec = _datamodule(corpus).spec
    words = spec.vocabularies.words
    # "zebra" occurs only in the test file, but it has a vector: it gets its own row.
    assert "zebra" in words
    assert words.index("zebra") != words.unk_id
    # "1984" finds the vector of "0000" through the digit fallback, under its own row.
    np.testing.assert_allclose(
        spec.embedding_matrix[words.index("1984")], [0.6, 0.61, 0.62, 0.63], rtol=1e-6
    )
    row = words.index("zebra")
    np.testing.assert_allclose(spec.embedding_matrix[row], [0.5, 0.51, 0.52, 0.53], rtol=1e-6)
    # Rare-word dropout needs training counts: zebra was never seen in training.
    assert spec.word_counts[row] == 0 and spec.word_counts[words.index("dog")] == 2


def test_vocabularies_are_deterministic(corpus):
    first, second = _datamodule(corpus).spec, _datamodule(corpus).spec
    assert first.vocabularies == second.vocabularies
    assert list(first.vocabularies.tags) == ["ADV", "DET", "NOUN", "VERB"]


def test_unseen_gold_tags_are_kept_and_warned_about(corpus, caplog):
    dm = _datamodule(corpus)
    dm.setup("fit")
    with caplog.at_level("WARNING"):
        batches = list(dm.test_dataloader())
    tags = torch.cat([b["tags"].flatten() for b in batches])
    assert (tags == UNSEEN_TARGET).sum() == 1  # NUM never occurs in training
    assert "never seen in training" in caplog.text and "NUM (1)" in caplog.text


def test_split_sizes_are_logged(corpus, caplog):
    dm = _datamodule(corpus)
    with caplog.at_level("INFO"):
        dm.setup("fit")
    assert "train: read 3 sentences, 10 tokens" in caplog.text


def test_batches_are_padded_to_the_longest_sentence(corpus):
    dm = _datamodule(corpus, batch_size=3)
    dm.setup("fit")
    (batch,) = list(dm.train_dataloader())
    assert batch["words"].shape == (3, 4)
    assert sorted(batch["lengths"].tolist()) == [3, 3, 4]


def test_dimension_mismatch_is_a_clear_error(corpus):
    dm = _datamodule(corpus)
    model = SequenceTagger(hidden_size=8, embedding_dim=50)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(VectorFormatError, match=r"vectors\.txt.*dimension 4.*embedding_dim is 50"):
        trainer.fit(model, datamodule=dm)


def test_bad_tag_under_a_scheme_names_file_and_line(tmp_path, corpus):
    bad = _write(tmp_path, "ner.txt", "Paris B-LOC\nis O\n\nnice X-ADJ\n")
    dm = _datamodule(corpus, train_path=bad, tag_scheme="iob2")
    with pytest.raises(CorpusFormatError, match=r"ner\.txt:4: .*'X-ADJ'"):
        dm.setup("fit")


def test_evaluation_without_vocabularies_says_what_to_do(corpus):
    dm = _datamodule(corpus, train_path=None)
    with pytest.raises(ConfigError, match="ckpt_path"):
        dm.test_dataloader()


def test_train_fit_and_tag_in_python(corpus, tmp_path):
    pl.seed_everything(0)
    dm = _datamodule(corpus)
    model = SequenceTagger(hidden_size=16, dropout=0.0, rare_word_dropout=0.0, lr_decay=1.0)
    trainer = pl.Trainer(
        max_epochs=100,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.hparams_initial.embedding_dim == 4  # taken from the vectors (hparams.yaml)
    (result,) = model.tag([["the", "zebra", "sleeps"]])
    assert [tag for tag, _ in result] == ["DET", "NOUN", "VERB"]
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    restored = SequenceTagger.load_from_checkpoint(checkpoint)
    assert restored.tag([["the", "zebra", "sleeps"]]) == model.tag([["the", "zebra", "sleeps"]])
    assert torch.load(checkpoint, weights_only=True)["seqtag"]["vocabularies"]["tags"]["items"] == [
        "ADV",
        "DET",
        "NOUN",
        "VERB",
    ]


def test_val_from_train_holds_out_the_last_sentences(corpus):
    dm = _datamodule(corpus, val_path=None, val_from_train=1)
    dm.setup("fit")
    assert [s.tokens for s in dm.sentences("val")] == [("the", "dog", "sleeps")]
    assert len(dm.sentences("train")) == 2
    assert "loudly" in dm.spec.vocabularies.words
    with pytest.raises(ValueError, match="not both"):
        _datamodule(corpus, val_from_train=1)


@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_bf16_mixed_precision_trains_on_cpu(corpus, tmp_path, decoder):
    pl.seed_everything(0)
    dm = _datamodule(corpus)
    model = SequenceTagger(hidden_size=16, dropout=0.0, rare_word_dropout=0.0, decoder=decoder)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        precision="bf16-mixed",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_token_cap_applies_to_training_batches_only(corpus):
    dm = _datamodule(corpus, batch_size=4, max_batch_tokens=6)
    dm.setup("fit")
    assert dm.train_dataloader().sampler.max_tokens == 6
    assert all(b["words"].numel() <= 6 for b in dm.train_dataloader())
    assert dm.val_dataloader().sampler.max_tokens is None


IOB1 = """\
The I-NP
cat I-NP
sat I-VP
on I-PP
the I-NP
mat I-NP
. O

A I-NP
dog I-NP
ran I-VP
. O
"""


def test_iob1_declared_as_iob2_names_the_offending_token_line(tmp_path, corpus):
    path = _write(tmp_path, "iob1.txt", IOB1)
    dm = _datamodule(corpus, train_path=path, val_path=None, test_path=None, tag_scheme="iob2")
    with pytest.raises(
        CorpusFormatError, match=r"iob1\.txt:1: 'I-NP' after \"the sentence's start\""
    ):
        dm.setup("fit")
    dm = _datamodule(corpus, train_path=path, val_path=None, test_path=None, tag_scheme="iob2")
    with pytest.raises(CorpusFormatError, match=r"looks like another scheme"):
        dm.sentences("train")
    # Declared as what it is, the same file reads.
    spec = _datamodule(
        corpus, train_path=path, val_path=None, test_path=None, tag_scheme="iob1", vectors=None
    ).spec
    assert "I-NP" in spec.vocabularies.tags


def test_a_few_ill_formed_tags_are_repaired_and_said(tmp_path, corpus, caplog):
    good = "\n\n".join(["The B-NP\ncat I-NP\nsat B-VP\n. O"] * 9)
    path = _write(tmp_path, "iob2.txt", good + "\n\nA O\ndog I-NP\n. O\n")
    dm = _datamodule(corpus, train_path=path, val_path=None, test_path=None, tag_scheme="iob2")
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "iob2.txt:47: 'I-NP' after 'O' is not well-formed iob2" in caplog.text
    assert "read as the start of a chunk" in caplog.text


def test_a_loop_of_your_own_encodes_with_the_models_vocabularies(corpus, tmp_path):
    """No Trainer: ``encode_with`` gives the loaders the checkpoint's vocabularies."""
    model = SequenceTagger(hidden_size=16, dropout=0.0, rare_word_dropout=0.0)
    checkpoint = train_checkpoint(tmp_path, _datamodule(corpus), model, epochs=3)
    restored = SequenceTagger.load_from_checkpoint(checkpoint).eval()

    dm = _datamodule(corpus, train_path=None, val_path=None)
    with pytest.raises(ConfigError, match="no trained model"):
        dm.test_dataloader()
    dm.encode_with(restored.vocabularies)
    (batch,) = list(dm.test_dataloader())
    with torch.no_grad():
        ids = restored.tagger.predict(restored(batch), batch["mask"])
    tags = restored.to_corpus_tags(ids, batch["lengths"])
    tokens = [line.split()[0] for line in TEST.splitlines()]
    # "zebra" and "1984" never occur in training: encoded as the model would encode them.
    assert tags == [[tag for tag, _ in restored.tag([tokens])[0]]]
    assert batch["words"][0].tolist() == restored.vocabularies.encode_words(tokens)
    # A Trainer whose model has the same vocabularies agrees with the loop.
    gold = [line.split()[1] for line in TEST.splitlines()]
    accuracy = sum(p == g for p, g in zip(tags[0], gold, strict=True)) / len(gold)
    tester = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (scores,) = tester.test(restored, datamodule=dm, verbose=False)
    assert scores["test_acc"] == pytest.approx(accuracy)


def test_encode_with_refuses_non_vocabularies_and_the_trainers_model_hands_over_its_own(
    corpus, tmp_path
):
    dm = _datamodule(corpus, train_path=None, val_path=None)
    model = SequenceTagger(spec=_datamodule(corpus).spec, hidden_size=8)
    with pytest.raises(ConfigError, match="got SequenceTagger"):
        dm.encode_with(model)
    other = _datamodule(corpus, min_freq=2).spec.vocabularies  # fewer words than the model's
    dm.encode_with(other)
    # The model a trainer takes tells the DataModule how it reads text: the batches are the
    # model's, and score as with a DataModule that never saw other vocabularies.
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    (misled,) = trainer.test(model, datamodule=dm, verbose=False)
    fresh = _datamodule(corpus, train_path=None, val_path=None)
    (plain,) = trainer.test(model, datamodule=fresh, verbose=False)
    assert misled == plain
    batch = next(iter(dm.test_dataloader()))
    tokens = [line.split()[0] for line in TEST.splitlines()]
    assert batch["words"][0].tolist() == model.vocabularies.encode_words(tokens)
