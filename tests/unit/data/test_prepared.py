"""Prepared corpora (seqtag.data.prepared): written once, trained from with a plain Trainer, and
every damaged or contradicting folder refused in one line, never used silently."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.data.io.formats import read_corpus
from seqtag.data.prepared import prepare_corpus
from seqtag.data.prepared_loader import PreparedBatches
from seqtag.errors import ConfigError, CorpusFormatError, OutputError

pytest.importorskip("litdata")
pytestmark = pytest.mark.usefixtures("one_thread")

MANIFEST = "seqtag-prepared.json"


@pytest.fixture(scope="module")
def prepared(ewt_slice, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prepared") / "ewt"
    manifest = prepare_corpus(TaggingDataModule(train_path=str(ewt_slice["train"])), str(folder))
    assert (manifest["sentences"], manifest["tokens"]) == (300, 7027)
    return folder


@pytest.fixture(scope="module")
def from_file(ewt_slice) -> TaggingDataModule:
    return TaggingDataModule(train_path=str(ewt_slice["train"]), batch_size=8)


def _copy(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "copy"))


def _edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def test_the_spec_is_the_one_fit_makes_from_the_file(prepared, from_file):
    spec = TaggingDataModule(train_path=str(prepared)).spec
    assert spec.vocabularies.to_dict() == from_file.spec.vocabularies.to_dict()
    assert np.array_equal(spec.word_counts, from_file.spec.word_counts)


def test_one_pass_holds_every_sentence_once_as_the_file_encodes_it(prepared, from_file):
    data = TaggingDataModule(train_path=str(prepared), batch_size=8)
    expected = from_file.encode("train")
    seen = []
    for batch in data.train_dataloader():
        assert len(batch["index"]) <= 8
        for row, index in enumerate(batch["index"].tolist()):
            length = int(batch["lengths"][row])
            sentence = expected[index]
            assert batch["words"][row, :length].tolist() == sentence.words.tolist()
            assert batch["tags"][row, :length].tolist() == sentence.tags.tolist()
            chars = batch["chars"][row, :length]
            for col, word in enumerate(sentence.chars):
                assert chars[col, : len(word)].tolist() == word.tolist()
            seen.append(index)
    assert sorted(seen) == list(range(300)) and seen != sorted(seen)  # shuffled, all once


def test_a_plain_trainer_learns_from_the_folder(prepared, ewt_slice):
    data = TaggingDataModule(train_path=str(prepared), batch_size=8, seed=3)
    model = SequenceTagger(hidden_size=32, embedding_dim=32)
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    sentences = read_corpus(ewt_slice["train"], "conllu")
    tagged = model.tag([s.tokens for s in sentences], confidences=False)
    gold = [tag for sentence in sentences for tag in sentence.tags]
    predicted = [tag for tags in tagged for tag in tags]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    assert accuracy > 0.45  # chance is 1/17, the most frequent tag 0.17; the file gives 0.56


def test_an_output_that_holds_files_is_refused_untouched(prepared, ewt_slice, tmp_path):
    data = TaggingDataModule(train_path=str(ewt_slice["train"]))
    before = sorted(p.name for p in prepared.iterdir())
    with pytest.raises(OutputError, match="already holds a prepared corpus"):
        prepare_corpus(data, str(prepared))
    assert sorted(p.name for p in prepared.iterdir()) == before
    (tmp_path / "keep.bin").write_bytes(b"mine")
    with pytest.raises(OutputError, match="already holds files"):
        prepare_corpus(data, str(tmp_path))
    assert (tmp_path / "keep.bin").read_bytes() == b"mine"


def _other_version(m):
    m["format_version"] = 2


def _words_not_strings(m):
    m["vocabularies"]["words"]["items"][0] = 7


def _negative_count(m):
    m["word_counts"][3] = -1


def _chunk_elsewhere(m):
    m["chunks"][0]["filename"] = "../elsewhere.bin"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_other_version, "format version 2, and this seqtag reads version 1"),
        (_words_not_strings, "vocabularies are damaged"),
        (_negative_count, "word_counts must be one count >= 0 per word"),
        (_chunk_elsewhere, "chunk list is damaged"),
    ],
)
def test_a_tampered_manifest_is_refused(prepared, tmp_path, change, message):
    folder = _copy(prepared, tmp_path)
    _edit_manifest(folder, change)
    with pytest.raises(CorpusFormatError, match=message) as caught:
        TaggingDataModule(train_path=str(folder)).spec  # noqa: B018
    assert str(caught.value).startswith(str(folder)) and "\n" not in str(caught.value)


def test_a_manifest_that_is_not_json_or_missing_is_refused(prepared, tmp_path):
    folder = _copy(prepared, tmp_path)
    (folder / MANIFEST).write_bytes(b"\x80(cos\nsystem\n")  # a pickle, say
    with pytest.raises(CorpusFormatError, match="is not JSON"):
        TaggingDataModule(train_path=str(folder)).spec  # noqa: B018
    (folder / MANIFEST).unlink()
    with pytest.raises(CorpusFormatError, match=r"no seqtag-prepared.json"):
        TaggingDataModule(train_path=str(folder)).spec  # noqa: B018


def _chunk(folder: Path) -> Path:
    return next(folder.glob("chunk-*.bin"))


def test_changed_or_missing_chunks_are_refused(prepared, tmp_path):
    folder = _copy(prepared, tmp_path)
    chunk = _chunk(folder)
    data = bytearray(chunk.read_bytes())
    data[-10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorpusFormatError, match="was changed or is damaged"):
        TaggingDataModule(train_path=str(folder), batch_size=8).train_dataloader()
    chunk.unlink()
    with pytest.raises(CorpusFormatError, match="is missing"):
        TaggingDataModule(train_path=str(folder), batch_size=8).train_dataloader()


def test_an_index_that_asks_for_pickle_is_refused(prepared, tmp_path):
    folder = _copy(prepared, tmp_path)
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["config"]["data_format"][1] = "pickle"
    text = json.dumps(index)
    index_path.write_text(text, encoding="utf-8")
    data = TaggingDataModule(train_path=str(folder), batch_size=8)
    with pytest.raises(CorpusFormatError, match=r"is not the one seqtag-prepared.json records"):
        data.train_dataloader()
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    _edit_manifest(folder, lambda m: m.update(index_sha256=digest))  # a thorough forger
    with pytest.raises(CorpusFormatError, match="describes items seqtag prepare does not write"):
        TaggingDataModule(train_path=str(folder), batch_size=8).train_dataloader()


def test_options_and_vocabularies_that_contradict_the_corpus_are_refused(prepared, from_file):
    with pytest.raises(ConfigError, match=r"data.lowercase is True, but .* prepared with None"):
        TaggingDataModule(train_path=str(prepared), lowercase=True).spec  # noqa: B018
    with pytest.raises(ConfigError, match=r"data.val_from_train cannot hold sentences out"):
        TaggingDataModule(train_path=str(prepared), val_from_train=10).setup("fit")
    other = TaggingDataModule(train_path=str(prepared), batch_size=8)
    smaller = from_file.spec.vocabularies.to_dict()
    smaller["words"]["items"] = smaller["words"]["items"][:-5]
    from seqtag.data.vocab import Vocabularies

    other.encode_with(Vocabularies.from_dict(smaller))  # a checkpoint's, say
    with pytest.raises(ConfigError, match="encoded with other vocabularies than the model's"):
        other.train_dataloader()


def test_items_with_ids_outside_the_vocabularies_are_refused(from_file, prepared):
    collate = PreparedBatches(str(prepared), from_file.spec.vocabularies)
    item = {
        "index": 0,
        "words": np.array([2, 10**6], dtype=np.int32),
        "tags": np.array([0, 1], dtype=np.int32),
        "chars": np.array([3, 4], dtype=np.int32),
        "char_offsets": np.array([0, 1, 2], dtype=np.int32),
        "allowed": np.zeros((0, 0), dtype=bool),
    }
    with pytest.raises(CorpusFormatError, match="its words hold ids outside the vocabularies"):
        collate([item])
    item["words"] = np.array([2, 3], dtype=np.int32)
    assert collate([item])["words"].tolist() == [[2, 3]]
    item["char_offsets"] = np.array([0, 2, 1], dtype=np.int32)
    with pytest.raises(CorpusFormatError, match="character offsets do not fit"):
        collate([item])
