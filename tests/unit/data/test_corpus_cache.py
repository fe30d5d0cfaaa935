"""data.corpus_cache: the training file counted and encoded once, trained from mapped arrays."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import DATA, REPO, head_sentences, run_seqtag

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.data import corpus_cache as corpus_cache_module
from seqtag.data import splits as splits_module
from seqtag.errors import CorpusFormatError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEQTAG_CACHE_DIR", str(folder))
    return folder / "corpora"


@pytest.fixture(scope="module")
def ewt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ewt")
    return head_sentences(
        DATA / "ud_en_ewt" / "en_ewt-ud-train.conllu.gz", folder / "t.conllu", 120
    )


def _weights(corpus_cache: bool, model: dict, **data) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    dm = TaggingDataModule(batch_size=8, corpus_cache=corpus_cache, **data)
    tagger = SequenceTagger(hidden_size=16, embedding_dim=8, **model)
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(tagger, datamodule=dm)
    return {k: v for k, v in tagger.state_dict().items() if isinstance(v, torch.Tensor)}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_cache_trains_bit_identical_weights(ewt, cache):
    data = {"train_path": str(ewt), "val_from_train": 20}
    memory = _weights(False, {}, **data)
    _assert_same(memory, _weights(True, {}, **data))  # built
    _assert_same(memory, _weights(True, {}, **data))  # read back
    assert len(list(cache.glob("encoded-*"))) == 1


def test_crf_characters_and_a_scheme_train_bit_identically(tmp_path, cache):
    chunks = tmp_path / "train.txt"
    text = (REPO / "tests" / "fixtures" / "tiny.conll2003.txt").read_text()
    chunks.write_text(text * 3)
    data = {
        "train_path": str(chunks),
        "format": "columns",
        "tag_scheme": "iob2",
        "train_scheme": "bioes",
    }
    model = {"decoder": "crf", "char_features": "cnn", "char_dim": 4, "char_hidden_size": 6}
    _assert_same(_weights(False, model, **data), _weights(True, model, **data))


def _spec_words(path: Path, **data) -> tuple:
    dm = TaggingDataModule(train_path=str(path), corpus_cache=True, **data)
    return dm.spec.vocabularies.words.items


def test_a_warm_start_does_not_read_the_corpus(ewt, cache, monkeypatch):
    words = _spec_words(ewt)

    def refuse(*args, **kwargs):
        raise AssertionError("the corpus was read again")

    # Every reader of a split: the cache's own pass and the in-memory read_split.
    monkeypatch.setattr(corpus_cache_module, "scan_split", refuse)
    monkeypatch.setattr(splits_module, "scan_split", refuse)
    assert _spec_words(ewt) == words


def test_an_edited_corpus_of_the_same_size_is_counted_again(tmp_path, ewt, cache):
    corpus = tmp_path / "c.conllu"
    text = ewt.read_text()
    corpus.write_text(text)
    before = _spec_words(corpus)
    corpus.write_text(text.replace("\tthe\t", "\tqhe\t", 1))  # same size, other content
    after = _spec_words(corpus)
    assert before != after and len(list(cache.glob("counts-*"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "tamper", "header"])
def test_a_damaged_entry_is_rebuilt_with_a_log_line(ewt, cache, caplog, damage):
    data = {"train_path": str(ewt)}
    first = _weights(True, {}, **data)
    entry = next(cache.glob("encoded-*"))
    words = entry / "words.npy"
    if damage == "truncate":
        words.write_bytes(words.read_bytes()[:-10])
    elif damage == "tamper":
        raw = bytearray(words.read_bytes())
        raw[-4:] = (10**9).to_bytes(4, "little")  # a word id past the vocabulary
        words.write_bytes(bytes(raw))
    else:
        (entry / "header.json").write_text('{"identity": 1}')
    with caplog.at_level(logging.INFO, logger="seqtag"):
        _assert_same(first, _weights(True, {}, **data))
    assert "rebuilding the corpus cache entry" in caplog.text


def test_an_unwritable_cache_warns_and_reads_into_memory(tmp_path, ewt, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SEQTAG_CACHE_DIR", str(blocker / "sub"))
    with caplog.at_level(logging.WARNING, logger="seqtag"):
        weights = _weights(True, {}, train_path=str(ewt))
    assert "cannot write the corpus cache" in caplog.text
    _assert_same(weights, _weights(False, {}, train_path=str(ewt)))


def test_a_bad_line_is_a_one_line_error_naming_it(tmp_path, cache):
    corpus = tmp_path / "bad.txt"
    corpus.write_text("The B-NP\ncat\n\n")
    with pytest.raises(CorpusFormatError, match=r"bad\.txt:2:"):
        _spec_words(corpus, format="columns")
    result = run_seqtag(
        "fit",
        f"--data.train_path={corpus}",
        "--data.format=columns",
        "--data.corpus_cache=true",
        "--trainer.max_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "bad.txt:2:" in result.stderr


def test_concurrent_builders_both_succeed_with_the_same_arrays(tmp_path, ewt, cache):
    script = (
        "import sys\nfrom seqtag import TaggingDataModule\n"
        f"dm = TaggingDataModule(train_path={str(ewt)!r}, corpus_cache=True)\n"
        "dm.prepare_data()\ndm.setup('fit')\n"
        "batches = list(dm.train_dataloader())\n"
        "print(len(batches), sum(int(b['words'].sum()) for b in batches))\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert outputs[0] == outputs[1] and outputs[0].strip()
    assert len(list(cache.glob("encoded-*"))) == 1
    assert not list(cache.glob(".partial-*"))
