"""TaggingDataModule: corpus files (or sentences in memory) in, length-bucketed padded batches out.

The DataModule reads the splits and, for a model trained from scratch, produces its
:class:`~seqtag.data.spec.DataSpec` (:attr:`TaggingDataModule.spec`): vocabularies from the
training split and the pretrained vectors aligned to them. The build runs one way: the model is
built from the spec and never writes into the DataModule. Once the trainer's model has
vocabularies (it was trained, or restored from a checkpoint), they are the truth about how text
becomes ids: the loaders encode with them, settings the DataModule leaves unset follow them,
and a setting that contradicts them is an error rather than a silent change of results.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Literal

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from seqtag.data.batching import EncodedDataset, EncodedSentence
from seqtag.data.counts import CorpusCounter, CorpusCounts
from seqtag.data.io.formats import CorpusFormat, Sentence
from seqtag.data.io.memory import InMemorySplit, check_split, is_in_memory
from seqtag.data.mapped import MappedCorpus
from seqtag.data.partial import check_missing_tag, encode_split
from seqtag.data.prepared import (
    is_prepared_training,
    prepared_loader,
    prepared_location,
    prepared_spec,
)
from seqtag.data.sampling import bucketed_loader
from seqtag.data.schemes import normalize_scheme
from seqtag.data.spec import DataSpec, check_agreement, spec_from_counts
from seqtag.data.splits import hold_out, is_given, read_split, sentence_reader, source_name
from seqtag.data.streaming import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PREDICT_MAX_TOKENS,
    PredictionStream,
)
from seqtag.data.training_cache import TrainingCache
from seqtag.data.vocab import Vocabularies
from seqtag.errors import ConfigError
from seqtag.options import NonNegativeInt, PositiveInt, check_ranges

Split = Literal["train", "val", "test", "predict"]
SchemeName = Literal["iob1", "iob2", "bio", "bioes", "iobes"]


class TaggingDataModule(pl.LightningDataModule):
    """Reads tagged corpora and serves padded, length-bucketed batches.

    Each split is a file or, from Python, sentences held in memory (``(tokens, tags)`` pairs,
    dicts, a ``datasets.Dataset``, a ``DataFrame``: :mod:`seqtag.data.io.memory`), checked as
    files are; the hyper-parameters (and so checkpoints) hold ``None`` for those.

    Args:
        train_path: training corpus (plain or ``.gz``), or its sentences.
        val_path: development corpus, used for model selection, or its sentences.
        test_path: test corpus, or its sentences.
        predict_path: text to tag (``-``: standard input), or its sentences (also plain token
            lists); its gold tags, if any, are ignored.
        format: ``conllu``, ``columns`` (CoNLL-2000/2002/2003 whitespace columns), ``text``
            (one sentence per line, tokens separated by spaces) or ``jsonl`` (one object with a
            ``tokens`` list per line); the last two for prediction input only.
        predict_format: format of ``predict_path`` when it differs from ``format``.
        tag_field: which CoNLL-U column holds the tags.
        token_column: column of the token in ``columns`` files (negative counts from the end).
        tag_column: column of the tag in ``columns`` files.
        tag_scheme: chunk/entity scheme of the corpus (``iob1``, ``iob2``/``bio``,
            ``bioes``/``iobes``); leave unset for POS tags. Span tasks are scored with span F1.
        train_scheme: scheme to train in (default: the corpus scheme); predictions are
            converted back to the corpus scheme for scoring and output. With a trained model
            both schemes follow its checkpoint; leave them unset or repeat them.
        batch_size: sentences per training batch (>= 1).
        eval_batch_size: sentences per validation, test and prediction batch (>= 1).
        max_batch_tokens: at most this many padded tokens (sentences x longest sentence) per
            training batch; sentences too long for a full batch are batched apart, in smaller
            batches. Bounds the memory of a step on corpora with document-length "sentences".
            Unset (no bound) or >= 1.
        num_workers: DataLoader worker processes (>= 0; 0 loads in the main process).
        min_freq: training words seen fewer times are unknown, unless they have a vector
            (>= 1).
        lowercase: lowercase words before lookup (characters keep their case); default
            false, or the checkpoint's.
        unknown_shapes: unknown words get one of several unknown entries by their shape
            (capitalised, all digits, punctuation, hyphenated, ...) instead of one for all;
            on EWT UPOS this lifted accuracy on unknown words markedly (benchmarks/README.md).
            Default true, or the checkpoint's.
        vectors: pretrained word vectors read with gensim.
        vectors_format: ``auto`` or a format of :func:`seqtag.data.vectors.embeddings.load_vectors`.
        vectors_cache: parse the vector file once and load it from seqtag's cache afterwards
            (see :mod:`seqtag.data.vectors.cache`; ``SEQTAG_CACHE_DIR`` says where).
        vectors_top_k: also add the ``k`` most frequent words of the vector table to the
            vocabulary, so text unseen in every split still finds vectors at prediction time
            (>= 0; 0 adds none).
        max_word_length: characters per word kept for character features (>= 1); default
            30, or the checkpoint's.
        seed: seed of the batch shuffling (the same on every process; >= 0).
        pool_size: batches per sorting pool of the length bucketing (>= 1).
        val_from_train: hold out the last ``n`` training sentences as the validation split,
            for corpora without a development file (CoNLL-2000); ``val_path`` must be unset
            (>= 0; 0 holds out none).
        predict_chunk_size: sentences of ``predict_path`` read, tagged and written at a time;
            sets prediction's peak memory (not the input's size) and the unit a resumed
            prediction continues from (>= 1).
        predict_max_tokens: at most this many padded tokens (sentences x longest) per
            prediction batch: bounds the memory of batches of long sentences. Unset (no
            bound) or >= 1.
        missing_tag: the tag that means "tag unknown" (partially annotated data; ``-`` is also
            common), or null for none (then ``_`` is an ordinary tag of column files). It
            never becomes a tag; its tokens train with every tag consistent with the known
            ones (see :mod:`seqtag.data.partial`) and are skipped, and counted, by the
            metrics; training sentences without a known tag are left out, and said so.
        token_key: the field of the tokens in sentences given as dicts (a ``datasets`` or
            DataFrame column).
        tag_key: the field of the tags there (``ner_tags``, ``pos_tags``, ...); a
            ``datasets`` column of class ids is read as its class names.
        corpus_cache: keep the training file counted and encoded in seqtag's cache
            (``SEQTAG_CACHE_DIR``) and train from its arrays on disk: memory flat in the
            corpus's size, one copy per machine for DDP processes, and a start-up that does
            not read the corpus again (see :mod:`seqtag.data.corpus_cache`). Same batches and
            results as without it; the other splits are read as usual.
    """

    def __init__(
        self,
        train_path: str | InMemorySplit | None = None,
        val_path: str | InMemorySplit | None = None,
        test_path: str | InMemorySplit | None = None,
        predict_path: str | InMemorySplit | None = None,
        format: CorpusFormat = "conllu",
        predict_format: CorpusFormat | None = None,
        tag_field: Literal["upos", "xpos"] = "upos",
        token_column: int = 0,
        tag_column: int = -1,
        tag_scheme: SchemeName | None = None,
        train_scheme: SchemeName | None = None,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt = 256,
        max_batch_tokens: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
        min_freq: PositiveInt = 1,
        lowercase: bool | None = None,
        unknown_shapes: bool | None = None,
        vectors: str | None = None,
        vectors_format: str = "auto",
        vectors_cache: bool = True,
        vectors_top_k: NonNegativeInt = 0,
        max_word_length: PositiveInt | None = None,
        seed: NonNegativeInt = 42,
        pool_size: PositiveInt = 100,
        val_from_train: NonNegativeInt = 0,
        predict_chunk_size: PositiveInt = DEFAULT_CHUNK_SIZE,
        predict_max_tokens: PositiveInt | None = DEFAULT_PREDICT_MAX_TOKENS,
        missing_tag: str | None = "_",
        token_key: str = "tokens",
        tag_key: str = "tags",
        corpus_cache: bool = False,
    ) -> None:
        check_ranges("data", TaggingDataModule.__init__, locals())
        check_missing_tag(missing_tag)
        super().__init__()
        #: Each split's path or sentences in memory (``None``: no such split).
        self.paths: dict[Split, str | InMemorySplit | None] = {
            "train": train_path,
            "val": val_path,
            "test": test_path,
            "predict": predict_path,
        }
        for split, source in self.paths.items():
            check_split(split, source)
        # Sentences are data, not settings: the hyper-parameters (saved from this frame's
        # arguments into checkpoints and logs) get None for them.
        train_path, val_path, test_path, predict_path = (
            None if is_in_memory(source) else source for source in self.paths.values()
        )
        self.save_hyperparameters()
        self.missing_tag = missing_tag
        self.corpus_scheme = normalize_scheme(tag_scheme) if tag_scheme else None
        self.train_scheme = normalize_scheme(train_scheme) if train_scheme else None
        if self.train_scheme and not self.corpus_scheme:
            raise ConfigError(
                "data.train_scheme needs data.tag_scheme, the scheme of the corpus files"
            )
        if val_from_train and is_given(self.paths["val"]):
            raise ConfigError("set either data.val_path or data.val_from_train, not both")
        self._sentences: dict[Split, list[Sentence]] = {}
        self._given_vocabularies: Vocabularies | None = None
        self._training_cache = TrainingCache(self.paths["train"], self.hparams, missing_tag)
        self._chunks_written: Callable[[], int] = int  # int() is 0; a lambda would not pickle

    # -- what others say ---------------------------------------------------------------------
    def resume_prediction(self, chunks_written: Callable[[], int]) -> None:
        """Skip, in this process, the predict input's chunks an interrupted run already wrote.

        The output's writer owns that count (:class:`~seqtag.PredictionWriter` hands it over in
        its ``setup`` hook). It is asked for when the first chunk is read, not now: the writer
        can check the earlier run's record against this run only once the model is loaded.
        """
        self._chunks_written = chunks_written

    def encode_with(self, vocabularies: Vocabularies) -> None:
        """Encode every split with a trained model's vocabularies from now on.

        The model owns them and tells the DataModule: a :class:`~seqtag.SequenceTagger` calls
        this when a trainer takes it, and again when a checkpoint replaces its vocabularies,
        so a trainer's batches are always encoded as its model reads them. A loop of your own
        (or ``seqtag calibrate``) has no trainer: give it ``model.vocabularies`` here.
        """
        if not isinstance(vocabularies, Vocabularies):
            raise ConfigError(
                f"encode_with takes a trained model's vocabularies (model.vocabularies), got "
                f"{type(vocabularies).__name__}"
            )
        self._given_vocabularies = vocabularies

    def _vocabularies(self, split: Split) -> Vocabularies:
        """How text is encoded: the model's vocabularies, else those of the spec."""
        vocab = self._given_vocabularies
        if vocab is not None:
            hp = self.hparams
            check_agreement(
                vocab,
                tag_scheme=self.corpus_scheme,
                train_scheme=self.train_scheme,
                lowercase=hp.lowercase,
                unknown_shapes=hp.unknown_shapes,
                max_word_length=hp.max_word_length,
            )
            return vocab
        if is_given(self.paths["train"]):
            return self.spec.vocabularies  # what a model built from this data will use
        raise ConfigError(
            "there is no trained model to encode the text with: train one first, or evaluate "
            "with a checkpoint (--ckpt_path, SequenceTagger.load_from_checkpoint)"
        )

    def _schemes(self) -> tuple[str | None, str | None]:
        """(corpus scheme, training scheme): the model's when it has them, else the settings."""
        vocab = self._given_vocabularies
        if vocab is not None:
            return vocab.corpus_scheme, vocab.tag_scheme
        return self.corpus_scheme, self.train_scheme or self.corpus_scheme

    # -- reading ---------------------------------------------------------------------------
    def sentences(self, split: Split) -> list[Sentence]:
        """The sentences of a split, read once."""
        held_out = self.hparams.val_from_train
        if held_out and split == "val" and self._training_cache.active:
            self.train_counts  # noqa: B018 (the cache keeps the held-out sentences with them)
        if held_out and split in ("train", "val") and split not in self._sentences:
            train = self._read("train")
            name = source_name("train", self.paths["train"])
            self._sentences["train"], self._sentences["val"] = hold_out(train, held_out, name)
        return self._read(split)

    def _read(self, split: Split) -> list[Sentence]:
        if split not in self._sentences:
            source = self.paths[split]
            if not is_given(source):
                raise ConfigError(f"no {split} file: set data.{split}_path")
            corpus_scheme, _ = self._schemes()
            self._sentences[split] = read_split(
                split, source, self.hparams, corpus_scheme, self.missing_tag
            )
        return self._sentences[split]

    # -- the spec --------------------------------------------------------------------------
    @cached_property
    def spec(self) -> DataSpec:
        """What a new model needs from this data, computed on first use.

        Reads the training split (and, for the vectors, the words of every configured split)
        and the vector file; see :func:`~seqtag.data.spec.spec_from_counts`.
        """
        train_scheme = self.train_scheme or self.corpus_scheme
        other_words = (
            token
            for split in ("val", "test", "predict")
            if is_given(self.paths[split]) and self.hparams.vectors
            for sentence in self.sentences(split)
            for token in sentence.tokens
        )
        if (prepared := prepared_location(self.paths["train"])) is not None:  # seqtag prepare
            return prepared_spec(
                prepared, other_words, self.hparams, self.corpus_scheme, train_scheme
            )
        return spec_from_counts(
            self.train_counts,
            other_words,
            self.hparams,
            corpus_scheme=self.corpus_scheme,
            train_scheme=train_scheme,
        )

    @cached_property
    def train_counts(self) -> CorpusCounts:
        """The training split's counts, which the spec is made from (and ``seqtag prepare``
        stores): from the corpus cache, or counted once (see :mod:`seqtag.data.counts`)."""
        train_scheme = self.train_scheme or self.corpus_scheme
        cached = self._training_cache.counts(self.corpus_scheme, train_scheme)
        if cached is not None:  # (counts, the held-out sentences)
            if self.hparams.val_from_train:
                self._sentences.setdefault("val", cached[1])
            return cached[0]
        counter = CorpusCounter(self.corpus_scheme, train_scheme, self.missing_tag)
        for sentence in self.sentences("train"):
            counter.add(sentence)
        return counter.counts()

    @property
    def has_dev_data(self) -> bool:
        """Whether there is a validation split (a file, or sentences held out of training):
        validation, checkpoint selection and temperature calibration all ask this."""
        return is_given(self.paths["val"]) or bool(self.hparams.val_from_train)

    def prepare_data(self) -> None:
        """With ``corpus_cache``, encode the training file into the cache (Lightning runs this
        on one process per machine, before the others open the arrays in :meth:`setup`)."""
        self._mapped_train()

    def setup(self, stage: str) -> None:
        if stage == "fit":
            if not is_prepared_training(self.paths["train"], self.hparams):  # read by litdata
                self._training_split()
            if self.has_dev_data:
                self.sentences("val")

    def _training_split(self) -> None:
        """Load the training split: from the corpus cache's arrays, else into memory."""
        if self._mapped_train() is None:
            self.sentences("train")

    # -- encoding and loaders ---------------------------------------------------------------
    def encode(self, split: Split) -> list[EncodedSentence]:
        """A split's sentences as ids; gold tags unseen in training become ``UNSEEN_TARGET``,
        and sentences with unknown ones get their allowed tags (see :class:`GoldEncoder`)."""
        return encode_split(
            self._vocabularies(split),
            self.sentences(split),
            self.missing_tag,
            source_name(split, self.paths[split]),
            with_tags=split != "predict",
            training=split == "train",
        )

    def _mapped_train(self) -> MappedCorpus | None:
        """The training sentences from the corpus cache's arrays (encoded with the
        vocabularies of the moment), or ``None`` when the cache does not serve."""
        if not self._training_cache.active or not is_given(self.paths["train"]):
            return None
        vocab = self._vocabularies("train")
        return self._training_cache.mapped(vocab, *self._schemes())

    def _loader(self, split: Split, training: bool) -> DataLoader:
        if training and (prepared := prepared_location(self.paths["train"])) is not None:
            return prepared_loader(prepared, self._vocabularies("train"), self.hparams)
        dataset = self._mapped_train() if split == "train" else None
        if dataset is None:
            dataset = EncodedDataset(self.encode(split))
        hp = self.hparams
        return bucketed_loader(
            dataset,
            split,
            batch_size=hp.batch_size if training else hp.eval_batch_size,
            training=training,
            seed=hp.seed,
            pool_size=hp.pool_size,
            max_tokens=hp.max_batch_tokens if training else None,
            num_workers=hp.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", training=True)

    def val_dataloader(self) -> DataLoader:
        if not self.has_dev_data:
            return []
        return self._loader("val", training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", training=False)

    def predict_dataloader(self) -> DataLoader:
        """The text to tag, read lazily chunk by chunk (see :mod:`seqtag.data.streaming`)."""
        hp = self.hparams
        source = self.paths["predict"]
        if not is_given(self.paths["predict"]):
            raise ConfigError("no predict file: set data.predict_path (- reads standard input)")
        stream = PredictionStream(
            sentence_reader(source, hp),
            self._vocabularies("predict"),
            batch_size=hp.eval_batch_size,
            chunk_size=hp.predict_chunk_size,
            skip_chunks=self._chunks_written,
            max_tokens=hp.predict_max_tokens,
        )
        return stream.loader()
