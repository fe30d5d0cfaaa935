"""Prepared corpora: a training corpus encoded once with LitData, to stream from a folder or URL.

``seqtag prepare`` reads ``data.train_path`` with the data section's options, computes the
vocabularies exactly as a fresh ``seqtag fit`` would (:attr:`TaggingDataModule.spec`), encodes
every training sentence with them (:meth:`TaggingDataModule.encode`: seqtag's own
``encode_sentence`` and ``GoldEncoder``) and writes the encoded sentences with
:func:`litdata.optimize`, to a local folder or to an object store (``s3://bucket/prefix``).
Beside LitData's chunks and ``index.json`` it writes :data:`MANIFEST`, plain JSON and written
last (a folder without it is not a prepared corpus): the format version, the vocabularies'
``to_dict()``, the word counts, the data options that shaped the encoding, the SHA-256 of the
source file, of ``index.json`` and of every chunk, and the sentence and token totals.

A DataModule whose ``train_path`` is such a folder or URL takes its spec from the manifest (the
vectors, if any, are aligned to its words) and trains from a ``litdata.StreamingDataLoader``
(:mod:`seqtag.data.prepared_loader`): every process reads only its share, shuffled with
``data.seed``, and a checkpoint holds the loader's position so a resumed run continues at the
same batch. Everything read back is treated as untrusted: JSON only, types and ranges checked,
chunk files checked against the manifest, ids checked against the vocabularies; any problem is
one :class:`~seqtag.errors.CorpusFormatError` or :class:`~seqtag.errors.ConfigError` naming the
folder, never a corpus used silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seqtag.data.cache_files import fingerprint
from seqtag.data.counts import CorpusCounts
from seqtag.data.prepared_format import (
    FORMAT_VERSION,
    MANIFEST,
    SHAPING_OPTIONS,
    check_chunks,
    check_manifest,
    exists,
    is_url,
    join,
    litdata,
    read_text,
    url_filesystem,
    write_text,
)
from seqtag.data.spec import DataSpec
from seqtag.data.vocab import Vocabularies
from seqtag.errors import ConfigError, CorpusFormatError, OutputError
from seqtag.files.outputs import check_output_folder

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from seqtag.data.batching import EncodedSentence
    from seqtag.data.datamodule import TaggingDataModule

log = logging.getLogger(__name__)


def prepared_location(source: Any) -> str | None:
    """The location of the prepared corpus ``source`` names (a folder or a URL), else ``None``.

    A training split that is a directory can only be a prepared corpus (corpus files are files),
    and corpus files are never read from URLs: so neither needs opening to tell.
    """
    if not isinstance(source, str | os.PathLike):
        return None
    text = os.fspath(source)
    if is_url(text):
        return text.rstrip("/")
    text = text.removeprefix("file://")
    return text if os.path.isdir(text) else None


def is_prepared_training(source: Any, options: Mapping[str, Any]) -> bool:
    """Whether the training split is a prepared corpus, refusing options it cannot honour."""
    location = prepared_location(source)
    if location is None:
        return False
    if options.get("val_from_train"):
        raise ConfigError(
            f"data.val_from_train cannot hold sentences out of the prepared corpus {location}: "
            "set data.val_path to a dev file (or hold the sentences out before seqtag prepare)"
        )
    if options.get("max_batch_tokens") is not None:
        raise ConfigError(
            f"data.max_batch_tokens does not apply to the prepared corpus {location}, whose "
            "batches are data.batch_size sentences in LitData's order: remove it"
        )
    return True


# -- writing -------------------------------------------------------------------------------
def prepare_corpus(
    datamodule: TaggingDataModule,
    output: str,
    *,
    chunk_bytes: str = "64MB",
    num_workers: int = 1,
) -> dict[str, Any]:
    """Encode ``datamodule``'s training split into a new prepared corpus at ``output``.

    Refuses, before any work, an output that already holds a prepared corpus or any file (LitData
    would delete files of an existing folder), a training split that is not a corpus file, and
    ``val_from_train``. Returns the manifest written.
    """
    module = litdata()
    source = datamodule.paths["train"]
    if not isinstance(source, str | os.PathLike) or not os.path.isfile(source):
        raise ConfigError(
            f"seqtag prepare reads a corpus file (data.train_path), got {source!r}: a folder "
            "or sentences in memory cannot be prepared"
        )
    if datamodule.hparams.val_from_train:
        raise ConfigError(
            "seqtag prepare writes every training sentence, so data.val_from_train cannot hold "
            "some out: set data.val_path to a dev file instead"
        )
    refuse_existing_output(output)
    spec = datamodule.spec
    encoded = datamodule.encode("train")
    items = [sentence_item(sentence) for sentence in encoded]
    blocks = [items[start : start + 1024] for start in range(0, len(items), 1024)]
    module.optimize(
        yield_items,
        blocks,
        output,
        chunk_bytes=chunk_bytes,
        num_workers=num_workers,
        keep_data_ordered=True,
        reorder_files=False,
        verbose=False,
    )
    index_text = read_text(join(output, "index.json"))
    index = json.loads(index_text)
    chunks = [
        {
            "filename": chunk["filename"],
            "bytes": int(chunk["chunk_bytes"]),
            "sha256": None
            if is_url(output)
            else fingerprint(Path(join(output, chunk["filename"]))),
        }
        for chunk in index["chunks"]
    ]
    options = datamodule.hparams
    manifest = {
        "format": "seqtag-prepared",
        "format_version": FORMAT_VERSION,
        "source": {
            "path": os.path.abspath(source),
            "sha256": fingerprint(Path(source)),
            "bytes": os.path.getsize(source),
        },
        "options": {
            **{key: options[key] for key in SHAPING_OPTIONS},
            "vectors": options["vectors"],
        },
        "vocabularies": spec.vocabularies.to_dict(),
        "word_counts": [int(count) for count in spec.word_counts],
        "counts": datamodule.train_counts.to_dict(),
        "sentences": len(encoded),
        "tokens": int(sum(len(sentence.words) for sentence in encoded)),
        "index_sha256": hashlib.sha256(index_text.encode("utf-8")).hexdigest(),
        "chunks": chunks,
    }
    write_text(join(output, MANIFEST), json.dumps(manifest, indent=1) + "\n")
    return manifest


def sentence_item(sentence: EncodedSentence) -> dict[str, Any]:
    """One encoded sentence as LitData stores it: numpy arrays of the same kinds every time.

    Characters are one flat array and the offsets of each token's characters; ``allowed`` is
    ``[0, 0]`` for a sentence without unknown tags.
    """
    chars = sentence.chars or []
    offsets = np.zeros(len(chars) + 1 if chars else 0, dtype=np.int32)
    if chars:
        np.cumsum([len(word) for word in chars], out=offsets[1:])
    flat = np.concatenate(chars).astype(np.int32) if chars else np.zeros(0, dtype=np.int32)
    allowed = sentence.allowed if sentence.allowed is not None else np.zeros((0, 0), dtype=bool)
    return {
        "index": int(sentence.index),
        "words": np.asarray(sentence.words, dtype=np.int32),
        "tags": np.asarray(sentence.tags, dtype=np.int32),
        "chars": flat,
        "char_offsets": offsets,
        "allowed": np.asarray(allowed, dtype=bool),
    }


def yield_items(block: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """LitData's function: each input is a block of sentences, each output one sentence."""
    yield from block


def refuse_existing_output(output: str) -> None:
    """Refuse an output that holds a prepared corpus or any file; never write over anything."""
    if is_url(output):
        fs, path = url_filesystem(output)
        found = fs.exists(path) and bool(fs.ls(path))
    else:
        check_output_folder(output)
        target = Path(output)
        if target.exists() and not target.is_dir():
            raise OutputError(f"{output}: is a file; seqtag prepare writes a new folder")
        found = target.is_dir() and any(target.iterdir())
    if found:
        what = "a prepared corpus" if exists(join(output, MANIFEST)) else "files"
        raise OutputError(
            f"{output} already holds {what}: seqtag prepare writes only into a new or empty "
            "folder, never over earlier files"
        )


# -- reading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedCorpus:
    """A prepared corpus's checked manifest.

    Attributes:
        location: the folder or URL.
        manifest: the manifest as read (plain JSON data, checked).
        vocabularies: the vocabularies the sentences were encoded with.
        word_counts: the training frequency of every word id.
        counts: the training corpus's counts, which the vocabularies were made from.
    """

    location: str
    manifest: dict[str, Any]
    vocabularies: Vocabularies
    word_counts: np.ndarray
    counts: CorpusCounts

    def error(self, message: str) -> CorpusFormatError:
        """A one-line error naming the corpus."""
        return CorpusFormatError(self.location, None, message)

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse data options that contradict those the corpus was prepared with."""
        stored = self.manifest["options"]
        for key in SHAPING_OPTIONS:
            if options.get(key) is not None and options[key] != stored[key]:
                raise ConfigError(
                    f"data.{key} is {options[key]!r}, but {self.location} was prepared with "
                    f"{stored[key]!r}: set it to {stored[key]!r}, or prepare the corpus again"
                )
        if bool(options.get("vectors")) != bool(stored["vectors"]):
            had = "with" if stored["vectors"] else "without"
            raise ConfigError(
                f"{self.location} was prepared {had} pretrained vectors (data.vectors), whose "
                "words are in its vocabulary: train with the same data.vectors, or prepare the "
                "corpus again"
            )

    def spec(
        self,
        other_words: Iterable[str],
        options: Mapping[str, Any],
        *,
        corpus_scheme: str | None,
        train_scheme: str | None,
    ) -> DataSpec:
        """The spec a new model is built from, made as ``seqtag fit`` makes it from a corpus
        file (:func:`~seqtag.data.spec.spec_from_counts` on the manifest's counts, the other
        splits' words and the vectors), and refused unless its vocabularies are the ones the
        sentences were encoded with."""
        from seqtag.data.spec import spec_from_counts

        self.check_options(options)
        spec = spec_from_counts(
            self.counts,
            other_words,
            options,
            corpus_scheme=corpus_scheme,
            train_scheme=train_scheme,
        )
        ours, theirs = self.vocabularies.to_dict(), spec.vocabularies.to_dict()
        if ours != theirs or not np.array_equal(spec.word_counts, self.word_counts):
            differ = ", ".join(key for key in ours if ours[key] != theirs[key]) or "word counts"
            raise ConfigError(
                f"{self.location} was encoded with other vocabularies ({differ}) than this "
                "run's data options and files give: train with the options and the dev, test "
                "and vector files it was prepared with, or prepare it again"
            )
        return spec

    def check_model_vocabularies(self, vocabularies: Vocabularies) -> None:
        """Refuse a model (a checkpoint resumed or fine-tuned) whose vocabularies are not the
        ones the corpus was encoded with: its ids would mean other words and tags."""
        ours = self.vocabularies.to_dict()
        theirs = vocabularies.to_dict()
        if theirs["chars"] is None:  # a model without character features drops them
            ours["chars"] = None
        if ours != theirs:
            differ = ", ".join(key for key in ours if ours[key] != theirs.get(key))
            raise ConfigError(
                f"{self.location} was encoded with other vocabularies than the model's "
                f"({differ} differ): a prepared corpus trains the model built from it; "
                "resume that run, or train from the corpus file"
            )


def prepared_spec(
    location: str,
    other_words: Iterable[str],
    options: Mapping[str, Any],
    corpus_scheme: str | None,
    train_scheme: str | None,
) -> DataSpec:
    """The spec of the prepared corpus at ``location`` (see :meth:`PreparedCorpus.spec`)."""
    corpus = open_prepared(location)
    return corpus.spec(other_words, options, corpus_scheme=corpus_scheme, train_scheme=train_scheme)


def prepared_loader(
    location: str, vocabularies: Vocabularies, options: Mapping[str, Any]
) -> DataLoader:
    """The training loader of the prepared corpus at ``location``, for a model with
    ``vocabularies`` (see :func:`seqtag.data.prepared_loader.streaming_loader`)."""
    from seqtag.data.prepared_loader import streaming_loader

    corpus = open_prepared(location)
    corpus.check_options(options)
    corpus.check_model_vocabularies(vocabularies)
    check_chunks(corpus.location, corpus.manifest)
    return streaming_loader(corpus.location, vocabularies, options)


def open_prepared(location: str) -> PreparedCorpus:
    """Read and check the manifest of the prepared corpus at ``location``."""
    path = join(location, MANIFEST)
    if not exists(path):
        raise CorpusFormatError(
            location,
            None,
            f"no {MANIFEST}: not a prepared corpus, or seqtag prepare did not finish (prepare "
            "it again into an empty folder)",
        )
    try:
        manifest = json.loads(read_text(path))
    except (ValueError, UnicodeDecodeError) as err:
        raise CorpusFormatError(location, None, f"{MANIFEST} is not JSON ({err})") from None
    vocabularies, word_counts, counts = check_manifest(location, manifest)
    return PreparedCorpus(location, manifest, vocabularies, word_counts, counts)
